// The IronWorker v2 endpoints served so far, with a real container per task:
// register an image code (multipart, as iron_worker's codesUpload sends it),
// queue tasks, follow them to the end, read logs, cancel. Tasks end in error
// with the reason where containers cannot run (not root, no runc); then the
// container checks are skipped.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { Kiln, eventually } from '../support/kiln.mjs';

const kiln = new Kiln({ args: ['--runner-slots', '2'] });
before(() => kiln.start());
after(async () => { const { code } = await kiln.stop(); assert.equal(code, 0); kiln.cleanup(); });

const w = (path) => `/2/projects/${kiln.project}${path}`;
const B = '--------------------NODENEEDLEHTTPCLIENT';
function upload(data, file) {
  let body = `--${B}\r\nContent-Disposition: form-data; name="data"\r\n\r\n${JSON.stringify(data)}\r\n`;
  if (file) body += `--${B}\r\nContent-Disposition: form-data; name="file"; filename="file"\r\nContent-Type: application/zip\r\n\r\n${file}\r\n`;
  body += `--${B}--`;
  return kiln.req('POST', w('/codes'), body, { headers: { 'content-type': `multipart/form-data; boundary=${B}` } });
}
const finished = (id) => eventually(async () => {
  const r = await kiln.req('GET', w(`/tasks/${id}`));
  return !['queued', 'preparing', 'running'].includes(r.body.status) && r.body;
}, 30000);

test('register an image code, run a task, read its log', async (t) => {
  const up = await upload({ name: 'hello', image: 'busybox', command: 'echo hello $TASK_ID; cat $PAYLOAD_FILE' });
  assert.equal(up.status, 200, up.text);
  assert.match(up.body.id, /^[0-9a-f]{24}$/);
  assert.equal(up.body.msg, 'Upload successful.');
  const again = await upload({ name: 'hello', image: 'busybox', command: 'echo hello $TASK_ID; cat $PAYLOAD_FILE' });
  assert.equal(again.body.id, up.body.id);
  assert.equal((await kiln.req('GET', w(`/codes/${up.body.id}`))).body.rev, 2);

  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'hello', payload: '{"x":1}' }] });
  assert.equal(q.status, 200, q.text);
  assert.equal(q.body.msg, 'Queued up');
  const id = q.body.tasks[0].id;
  const task = await finished(id);
  if (task.status === 'error' && /root|runc/.test(task.msg)) return t.skip(task.msg);
  assert.equal(task.status, 'complete', task.msg);
  assert.equal(task.code_name, 'hello');
  assert.equal(task.code_rev, '2');
  assert.match(task.start_time, /Z$/);
  assert.ok(task.duration >= 0);
  const log = await kiln.req('GET', w(`/tasks/${id}/log`));
  assert.equal(log.headers.get('content-type'), 'text/plain');
  assert.equal(log.text, `hello ${id}\n{"x":1}`);
});

test('errors, timeouts and cancel', async (t) => {
  await upload({ name: 'fail', image: 'busybox', command: 'echo broken >&2; exit 2' });
  await upload({ name: 'sleep', image: 'busybox', command: 'sleep 30' });
  const q = await kiln.req('POST', w('/tasks'), { tasks: [
    { code_name: 'fail' }, { code_name: 'sleep', timeout: 1 }] });
  const [failId, slowId] = q.body.tasks.map((x) => x.id);
  const failed = await finished(failId);
  if (failed.status === 'error' && /root|runc/.test(failed.msg)) return t.skip(failed.msg);
  assert.equal(failed.status, 'error');
  assert.equal(failed.exit_code, 2);
  assert.match(failed.msg, /broken/);
  assert.equal((await finished(slowId)).status, 'timeout');
  const c = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'sleep' }] });
  await eventually(async () => (await kiln.req('GET', w(`/tasks/${c.body.tasks[0].id}`))).body.status === 'running');
  assert.deepEqual((await kiln.req('POST', w(`/tasks/${c.body.tasks[0].id}/cancel`), {})).body, { msg: 'Cancelled' });
  assert.equal((await finished(c.body.tasks[0].id)).status, 'cancelled');
});

test('bad requests: unknown code, broken multipart, zip codes, bad task fields', async () => {
  assert.equal((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'nope' }] })).status, 404);
  assert.equal((await kiln.req('POST', w('/tasks'), { tasks: [] })).status, 400);
  assert.equal((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'hello', payload: 'x'.repeat(65537) }] })).status, 413);
  assert.equal((await kiln.req('POST', w('/tasks'), '{"tasks": [')).status, 400);
  const broken = await kiln.req('POST', w('/codes'), `--${B}\r\nContent-Disposition: form-data; name="data"\r\n\r\n{}`,
    { headers: { 'content-type': `multipart/form-data; boundary=${B}` } });
  assert.equal(broken.status, 400);
  assert.equal((await upload({ name: 'zipped', file_name: 'run.sh', runtime: 'sh' }, 'PK')).status, 400);
  assert.equal((await upload({ name: 'noimage' })).status, 400);
  assert.equal((await kiln.req('GET', w('/tasks/ffffffffffffffffffffffff'))).status, 404);
  const log = await kiln.req('GET', w('/tasks/ffffffffffffffffffffffff/log'));
  assert.equal(log.status, 404);
  assert.equal((await kiln.req('GET', w('/tasks/ffffffffffffffffffffffff'), undefined, { token: 'bad' })).status, 401);
});
