// The official Node client iron_worker@0.1.8, unchanged, against a live
// Kiln: codes (through api.codesUpload, iron-api.md §3.7), tasks, logs,
// progress, retries, cancels, sync runs and schedules. Tasks run in real
// containers; where containers cannot run here, the checks that need a
// finished task are skipped with the reason.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Kiln } from '../support/kiln.mjs';
import { skipWithoutContainers } from '../support/containers.mjs';
import { makeZip } from '../support/zip.mjs';

const require = createRequire(import.meta.url);
const iron_worker = require('iron_worker');
assert.equal(require('iron_worker/package.json').version, '0.1.8');

const kiln = new Kiln({ args: ['--runner-slots', '2'] });
let client;
before(async () => {
  await kiln.start();
  client = new iron_worker.Client({
    scheme: 'http', host: '127.0.0.1', port: kiln.port, project_id: kiln.project, token: kiln.token,
  });
});
after(async () => { await kiln.stop(); kiln.cleanup(); });

const call = (fn) => new Promise((resolve, reject) => {
  fn((err, body) => (err ? reject(err) : resolve(body)));
});
const noContainers = (t, task) => {
  if (skipWithoutContainers(t)) return true;
  return false;
};

// What codesUpload would upload (its zipping is broken on Node 20, §3.7):
// the __runner__.sh of the package, here a shell worker.
const runner = 'echo "hello from $TASK_ID"\necho "payload $(cat "$PAYLOAD_FILE")"\n' +
  'echo \'{"percent":70,"msg":"most"}\' > "$PROGRESS_FILE"\n[ -z "$FAIL" ] || exit 5\n';
const zip = makeZip({ '__runner__.sh': runner });
const uploadZip = (name, extra = {}) => call((cb) => client.api.codesUpload({
  data: JSON.stringify({ name, file_name: '__runner__.sh', runtime: 'sh', content_type: 'text/plain', ...extra }),
  file: { buffer: zip, content_type: 'application/zip' },
}, cb));

test('codes: upload a zip and register an image, list, get, revisions, download, delete', async () => {
  const up = await uploadZip('compat-zip');
  assert.match(up.id, /^[0-9a-f]{24}$/);
  assert.equal(up.msg, 'Upload successful.');
  await uploadZip('compat-zip');
  const img = await call((cb) => client.api.codesUpload({ data: JSON.stringify({ name: 'compat-image', image: 'busybox', command: 'echo image' }) }, cb));
  assert.equal(img.msg, 'Upload successful.');

  const codes = await call((cb) => client.codesList({}, cb));
  assert.deepEqual(codes.map((c) => c.name).sort(), ['compat-image', 'compat-zip']);
  const code = await call((cb) => client.codesGet(up.id, cb));
  assert.equal(code.name, 'compat-zip');
  assert.equal(code.rev, 2);
  const revs = await call((cb) => client.codesRevisions(up.id, {}, cb));
  assert.deepEqual(revs.map((r) => r.rev), [2, 1]);
  // The client hands back the body as text (needle decodes it as UTF-8, so
  // binary bytes are lost on its side); byte-exact downloads are checked in
  // tests/integration/worker.test.mjs.
  const body = await call((cb) => client.codesDownload(up.id, { revision: 1 }, cb));
  assert.ok(String(body).startsWith('PK\u0003\u0004'), 'a zip archive');

  assert.deepEqual(await call((cb) => client.codesDelete(img.id, cb)), { msg: 'Deleted' });
  await assert.rejects(call((cb) => client.codesGet(img.id, cb)), /Code not found/);
});

test('tasks: create, wait, log, list, progress, retry, cancel, cancel all, run', async (t) => {
  await uploadZip('compat-task');
  const created = await call((cb) => client.tasksCreate('compat-task', { n: 1 }, { priority: 1, timeout: 60, label: 'compat' }, cb));
  assert.match(created.id, /^[0-9a-f]{24}$/);
  const task = await call((cb) => client.tasksWaitFor(created.id, {}, cb));
  if (noContainers(t, task)) return;
  assert.equal(task.status, 'complete', task.msg);
  assert.equal(task.priority, 1);
  assert.equal(task.percent, 70);
  const log = await call((cb) => client.tasksWaitForLog(created.id, {}, cb));
  assert.equal(String(log), `hello from ${created.id}\npayload {"n":1}\n`);

  const listed = await call((cb) => client.tasksList({ code_name: 'compat-task', complete: 1 }, cb));
  assert.deepEqual(listed.map((x) => x.id), [created.id]);
  // Progress is for a task that has not ended: its msg says how it ended.
  await assert.rejects(call((cb) => client.tasksSetProgress(created.id, { percent: 100, msg: 'all' }, cb)));
  assert.equal((await call((cb) => client.tasksGet(created.id, cb))).percent, 70);
  // While one runs, it is set.
  await call((cb) => client.api.codesUpload({ data: JSON.stringify({ name: 'compat-sleep', image: 'busybox', command: 'sleep 3' }) }, cb));
  const sleeper = await call((cb) => client.tasksCreate('compat-sleep', {}, {}, cb));
  for (let i = 0; i < 300 && (await call((cb) => client.tasksGet(sleeper.id, cb))).status !== 'running'; i++)
    await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual(await call((cb) => client.tasksSetProgress(sleeper.id, { percent: 100, msg: 'all' }, cb)), { msg: 'Progress set' });
  const slept = await call((cb) => client.tasksWaitFor(sleeper.id, {}, cb));
  assert.deepEqual([slept.status, slept.percent, slept.msg], ['complete', 100, 'all']);

  const retried = await call((cb) => client.tasksRetry(created.id, 0, cb));
  assert.equal(retried.tasks.length, 1);
  const second = await call((cb) => client.tasksWaitFor(retried.tasks[0].id, {}, cb));
  assert.equal(second.status, 'complete');
  assert.equal(second.original_task_id, created.id);

  const code = (await call((cb) => client.codesList({}, cb))).find((c) => c.name === 'compat-task');
  await call((cb) => client.api.post(`projects/${kiln.project}/codes/${code.id}/pause_task_queue`, {}, cb));
  const held = await call((cb) => client.tasksCreate('compat-task', 'x', {}, cb));
  const other = await call((cb) => client.tasksCreate('compat-task', 'y', {}, cb));
  assert.deepEqual(await call((cb) => client.tasksCancel(held.id, cb)), { msg: 'Cancelled' });
  const all = await call((cb) => client.tasksCancelAll(code.id, cb));
  assert.equal(all.msg, 'Cancelled');
  assert.equal((await call((cb) => client.tasksGet(other.id, cb))).status, 'cancelled');
  await call((cb) => client.api.post(`projects/${kiln.project}/codes/${code.id}/resume_task_queue`, {}, cb));

  const out = await call((cb) => client.tasksRun('compat-task', 'sync', {}, cb));
  assert.match(String(out), /payload sync/);
});

test('a failing code retries as new tasks that point at the first', async (t) => {
  await uploadZip('compat-fail', { retries: 1, env_vars: { FAIL: '1' } });
  const created = await call((cb) => client.tasksCreate('compat-fail', {}, {}, cb));
  const task = await call((cb) => client.tasksWaitFor(created.id, {}, cb));
  if (noContainers(t, task)) return;
  assert.equal(task.status, 'error');
  let retry;
  for (let i = 0; i < 200 && !retry; i++) {
    const list = await call((cb) => client.tasksList({ code_name: 'compat-fail' }, cb));
    retry = list.find((x) => x.original_task_id === created.id && x.status === 'error');
    if (!retry) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(retry, 'the retry ran');
  assert.equal(retry.retry_count, 1);
});

test('schedules: create, list, get, cancel', async () => {
  await uploadZip('compat-sched');
  const s = await call((cb) => client.schedulesCreate('compat-sched', { every: 'hour' },
    { run_every: 3600, run_times: 5, start_at: '2035-01-01T00:00:00Z', label: 'compat' }, cb));
  assert.match(s.id, /^[0-9a-f]{24}$/);
  const got = await call((cb) => client.schedulesGet(s.id, cb));
  assert.equal(got.code_name, 'compat-sched');
  assert.equal(got.payload, '{"every":"hour"}');
  assert.equal(got.next_start, '2035-01-01T00:00:00Z');
  assert.equal(got.status, 'scheduled');
  const list = await call((cb) => client.schedulesList({}, cb));
  assert.ok(list.some((x) => x.id === s.id));
  assert.deepEqual(await call((cb) => client.schedulesCancel(s.id, cb)), { msg: 'Cancelled' });
  assert.equal((await call((cb) => client.schedulesGet(s.id, cb))).status, 'cancelled');
  await assert.rejects(call((cb) => client.schedulesCreate('compat-sched', {}, { run_every: 10 }, cb)), /run_every/);
});
