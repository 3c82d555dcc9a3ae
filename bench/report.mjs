// Turns bench/run.sh's JSON lines into the Markdown report of
// docs/benchmarks.md, with Kiln's ratio to each peer from the same run.
import { readFileSync } from 'node:fs';
import os from 'node:os';

const rows = readFileSync(process.argv[2], 'utf8').trim().split('\n').map((l) => JSON.parse(l));
const find = (label, clients, mode = 'cycle') =>
  rows.find((r) => r.label === label && r.clients === clients && r.mode === mode);
const fmt = (n) => Math.round(n).toLocaleString('en-US');
const cell = (r) => (r ? `${fmt(r.msgs_per_sec)} msg/s (p50 ${fmt(r.p50_us)} µs, p99 ${fmt(r.p99_us)} µs)` : 'n/a');
const ratio = (a, b) => (a && b && b.msgs_per_sec > 0 ? (a.msgs_per_sec / b.msgs_per_sec).toFixed(2) + 'x' : 'n/a');

const out = [];
out.push(`Run on ${new Date().toISOString().slice(0, 16)}Z, ${os.cpus().length} cores (${os.cpus()[0].model}), ` +
  `${Math.round(os.totalmem() / 2 ** 30)} GiB. Latency is of one whole cycle.`, '');

function compare(title, kiln, peers) {
  out.push(`### ${title}`, '');
  out.push('| clients | ' + [kiln, ...peers].join(' | ') + ' | ' + peers.map((p) => `kiln / ${p}`).join(' | ') + ' |');
  out.push('|---|' + [kiln, ...peers].map(() => '---').join('|') + '|' + peers.map(() => '---').join('|') + '|');
  for (const c of [1, 8]) {
    const k = find(kiln, c);
    out.push(`| ${c} | ` + [k, ...peers.map((p) => find(p, c))].map(cell).join(' | ') + ' | ' +
      peers.map((p) => ratio(k, find(p, c))).join(' | ') + ' |');
  }
  out.push('');
}

compare('Queue cycle, durable (post + reserve + delete of one 100-byte message per request)',
  'kiln-durable', ['beanstalkd-f0', 'redis-always', 'postgres-skip-locked']);

out.push('### Batched, durable (100 messages per request)', '');
out.push('| run | clients | throughput |', '|---|---|---|');
for (const c of [1, 8]) out.push(`| post 100 + reserve n=100 + delete 100 | ${c} | ${cell(find('kiln-batch', c, 'batch-cycle'))} |`);
out.push(`| post 100 per request | 8 | ${cell(find('kiln-batch-post', 8, 'batch-post'))} |`, '');

compare('Queue cycle, fsync on an interval (Kiln `--fsync interval:50ms`, beanstalkd `-f 50`, Redis `everysec`)',
  'kiln-interval50', ['beanstalkd-f50', 'redis-everysec']);

const row = (label) => rows.find((r) => r.label === label);
const pushRows = rows.filter((r) => r.label?.startsWith('push-'));
if (pushRows.length) {
  // The sink's ceiling, measured before and after the push runs (older
  // results: once, after them).
  const [before, after, once] = ['sink-wrk-before', 'sink-wrk-after', 'sink-wrk'].map((l) => row(l)?.requests_per_sec);
  const ceiling = before && after ? (before + after) / 2 : (once ?? 0);
  const measured = before && after ? ` (${fmt(before)} before, ${fmt(after)} after the push runs; their mean)` : '';
  out.push('### Push delivery to a local HTTP sink (keep-alive)', '');
  out.push(`The sink's own ceiling, measured by \`wrk -t1 -c32\` in the same run${measured}: ${fmt(ceiling)} requests/s.`, '');
  out.push('| run | subscribers | messages per post | deliveries/s | post → delivery p50 | p99 | share of the sink ceiling |', '|---|---|---|---|---|---|---|');
  const runs = { 'push-max-1': ['as fast as it goes', 1, 100], 'push-max-1-b10': ['as fast as it goes', 1, 10],
    'push-max-16': ['as fast as it goes', 16, 10], 'push-paced-1': ['paced (7,000 msgs/s)', 1, 10],
    'push-paced-16': ['paced (375 msgs/s)', 16, 1] };
  for (const r of pushRows) {
    const [name, subs, batch] = runs[r.label] ?? [r.label, '?', '?'];
    const share = r.label.includes('paced') || !ceiling ? '–' : (r.msgs_per_sec / ceiling * 100).toFixed(0) + '%';
    out.push(`| ${name} | ${subs} | ${batch} | ${fmt(r.msgs_per_sec)} | ${fmt(r.p50_us)} µs | ${fmt(r.p99_us)} µs | ${share} |`);
  }
  out.push('', 'Runs "as fast as it goes" post faster than Kiln delivers, so their latency is mostly the backlog; the paced runs post at a steady rate well below that and show the latency of a delivery. Kiln\'s work per delivery includes accepting the post that carries it, so with one subscriber the size of the posts shows: each post request costs an fdatasync and a round trip, shared by its messages.', '');
}

if (row('tasks-latency')) {
  const [kl, rl, kt, rt] = ['tasks-latency', 'runc-latency', 'tasks-throughput', 'runc-throughput'].map(row);
  const ms = (x) => `${x.toFixed(1)} ms`;
  out.push('### Tasks: a busybox `true` task, each in a fresh container', '');
  out.push('| run | Kiln | bare runc | Kiln / runc |', '|---|---|---|---|');
  out.push(`| POST → complete, one at a time (${kl.runs} tasks), p50 | ${ms(kl.p50_ms)} | ${ms(rl.p50_ms)} | ${(kl.p50_ms / rl.p50_ms).toFixed(2)}x |`);
  out.push(`| same, p99 | ${ms(kl.p99_ms)} | ${ms(rl.p99_ms)} | ${(kl.p99_ms / rl.p99_ms).toFixed(2)}x |`);
  out.push(`| ${fmt(kt.tasks)} tasks at once (runc: a 4-way parallel loop), tasks/s | ${kt.tasks_per_sec.toFixed(1)} | ${rt.tasks_per_sec.toFixed(1)} | ${(kt.tasks_per_sec / rt.tasks_per_sec).toFixed(2)}x |`, '');
  out.push('Kiln and bare runc take turns: latency task by task, throughput in rounds of ' +
           `${fmt(kt.tasks / (kt.round_ratios?.length || 1))} (K R R K ...)` +
           (kt.round_ratios ? `; Kiln / runc by round: ${kt.round_ratios.map((r) => r.toFixed(2) + 'x').join(', ')}.` : '.'), '');
}

const fill = rows.find((r) => r.label === 'fill');
if (fill) {
  const perMsg = (a, b) => ((a - b) / fill.queued).toFixed(0);
  out.push(`### ${fmt(fill.queued)} queued messages (100-byte bodies)`, '');
  out.push('| measure | value |', '|---|---|');
  out.push(`| RSS growth per queued message while posting | ${perMsg(fill.rss_full, fill.rss_empty)} bytes |`);
  out.push(`| RSS per queued message after a restart (index rebuilt) | ${perMsg(fill.rss_restarted, fill.rss_empty_restarted)} bytes |`);
  out.push(`| recovery (rebuild of the index, from the server's log) | ${fill.recover_ms ?? 'n/a'} ms |`);
  out.push(`| restart until the port answers | ${fill.restart_ms} ms |`, '');
}
console.log(out.join('\n'));
