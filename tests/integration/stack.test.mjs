// A real language environment: `kiln stack build python` (mmdebstrap from
// the host's Debian sources) and a Python zip code that runs on it with the
// contract's arguments. Skips, with the reason, where the Debian mirror
// cannot be reached or containers cannot run; fails on anything else.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { Kiln, KILN_BIN, eventually } from '../support/kiln.mjs';
import { skipWithoutContainers } from '../support/containers.mjs';
import { makeZip } from '../support/zip.mjs';

const kiln = new Kiln();
let built;
before(async () => {
  built = spawnSync(KILN_BIN, ['stack', 'build', 'python', '--packages', 'python3',
    '--data', join(kiln.dir, 'data')], { encoding: 'utf8', timeout: 300000 });
  await kiln.start();
});
after(async () => { await kiln.stop(); kiln.cleanup(); });

test('a python zip code runs on a stack built by kiln stack build', async (t) => {
  if (built.status !== 0) {
    const out = built.stdout + built.stderr;
    if (/Failed to fetch|resolv|Temporary failure|Could not connect|not permitted|must be root|mmdebstrap: not found|install it/i.test(out))
      return t.skip(`cannot build a Debian stack here: ${out.trim().split('\n').pop()}`);
    assert.fail(`kiln stack build failed:\n${out}`);
  }
  assert.match(built.stdout, /^[0-9a-f]{64}  python$/m);
  const ls = spawnSync(KILN_BIN, ['image', 'ls', '--data', join(kiln.dir, 'data')], { encoding: 'utf8' });
  assert.match(ls.stdout, /python/);
  const stacks = await kiln.req('GET', '/2/stacks');
  assert.ok(stacks.body.includes('python'), stacks.text);

  const script = [
    'import json, os, sys',
    'args = dict(zip(sys.argv[1::2], sys.argv[2::2]))',
    'print("python", sys.version_info.major)',
    'print("payload", json.load(open(args["-payload"]))["n"])',
    'print("id", args["-id"] == os.environ["TASK_ID"])',
    'print("dir", args["-d"], os.getcwd())',
  ].join('\n');
  const B = 'stackboundary';
  const body = Buffer.concat([
    Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="data"\r\n\r\n${JSON.stringify({ name: 'py', file_name: 'hello.py', runtime: 'python' })}\r\n`),
    Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="worker.zip"\r\n\r\n`),
    makeZip({ 'hello.py': script }), Buffer.from(`\r\n--${B}--`)]);
  const up = await kiln.req('POST', `/2/projects/${kiln.project}/codes`, body,
    { headers: { 'content-type': `multipart/form-data; boundary=${B}` } });
  assert.equal(up.status, 200, up.text);
  const q = await kiln.req('POST', `/2/projects/${kiln.project}/tasks`, { tasks: [{ code_name: 'py', payload: '{"n":42}' }] });
  const id = q.body.tasks[0].id;
  const task = await eventually(async () => {
    const r = await kiln.req('GET', `/2/projects/${kiln.project}/tasks/${id}`);
    return !['queued', 'preparing', 'running'].includes(r.body.status) && r.body;
  }, 60000);
  if (skipWithoutContainers(t)) return;
  const log = (await kiln.req('GET', `/2/projects/${kiln.project}/tasks/${id}/log`)).text;
  assert.equal(task.status, 'complete', `${task.msg}\n${log}`);
  assert.equal(log, 'python 3\npayload 42\nid True\ndir /task /task\n');
});
