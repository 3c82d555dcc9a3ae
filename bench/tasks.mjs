// Task benchmarks (issue #4): POST /tasks → complete for a busybox `true`
// task, one at a time, and 1,000 tiny tasks at once; beside a bare
// `runc run` of the same image, one at a time and in a 4-way parallel loop.
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

// Kiln, one at a time.
const lat = [];
for (let i = 0; i < Number(latN); i++) {
  const t0 = nowMs();
  const id = (await api('POST', '/tasks', { tasks: [{ code_name: 'bench-true' }] })).tasks[0].id;
  const t = await waitFinal(id);
  if (t.status !== 'complete') throw new Error(`task ${id}: ${t.status} ${t.msg}`);
  lat.push(nowMs() - t0);
}
console.log(JSON.stringify({ label: 'tasks-latency', runs: lat.length, p50_ms: pct(lat, 0.5), p99_ms: pct(lat, 0.99) }));

// Kiln, N at once (batches of 100), until every one is complete.
{
  const t0 = nowMs();
  let last;
  for (let i = 0; i < Number(thrN); i += 100)
    last = (await api('POST', '/tasks', { tasks: Array.from({ length: Math.min(100, Number(thrN) - i) }, () => ({ code_name: 'bench-true' })) })).tasks.at(-1).id;
  // The last one queued starts last: wait for it without polling, then for
  // the few still running beside it.
  await waitFinal(last);
  for (;;) {
    const st = await api('GET', `/codes/${code.id}/stats`);
    if (st.queued + st.preparing + st.running === 0) {
      if (st.complete < Number(thrN) + Number(latN)) throw new Error(`not all complete: ${JSON.stringify(st)}`);
      break;
    }
    await sleep(20);
  }
  const secs = (nowMs() - t0) / 1000;
  console.log(JSON.stringify({ label: 'tasks-throughput', tasks: Number(thrN), seconds: secs, tasks_per_sec: Number(thrN) / secs }));
}

// Bare runc with a bundle of the same image: the root filesystem read-only,
// no overlay, no cgroup limits, no log capture.
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
const rl = [];
for (let i = 0; i < Number(latN); i++) {
  const t0 = nowMs();
  await runc();
  rl.push(nowMs() - t0);
}
console.log(JSON.stringify({ label: 'runc-latency', runs: rl.length, p50_ms: pct(rl, 0.5), p99_ms: pct(rl, 0.99) }));
{
  const t0 = nowMs();
  let left = Number(thrN);
  await Promise.all(Array.from({ length: 4 }, async () => { while (left-- > 0) await runc(); }));
  const secs = (nowMs() - t0) / 1000;
  console.log(JSON.stringify({ label: 'runc-throughput', tasks: Number(thrN), seconds: secs, tasks_per_sec: Number(thrN) / secs }));
}
