// Task benchmarks (issue #4): POST /tasks → complete for a busybox `true`
// task, one at a time, and 1,000 tiny tasks at once; beside a bare
// `runc run` of the same image, one at a time and in a 4-way parallel loop,
// the two taking turns.
// Usage: node bench/tasks.mjs BASE_URL PROJECT TOKEN WORK_DIR [LATENCY_N] [THROUGHPUT_N]
// Prints one JSON line per run.
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const [base, project, token, work, latN = '200', thrN = '1000'] = process.argv.slice(2);
const headers = { authorization: `OAuth ${token}`, 'content-type': 'application/json' };
const api = async (method, path, body) => {
  const r = await fetch(`${base}/2/projects/${project}${path}`, { method, headers, body: body && JSON.stringify(body) });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`${method} ${path}: ${r.status} ${text}`);
  return JSON.parse(text);
};
const pct = (xs, p) => { const s = [...xs].sort((a, b) => a - b); return s[Math.min(s.length - 1, Math.floor(p * s.length))]; };
const nowMs = () => Number(process.hrtime.bigint()) / 1e6;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// The code: multipart as the clients send it.
const B = 'kilnbenchboundary';
await fetch(`${base}/2/projects/${project}/codes`, {
  method: 'POST', headers: { authorization: `OAuth ${token}`, 'content-type': `multipart/form-data; boundary=${B}` },
  body: `--${B}\r\nContent-Disposition: form-data; name="data"\r\n\r\n${JSON.stringify({ name: 'bench-true', image: 'busybox', command: 'true' })}\r\n--${B}--`,
});
const code = (await api('GET', '/codes')).codes.find((c) => c.name === 'bench-true');

// GET ?wait=30 (a Kiln extension) answers when the task ends: no polling
// load on the two cores while the container runs.
async function waitFinal(id) {
  for (;;) {
    const t = await api('GET', `/tasks/${id}?wait=30`);
    if (!['queued', 'preparing', 'running'].includes(t.status)) return t;
  }
}

// One Kiln task, POST to complete.
async function kilnTask() {
  const id = (await api('POST', '/tasks', { tasks: [{ code_name: 'bench-true' }] })).tasks[0].id;
  const t = await waitFinal(id);
  if (t.status !== 'complete') throw new Error(`task ${id}: ${t.status} ${t.msg}`);
}
// Bare runc with a bundle of the same image: the root filesystem read-only,
// no overlay, no cgroup limits, no log capture. The image is unpacked by
// the first Kiln task, which (with one bare run) also warms both up.
let completed = 0;
await kilnTask();
completed++;
const images = join(work, 'kiln', 'data', 'images', 'images');
const rootfs = readdirSync(images).map((d) => join(images, d, 'rootfs')).find((p) => existsSync(join(p, 'bin', 'busybox')));
const bundle = join(work, 'runc-bundle');
mkdirSync(bundle, { recursive: true });
await new Promise((res, rej) => spawn('runc', ['spec'], { cwd: bundle, stdio: 'ignore' }).on('exit', (c) => (c ? rej(new Error('runc spec')) : res())));
const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8'));
spec.process.terminal = false;
spec.process.args = ['true'];
spec.root = { path: rootfs, readonly: true };
writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
let n = 0;
const runc = () => new Promise((res, rej) => {
  const id = `kiln-bench-${process.pid}-${n++}`;
  spawn('runc', ['--root', join(work, 'runc-state'), 'run', '--bundle', bundle, id], { stdio: 'ignore' })
    .on('exit', (c) => (c === 0 ? res() : rej(new Error(`runc run exit ${c}`))));
});
await runc();

// Kiln and bare runc take turns, so that both see the same moments of this
// shared machine (whose speed drifts by 10-20% within minutes): latency
// alternates task by task, which one goes first swapping each time; the
// throughput runs go in rounds, K R R K K R R K.
const timed = async (fn) => { const t0 = nowMs(); await fn(); return nowMs() - t0; };
const lat = [], rl = [];
for (let i = 0; i < Number(latN); i++) {
  if (i % 2 === 0) { lat.push(await timed(kilnTask)); rl.push(await timed(runc)); }
  else { rl.push(await timed(runc)); lat.push(await timed(kilnTask)); }
}
completed += lat.length;
console.log(JSON.stringify({ label: 'tasks-latency', runs: lat.length, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99) }));
console.log(JSON.stringify({ label: 'runc-latency', runs: rl.length, p50_ms: pct(rl, 0.5), p99_ms: pct(rl, 0.99) }));

// Kiln: the round's tasks at once (batches of 100), until every one is
// complete. The last one queued starts last: wait for it without polling,
// then for the few still running beside it.
async function kilnRound(count) {
  let last;
  for (let i = 0; i < count; i += 100)
    last = (await api('POST', '/tasks', { tasks: Array.from({ length: Math.min(100, count - i) }, () => ({ code_name: 'bench-true' })) })).tasks.at(-1).id;
  await waitFinal(last);
  completed += count;
  for (;;) {
    const st = await api('GET', `/codes/${code.id}/stats`);
    if (st.queued + st.preparing + st.running === 0) {
      if (st.complete < completed) throw new Error(`not all complete: ${JSON.stringify(st)}`);
      return;
    }
    await sleep(20);
  }
}
// Bare runc: a 4-way parallel loop over the round's runs.
async function runcRound(count) {
  let left = count;
  await Promise.all(Array.from({ length: 4 }, async () => { while (left-- > 0) await runc(); }));
}
const rounds = 4, per = Math.ceil(Number(thrN) / rounds);
const secs = { kiln: 0, runc: 0 }, ratios = [];
for (let r = 0; r < rounds; r++) {
  const order = r % 2 === 0 ? ['kiln', 'runc'] : ['runc', 'kiln'];
  const took = {};
  for (const who of order) took[who] = await timed(() => (who === 'kiln' ? kilnRound(per) : runcRound(per))) / 1000;
  secs.kiln += took.kiln;
  secs.runc += took.runc;
  ratios.push(Number((took.runc / took.kiln).toFixed(3)));
}
console.log(JSON.stringify({ label: 'tasks-throughput', tasks: per * rounds, seconds: secs.kiln, tasks_per_sec: (per * rounds) / secs.kiln, round_ratios: ratios }));
console.log(JSON.stringify({ label: 'runc-throughput', tasks: per * rounds, seconds: secs.runc, tasks_per_sec: (per * rounds) / secs.runc }));
