// The IronWorker v2 endpoints with a real container per task: image and zip
// codes (multipart, as iron_worker's codesUpload sends it), revisions and
// downloads, tasks followed to the end, logs, cancel, retries, progress,
// webhooks, pause and resume, schedules. Tasks end in error
// with the reason where containers cannot run (not root, no runc); then the
// container checks are skipped.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fs from 'node:fs';
import crypto from 'node:crypto';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { Kiln, KILN_BIN, eventually, sleep } from '../support/kiln.mjs';
import { CONTAINERS, skipWithoutContainers } from '../support/containers.mjs';
import { makeZip } from '../support/zip.mjs';

const kiln = new Kiln({ args: ['--runner-slots', '2', '--max-upload-bytes', String(2 << 20), '--allow-host-network'] });
before(() => kiln.start());
after(async () => { const { code } = await kiln.stop(); assert.equal(code, 0); kiln.cleanup(); });

const w = (path, k = kiln) => `/2/projects/${k.project}${path}`;
const B = '--------------------NODENEEDLEHTTPCLIENT';
function uploadBody(data, file) {
  const parts = [Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="data"\r\n\r\n${JSON.stringify(data)}\r\n`)];
  if (file !== undefined) {
    parts.push(Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="file"\r\nContent-Transfer-Encoding: binary\r\nContent-Type: application/zip\r\n\r\n`),
      Buffer.from(file), Buffer.from('\r\n'));
  }
  parts.push(Buffer.from(`--${B}--`));
  return Buffer.concat(parts);
}
function upload(data, file, k = kiln) {
  return k.req('POST', w('/codes', k), uploadBody(data, file), { headers: { 'content-type': `multipart/form-data; boundary=${B}` } });
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
  if (skipWithoutContainers(t)) return;
  assert.equal(task.status, 'complete', task.msg);
  assert.equal(task.code_name, 'hello');
  assert.equal(task.code_rev, '2');
  assert.match(task.start_time, /Z$/);
  assert.ok(task.duration >= 0);
  const log = await kiln.req('GET', w(`/tasks/${id}/log`));
  assert.equal(log.headers.get('content-type'), 'text/plain');
  assert.equal(log.text, `hello ${id}\n{"x":1}`);
  // Kiln: ?offset= gives what a follower has not seen yet.
  const tail = await kiln.req('GET', w(`/tasks/${id}/log?offset=6`));
  assert.equal(tail.text, `${id}\n{"x":1}`);
  assert.equal((await kiln.req('GET', w(`/tasks/${id}/log?offset=9999`))).text, '');
  assert.equal((await kiln.req('GET', w(`/tasks/${id}/log?offset=-1`))).status, 400);
});

test("an image code without a command runs the image's Entrypoint and Cmd with its Env", async (t) => {
  if (skipWithoutContainers(t)) return;
  // An image made here from the built-in busybox's files, with a config.
  const data = join(kiln.dir, 'data');
  await upload({ name: 'warm', image: 'busybox', command: 'true' });
  await finished((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'warm', payload: '{}' }] })).body.tasks[0].id);
  const listed = execFileSync(KILN_BIN, ['image', 'ls', '--data', data]).toString();
  const busyboxId = listed.split('\n').find((l) => /\bbusybox\b/.test(l)).split(/\s+/)[0];
  const rootfs = fs.readdirSync(join(data, 'images', 'images')).find((d) => d.startsWith(busyboxId));
  const work = fs.mkdtempSync(join(kiln.dir, 'greeter-'));
  execFileSync('tar', ['-C', join(data, 'images', 'images', rootfs, 'rootfs'), '-cf', join(work, 'layer.tar'), '.']);
  fs.writeFileSync(join(work, 'config.json'), JSON.stringify({ config: {
    Entrypoint: ['/bin/sh', '-c'], Cmd: ['echo "$GREETING from $TASK_ID, PATH=$PATH"'],
    Env: ['PATH=/bin:/sbin', 'GREETING=hello'] } }));
  fs.writeFileSync(join(work, 'manifest.json'), JSON.stringify([{ Config: 'config.json', RepoTags: ['greeter:1'], Layers: ['layer.tar'] }]));
  execFileSync('tar', ['-C', work, '-cf', join(work, 'image.tar'), 'manifest.json', 'config.json', 'layer.tar']);
  execFileSync(KILN_BIN, ['image', 'import', join(work, 'image.tar'), '--data', data]);
  const up = await upload({ name: 'greeter', image: 'greeter:1' });
  assert.equal(up.status, 200, up.text);
  const id = (await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'greeter', payload: '{}' }] })).body.tasks[0].id;
  const task = await finished(id);
  assert.equal(task.status, 'complete', task.msg);
  assert.equal((await kiln.req('GET', w(`/tasks/${id}/log`))).text, `hello from ${id}, PATH=/bin:/sbin\n`);
  // An image without either: the task says what to do.
  await upload({ name: 'bare', image: 'busybox' });
  const bare = await finished((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'bare', payload: '{}' }] })).body.tasks[0].id);
  assert.equal(bare.status, 'error');
  assert.match(bare.msg, /no Entrypoint or Cmd: give the code a command/);
});

test('errors, timeouts and cancel', async (t) => {
  await upload({ name: 'fail', image: 'busybox', command: 'echo broken >&2; exit 2' });
  await upload({ name: 'sleep', image: 'busybox', command: 'sleep 30' });
  const q = await kiln.req('POST', w('/tasks'), { tasks: [
    { code_name: 'fail' }, { code_name: 'sleep', timeout: 1 }] });
  const [failId, slowId] = q.body.tasks.map((x) => x.id);
  const failed = await finished(failId);
  if (skipWithoutContainers(t)) return;
  assert.equal(failed.status, 'error');
  assert.equal(failed.exit_code, 2);
  assert.match(failed.msg, /broken/);
  assert.equal((await finished(slowId)).status, 'timeout');
  const c = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'sleep' }] });
  await eventually(async () => (await kiln.req('GET', w(`/tasks/${c.body.tasks[0].id}`))).body.status === 'running');
  assert.deepEqual((await kiln.req('POST', w(`/tasks/${c.body.tasks[0].id}/cancel`), {})).body, { msg: 'Cancelled' });
  assert.equal((await finished(c.body.tasks[0].id)).status, 'cancelled');
});

test('out of memory: an error when the task fails of it, complete with a note when it exits 0', async (t) => {
  const fill = 'dd if=/dev/zero of=/dev/shm/x bs=1M count=64';
  await upload({ name: 'oom-main', image: 'busybox', memory: 16, command: `echo start; ${fill}; exit $?` });
  await upload({ name: 'oom-child', image: 'busybox', memory: 16, command: `echo start; ${fill}; echo after` });
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'oom-main' }, { code_name: 'oom-child' }] });
  const [main, child] = await Promise.all(q.body.tasks.map((x) => finished(x.id)));
  if (skipWithoutContainers(t)) return;
  assert.equal(main.status, 'error', JSON.stringify(main));
  assert.match(main.msg, /Out of memory \(limit 16 MB\)/);
  assert.equal(child.status, 'complete', JSON.stringify(child));
  assert.equal(child.exit_code, 0);
  assert.match(child.msg, /killed: out of memory \(limit 16 MB\).*exited 0/);
});

test('an upload is refused before its body is read unless the token is good for the project', async () => {
  // Over --max-request-bytes (1 MiB), under --max-upload-bytes (2 MiB).
  const big = `--${B}\r\nContent-Disposition: form-data; name="junk"\r\n\r\n${'x'.repeat(1536 << 10)}\r\n--${B}--`;
  const headers = { 'content-type': `multipart/form-data; boundary=${B}` };
  for (const [token, status] of [['bad', 401], [undefined, 401]]) {
    const r = await kiln.req('POST', w('/codes'), big, { token: token ?? '', headers });
    assert.equal(r.status, status, r.text);
    assert.equal(typeof r.body.msg, 'string');
  }
  // Answered at the head: the body need not even come.
  const head = await new Promise((resolve) => {
    let got = '';
    const sock = net.connect(kiln.port, '127.0.0.1', () => sock.write(
      `POST ${w('/codes')} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth bad\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${2 << 20}\r\n\r\n`));
    sock.on('data', (d) => { got += d; });
    sock.on('close', () => resolve(got));
    sock.on('error', () => resolve(got));
    setTimeout(() => { sock.destroy(); resolve(got); }, 5000);
  });
  assert.match(head, /^HTTP\/1\.1 401 /, head);
  const other = await kiln.req('POST', '/2/projects/ffffffffffffffffffffffff/codes', big, { headers });
  assert.equal(other.status, 401, other.text);
  // The right token: the body is read, and judged for what it holds.
  const ok = await kiln.req('POST', w('/codes'), big, { headers });
  assert.equal(ok.status, 400, ok.text);
  assert.equal((await kiln.req('GET', '/healthz')).status, 200);
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
  await upload({ name: 'valid', image: 'busybox', command: 'true' });
  // A zip code's file_name must be a file of its package.
  const missing = await upload({ name: 'zipped', file_name: 'missing.sh', runtime: 'sh' }, makeZip({ 'run.sh': 'true\n' }));
  assert.equal(missing.status, 400, missing.text);
  assert.match(missing.body.msg, /file_name missing\.sh is not a file of the package/);
  assert.equal((await upload({ name: 'zipped', file_name: './run.sh', runtime: 'sh' }, makeZip({ 'run.sh': 'true\n' }))).status, 200);
  // A code named like another code's id does not take its place: ids win.
  const valid = (await kiln.req('GET', w('/codes/valid'))).body;
  assert.equal((await upload({ name: valid.id, image: 'busybox', command: 'true' })).status, 200);
  assert.equal((await kiln.req('GET', w(`/codes/${valid.id}`))).body.name, 'valid');
  // A schedule: a name kept in memory is bounded; a next run past the year 9999 is refused.
  const sched = (s) => kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'valid', payload: '{}', ...s }] });
  assert.equal((await sched({ run_every: 3600, name: 'n'.repeat(256) })).status, 400);
  const late = await sched({ cron: '0 0 29 2 *', start_at: '9999-01-01T00:00:00Z' });
  assert.equal(late.status, 400, late.text);
  assert.match(late.body.msg, /after the year 9999/);
  const bad = async (task) => (await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'valid', ...task }] }));
  for (const task of [{ priority: 5 }, { timeout: 7200 }, { timeout: -1 }, { delay: -1 }, { delay: 604801 },
    { priority: 'high' }, { timeout: '60' }, { code_name: 7 }, { label: {} },
    // kept in memory with every task: bounded
    { label: 'L'.repeat(256) }, { cluster: 'c'.repeat(256) },
    // past the range of an int: not wrapped round into 0-2
    { priority: 4294967298 }]) {
    const r = await bad(task);
    assert.equal(r.status, 400, JSON.stringify(task));
    assert.equal(typeof r.body.msg, 'string');
  }
  // A negative priority (Go's -3 among them) means the code's default.
  for (const priority of [-1, -3, -4294967295]) {
    const r = await bad({ priority });
    assert.equal(r.status, 200, r.text);
    assert.equal((await kiln.req('GET', w(`/tasks/${r.body.tasks[0].id}`))).body.priority, 0);
    await kiln.req('POST', w(`/tasks/${r.body.tasks[0].id}/cancel`), {});
  }
  // A payload object is written back out as text: nested too deep for that, it is refused.
  const deep = await kiln.req('POST', w('/tasks'), `{"tasks":[{"code_name":"valid","payload":${'['.repeat(100000)}${']'.repeat(100000)}}]}`);
  assert.equal(deep.status, 400, deep.text);
  assert.match(deep.body.msg, /nests deeper/);
  const many = await kiln.req('POST', w('/tasks'), { tasks: Array.from({ length: 101 }, () => ({ code_name: 'valid' })) });
  assert.equal(many.status, 400);
  assert.equal((await kiln.req('POST', w('/tasks'), { tasks: 'valid' })).status, 400);
  assert.equal((await kiln.req('GET', w('/tasks?per_page=500'))).status, 400);
  assert.equal((await kiln.req('GET', w('/tasks?page=x'))).status, 400);
  // An empty value is no value (a client's unset option): the defaults.
  for (const list of ['/tasks', '/codes', '/schedules'])
    assert.equal((await kiln.req('GET', w(`${list}?page=&per_page=`))).status, 200, list);
  const anyTask = (await kiln.req('GET', w('/tasks'))).body.tasks[0];
  assert.equal((await kiln.req('GET', w(`/tasks/${anyTask.id}?wait=31`))).status, 400);
  // Unsafe or broken packages, bad code settings: refused, nothing stored.
  assert.equal((await upload({ name: 'evil', file_name: 'run.sh', runtime: 'sh' }, makeZip({ '../evil.sh': 'x' }))).status, 400);
  assert.equal((await upload({ name: 'evil', file_name: '/etc/passwd', runtime: 'sh' }, makeZip({ 'run.sh': 'x' }))).status, 400);
  assert.equal((await upload({ name: 'evil', image: 'busybox', command: 'true', retries: 11 })).status, 400);
  // Settings multiplied out later are bounded, not left to overflow.
  for (const s of [{ retries_delay: 2 ** 62 }, { memory: 2 ** 50 }, { default_priority: 4294967296 }, { disk: 2 ** 50 }, { disk: 15 }, { disk: 'big' }])
    assert.equal((await upload({ name: 'evil', image: 'busybox', command: 'true', ...s })).status, 400, JSON.stringify(s));
  assert.equal((await upload({ name: 'evil', image: 'busybox', command: 'true', env_vars: { A: 1 } })).status, 400);
  assert.equal((await upload({ name: 'evil', image: 'busybox', command: 'true', network: 'bridge' })).status, 400);
  // network reads back as it is uploaded (host: this server has --allow-host-network).
  assert.equal((await upload({ name: 'netted', image: 'busybox', command: 'true', network: 'host' })).status, 200);
  assert.equal((await kiln.req('GET', w('/codes/netted'))).body.network, 'host');
  assert.equal((await upload({ name: 'unnetted', image: 'busybox', command: 'true' })).status, 200);
  assert.equal((await kiln.req('GET', w('/codes/unnetted'))).body.network, 'none');
  assert.equal((await kiln.req('GET', w('/codes/evil'))).status, 404);
  // Code uploads may exceed the 1 MiB request limit, up to --max-upload-bytes (2 MiB here).
  const big = await upload({ name: 'big', file_name: 'run.sh', runtime: 'sh' },
    makeZip({ 'run.sh': 'true', 'blob.bin': Buffer.alloc(1536 << 10, 7) }));
  assert.equal(big.status, 200, big.text);
  const huge = await new Promise((resolve) => {
    const sock = net.connect(kiln.port, '127.0.0.1', () => sock.write(`POST ${w('/codes')} HTTP/1.1\r\nHost: x\r\n` +
      `Authorization: OAuth ${kiln.token}\r\nContent-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${3 << 20}\r\n\r\n`));
    let buf = '';
    sock.on('data', (d) => { buf += d; });
    sock.on('close', () => resolve(buf));
    sock.on('error', () => resolve(buf));
  });
  assert.match(huge, /^HTTP\/1\.1 413/);
  // Elsewhere the request limit stays 1 MiB.
  const tooBig = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'valid', payload: 'x'.repeat(1100 << 10) }] }).catch((e) => e);
  if (tooBig.status !== undefined) assert.equal(tooBig.status, 413);
  assert.equal((await kiln.req('GET', '/2/stacks', undefined, { token: '' })).status, 401);
});

const skipIfNoContainers = (t, task) => {
  if (skipWithoutContainers(t)) return true;
  return false;
};

test('a zip code on the busybox stack gets the contract arguments; revisions and downloads', async (t) => {
  const script = 'echo "args: $*"; echo "payload: $(cat "$PAYLOAD_FILE")"; cat lib/data.txt; echo "config: $(cat "$CONFIG_FILE")"\n';
  const zip1 = makeZip({ '__runner__.sh': script, 'lib/data.txt': 'from the package\n' });
  const up = await upload({ name: 'zipper', file_name: '__runner__.sh', runtime: 'sh', content_type: 'text/plain', config: 'cfg' }, zip1);
  assert.equal(up.status, 200, up.text);
  const zip2 = makeZip({ '__runner__.sh': script, 'lib/data.txt': 'revision two\n' });
  const up2 = await upload({ name: 'zipper', file_name: '__runner__.sh', runtime: 'sh', config: 'cfg' }, zip2);
  assert.equal(up2.body.id, up.body.id);

  const code = (await kiln.req('GET', w(`/codes/${up.body.id}`))).body;
  assert.equal(code.rev, 2);
  assert.equal(code.runtime, 'sh');
  assert.equal(code.file_name, '__runner__.sh');
  assert.match(code.latest_checksum, /^[0-9a-f]{32}$/);
  const revs = (await kiln.req('GET', w(`/codes/${up.body.id}/revisions`))).body.revisions;
  assert.deepEqual(revs.map((r) => r.rev), [2, 1]);
  assert.equal(revs[1].code_size, zip1.length);
  const dl = await fetch(`${kiln.base}${w(`/codes/${up.body.id}/download?revision=1`)}`, { headers: { authorization: `OAuth ${kiln.token}` } });
  assert.equal(dl.status, 200);
  assert.equal(dl.headers.get('content-type'), 'application/zip');
  assert.match(dl.headers.get('content-disposition'), /zipper_1\.zip/);
  assert.deepEqual(Buffer.from(await dl.arrayBuffer()), zip1);
  const listed = (await kiln.req('GET', w('/codes'))).body.codes.map((c) => c.name);
  assert.ok(listed.includes('zipper') && listed.includes('hello'), listed.join());

  // A code name with CR LF in it is refused (it could not add a header to
  // the download's answer either); an odd one is quoted there.
  const evil = await upload({ name: 'evil\r\nSet-Cookie: owned=1', file_name: '__runner__.sh', runtime: 'sh' }, zip1);
  assert.equal(evil.status, 400, evil.text);
  const odd = await upload({ name: 'my job;v2 "x"', file_name: '__runner__.sh', runtime: 'sh' }, zip1);
  assert.equal(odd.status, 200, odd.text);
  const oddDl = await fetch(`${kiln.base}${w(`/codes/${odd.body.id}/download`)}`, { headers: { authorization: `OAuth ${kiln.token}` } });
  assert.equal(oddDl.headers.get('content-disposition'),
    `attachment; filename="my job;v2 _x__1.zip"; filename*=UTF-8''my%20job%3Bv2%20%22x%22_1.zip`);
  for (const rev of ['0', '-5'])
    assert.equal((await fetch(`${kiln.base}${w(`/codes/${odd.body.id}/download?revision=${rev}`)}`, { headers: { authorization: `OAuth ${kiln.token}` } })).status, 400);
  // Settings that every revision keeps in memory and every task gets in
  // its environment are bounded.
  for (const bad of [{ env_vars: { BIG: 'x'.repeat(70000) } }, { env_vars: { 'A=B': '1' } },
    { env_vars: { '1X': '1' } }, { env_vars: { NUL: 'a\u0000b' } }, { command: 'x'.repeat(20000) }, { name: 'n'.repeat(256) }]) {
    const r = await upload({ name: 'bounded', image: 'busybox', command: 'true', ...bad });
    assert.ok(r.status === 400 || r.status === 413, `${JSON.stringify(bad).slice(0, 60)}: ${r.status} ${r.text}`);
  }
  assert.equal((await upload({ name: 'bounded', image: 'busybox', command: 'true', env_vars: { GOOD_1: 'x'.repeat(60000) } })).status, 200);

  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'zipper', payload: 'P' }] });
  const task = await finished(q.body.tasks[0].id);
  if (skipIfNoContainers(t, task)) return;
  assert.equal(task.status, 'complete', task.msg);
  const log = (await kiln.req('GET', w(`/tasks/${task.id}/log`))).text;
  assert.match(log, new RegExp(`args: -d /task -payload /task/payload.json -config /task/config.json -id ${task.id}`));
  assert.match(log, /payload: P/);
  assert.match(log, /revision two/);
  assert.match(log, /config: cfg/);
  assert.equal(task.log_size, Buffer.byteLength(log));

  // runtime binary runs ./file_name, as one word whatever it holds.
  const bin = makeZip({ 'my prog': '#!/bin/sh\necho "binary ran: $1"\n' }, { executable: ['my prog'] });
  assert.equal((await upload({ name: 'spaced', file_name: 'my prog', runtime: 'binary' }, bin)).status, 200);
  const b = await finished((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'spaced' }] })).body.tasks[0].id);
  assert.equal(b.status, 'complete', b.msg);
  assert.match((await kiln.req('GET', w(`/tasks/${b.id}/log`))).text, /binary ran: -d/);
});

test('a task cancelled while it is prepared never starts its container and is not retried', async (t) => {
  // 15,000 small files take the slot a while to unpack: the cancel lands then.
  const files = { 'run.sh': 'echo started' };
  for (let i = 0; i < 15000; i++) files[`many/${i}`] = 'x';
  const up = await upload({ name: 'unpacks', file_name: 'run.sh', runtime: 'sh', retries: 1, retries_delay: 0 }, makeZip(files));
  assert.equal(up.status, 200, up.text);
  const id = (await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'unpacks' }] })).body.tasks[0].id;
  let seen;
  while ((seen = (await kiln.req('GET', w(`/tasks/${id}`))).body).status === 'queued') await sleep(2);
  if (seen.status !== 'preparing') {
    assert.ok(!(CONTAINERS && seen.status === 'error'), JSON.stringify(seen));
    return t.skip(`the task was ${seen.status} before it could be cancelled while prepared`);
  }
  assert.equal((await kiln.req('POST', w(`/tasks/${id}/cancel`))).status, 200);
  const done = await finished(id);
  if (skipIfNoContainers(t, done)) return;
  assert.equal(done.status, 'cancelled', JSON.stringify(done));
  assert.equal(done.start_time, undefined, 'its container never started');
  // No run, so an empty log: clients that poll for the log (tasksWaitForLog) stop.
  const log = await kiln.req('GET', w(`/tasks/${id}/log`));
  assert.equal(log.status, 200);
  assert.equal(log.text, '');
  await sleep(300);
  const tasks = (await kiln.req('GET', w('/tasks?code_name=unpacks'))).body.tasks;
  assert.deepEqual(tasks.map((x) => x.id), [id], 'no retry of a cancelled task');
});

test('task lists filter and page; a failed task is retried as new tasks; manual retry', async (t) => {
  await upload({ name: 'flaky', image: 'busybox', command: 'echo try; exit 3', retries: 2, retries_delay: 0 });
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'flaky', label: 'L1' }] });
  const first = await finished(q.body.tasks[0].id);
  if (skipIfNoContainers(t, first)) return;
  assert.equal(first.status, 'error');
  const all = await eventually(async () => {
    const r = (await kiln.req('GET', w('/tasks?code_name=flaky&error=1'))).body.tasks;
    return r.length === 3 && r;
  }, 30000);
  assert.deepEqual(all.map((x) => x.retry_count).sort(), [0, 1, 2]);
  for (const x of all.filter((x) => x.retry_count > 0)) assert.equal(x.original_task_id, first.id);
  assert.equal((await kiln.req('GET', w('/tasks?code_name=flaky&complete=1'))).body.tasks.length, 0);
  assert.equal((await kiln.req('GET', w('/tasks?code_name=flaky&label=L1'))).body.tasks.length, 3);
  const page = (await kiln.req('GET', w('/tasks?code_name=flaky&per_page=2&page=1'))).body.tasks;
  assert.equal(page.length, 1);
  // Go sends true as %!d(bool=true): any value but 0 sets the filter.
  assert.equal((await kiln.req('GET', w('/tasks?code_name=flaky&error=%25!d(bool%3Dtrue)'))).body.tasks.length, 3);

  const retried = await kiln.req('POST', w(`/tasks/${first.id}/retry`), { delay: 0 });
  assert.equal(retried.status, 200, retried.text);
  assert.equal(retried.body.msg, 'Queued up');
  const again = (await kiln.req('GET', w(`/tasks/${retried.body.tasks[0].id}`))).body;
  assert.equal(again.original_task_id, first.id);
  assert.equal(again.code_name, 'flaky');
  const stats = (await kiln.req('GET', w(`/codes/${again.code_id}/stats`))).body;
  assert.ok(stats.error >= 3, JSON.stringify(stats));
  assert.equal((await kiln.req('POST', w('/tasks/ffffffffffffffffffffffff/retry'), {})).status, 404);
});

test('progress from the API and from inside the task; webhook payloads; outlog', async (t) => {
  if (skipWithoutContainers(t)) return;
  await upload({ name: 'progress', image: 'busybox',
    command: 'echo \'{"percent":40,"msg":"inside"}\' > $PROGRESS_FILE; sleep 3; cat $PAYLOAD_FILE' });
  const hook = await kiln.req('POST', w('/tasks/webhook?code_name=progress'), 'raw <body> & more',
    { headers: { 'content-type': 'text/xml' } });
  assert.equal(hook.status, 200, hook.text);
  assert.equal(hook.body.msg, 'Queued up.');
  const id = hook.body.id;
  // While it runs: the task's own progress file is read...
  const inside = await eventually(async () => {
    const x = (await kiln.req('GET', w(`/tasks/${id}`))).body;
    return (x.percent === 40 || ['error', 'complete'].includes(x.status)) && x;
  }, 30000);
  assert.deepEqual([inside.status, inside.percent, inside.msg], ['running', 40, 'inside']);
  // ... and the API's progress, set after the file was written, stands.
  const set = await kiln.req('POST', w(`/tasks/${id}/progress`), { percent: 90, msg: 'from api' });
  assert.deepEqual(set.body, { msg: 'Progress set' });
  const after = (await kiln.req('GET', w(`/tasks/${id}`))).body;
  assert.deepEqual([after.percent, after.msg], [90, 'from api']);
  // Only what is given changes.
  await kiln.req('POST', w(`/tasks/${id}/progress`), { percent: 95 });
  await kiln.req('POST', w(`/tasks/${id}/progress`), { msg: 'step 2' });
  const partial = (await kiln.req('GET', w(`/tasks/${id}`))).body;
  assert.deepEqual([partial.percent, partial.msg], [95, 'step 2']);
  assert.equal((await kiln.req('POST', w(`/tasks/${id}/progress`), { msg: 'm'.repeat(5000) })).status, 413);
  assert.equal((await kiln.req('POST', w(`/tasks/${id}/progress`), { percent: 101 })).status, 400);
  assert.equal((await kiln.req('POST', w(`/tasks/${id}/progress`), { percent: 4294967346 })).status, 400);
  const task = await finished(id);
  assert.equal(task.status, 'complete', task.msg);
  assert.deepEqual([task.percent, task.msg], [95, 'step 2']);
  assert.equal(task.payload, 'raw <body> & more');
  assert.equal((await kiln.req('GET', w(`/tasks/${id}/outlog`))).text, 'raw <body> & more');
  // A finished task's msg says how it ended: progress cannot change it.
  assert.equal((await kiln.req('POST', w(`/tasks/${id}/progress`), { percent: 5, msg: 'late' })).status, 400);
  assert.equal((await kiln.req('GET', w(`/tasks/${id}`))).body.msg, 'step 2');
  // The file written after the API's progress wins in turn.
  await upload({ name: 'progress-later', image: 'busybox',
    command: 'sleep 2; echo \'{"percent":70,"msg":"file again"}\' > $PROGRESS_FILE; sleep 1' });
  const later = (await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'progress-later', payload: '{}' }] })).body.tasks[0].id;
  await eventually(async () => (await kiln.req('GET', w(`/tasks/${later}`))).body.status === 'running', 30000);
  assert.equal((await kiln.req('POST', w(`/tasks/${later}`) + '/progress', { percent: 10, msg: 'api first' })).status, 200);
  const last = await finished(later);
  assert.deepEqual([last.percent, last.msg], [70, 'file again']);
  // A negative priority is the code's default here too.
  assert.equal((await kiln.req('POST', w('/tasks/webhook?code_name=progress-later&priority=-1'), 'x')).status, 200);
  assert.equal((await kiln.req('POST', w('/tasks/webhook'), 'x')).status, 400);
  assert.equal((await kiln.req('POST', w('/tasks/webhook?code_name=nope'), 'x')).status, 404);
  // A payload of any bytes: the task gets them as they are, and the API's
  // JSON stays JSON (bytes that are not UTF-8 read back as U+FFFD).
  const binary = await kiln.req('POST', w('/tasks/webhook?code_name=progress'),
    new Uint8Array([0x62, 0xff, 0xfe, 0x69, 0x6e]), { headers: { 'content-type': 'application/octet-stream' } });
  assert.equal(binary.status, 200, binary.text);
  const got = await kiln.req('GET', w(`/tasks/${binary.body.id}`));
  assert.ok(got.body, `not JSON: ${got.text}`);
  assert.equal(got.body.payload, 'b\ufffd\ufffdin');
});

test('an ironworker:// push subscriber queues a task with the message as its payload', async () => {
  const up = await upload({ name: 'from-queue', image: 'busybox', command: 'cat $PAYLOAD_FILE' });
  assert.equal(up.status, 200, up.text);
  assert.equal((await kiln.req('POST', w(`/codes/${up.body.id}/pause_task_queue`), {})).status, 200);
  const q = `/3/projects/${kiln.project}/queues/to-tasks`;
  const c = await kiln.req('PUT', q, { queue: { type: 'multicast', push: { subscribers: [
    { name: 'task', url: 'ironworker:///from-queue' }, { name: 'nocode', url: 'ironworker:///no-such-code' }] } } });
  assert.equal(c.status, 200, c.text);
  const id = (await kiln.req('POST', `${q}/messages`, { messages: [{ body: '{"image":"cat.png"}' }] })).body.ids[0];
  const task = await eventually(async () => (await kiln.req('GET', w('/tasks?code_name=from-queue'))).body.tasks[0]);
  assert.equal((await kiln.req('GET', w(`/tasks/${task.id}`))).body.payload, '{"image":"cat.png"}');
  const subs = await eventually(async () => {
    const r = await kiln.req('GET', `${q}/messages/${id}/subscribers`);
    const s = r.body.subscribers;
    return s?.[0]?.status === 'deleted' && s[1].status === 'retrying' && s;
  });
  assert.equal(subs[0].status_code, 201);
  assert.equal(subs[1].status, 'retrying');  // no such code: 404, tried again later
  assert.equal(subs[1].status_code, 404);
});

test('pause holds a code\'s tasks, resume releases them; cancel_all; delete', async () => {
  const up = await upload({ name: 'held', image: 'busybox', command: 'true' });
  const id = up.body.id;
  assert.deepEqual((await kiln.req('POST', w(`/codes/${id}/pause_task_queue`), {})).body, { msg: 'Paused' });
  assert.equal((await kiln.req('GET', w(`/codes/${id}`))).body.status, 'paused');
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'held' }, { code_name: 'held' }, { code_name: 'held' }] });
  await sleep(600);  // slots are free (two of them): only the pause holds the tasks
  for (const x of q.body.tasks) {
    const t = (await kiln.req('GET', w(`/tasks/${x.id}`))).body;
    assert.equal(t.status, 'queued');
    assert.equal(t.start_time, undefined);
  }
  const stats = (await kiln.req('GET', w(`/codes/${id}/stats`))).body;
  assert.equal((await kiln.req('GET', w(`/codes/${id}/stats?start_date=200&end_date=100`))).status, 400);
  assert.equal(stats.queued, 3);
  const c = await kiln.req('POST', w(`/tasks/${q.body.tasks[0].id}/cancel`), {});
  assert.equal(c.status, 200);
  assert.deepEqual((await kiln.req('POST', w(`/codes/${id}/resume_task_queue`), {})).body, { msg: 'Resumed' });
  const done = await finished(q.body.tasks[1].id);
  // Resumed, it ran: it has a start (and completes where containers can run).
  if (CONTAINERS) assert.equal(done.status, 'complete', JSON.stringify(done));
  else assert.equal(done.status, 'error');
  const more = await kiln.req('POST', w(`/codes/${id}/pause_task_queue`), {});
  assert.equal(more.status, 200);
  const q2 = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'held' }, { code_name: 'held' }] });
  const all = await kiln.req('POST', w(`/codes/${id}/cancel_all`), {});
  assert.equal(all.body.msg, 'Cancelled');
  assert.equal(all.body.cancelled, 2);
  for (const x of q2.body.tasks) assert.equal((await kiln.req('GET', w(`/tasks/${x.id}`))).body.status, 'cancelled');
  assert.deepEqual((await kiln.req('DELETE', w(`/codes/${id}`))).body, { msg: 'Deleted' });
  assert.equal((await kiln.req('GET', w(`/codes/${id}`))).status, 404);
  assert.equal((await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'held' }] })).status, 404);
  assert.equal((await kiln.req('POST', w('/codes/ffffffffffffffffffffffff/pause_task_queue'), {})).status, 404);
});

test('tasks run the revision they were queued with', async (t) => {
  await upload({ name: 'versioned', image: 'busybox', command: 'echo one' });
  const id = (await kiln.req('GET', w('/codes'))).body.codes.find((c) => c.name === 'versioned').id;
  await kiln.req('POST', w(`/codes/${id}/pause_task_queue`), {});
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'versioned' }] });
  await upload({ name: 'versioned', image: 'busybox', command: 'echo two' });
  await kiln.req('POST', w(`/codes/${id}/resume_task_queue`), {});
  const task = await finished(q.body.tasks[0].id);
  if (skipIfNoContainers(t, task)) return;
  assert.equal(task.code_rev, '1');
  assert.equal((await kiln.req('GET', w(`/tasks/${task.id}/log`))).text, 'one\n');
});

test('schedules: create, run, list, get, update, cancel; cron with a time zone; bad input', async (t) => {
  await upload({ name: 'tick', image: 'busybox', command: 'echo tick' });
  const now = new Date();
  const c = await kiln.req('POST', w('/schedules'), { schedules: [
    { code_name: 'tick', payload: '{}', run_every: 60, run_times: 2, label: 'sched', priority: 1 },
    { code_name: 'tick', payload: '{}', cron: '30 4 * * mon', time_zone: 'Europe/Berlin',
      start_at: '2030-01-01T00:00:00Z' }] });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.msg, 'Scheduled');
  const [everyId, cronId] = c.body.schedules.map((x) => x.id);
  // Due at once: a task with the schedule's id and settings appears.
  const tasks = await eventually(async () => {
    const r = (await kiln.req('GET', w('/tasks?code_name=tick'))).body.tasks;
    return r.length >= 1 && r;
  }, 10000);
  assert.equal(tasks[0].schedule_id, everyId);
  assert.equal(tasks[0].label, 'sched');
  assert.equal(tasks[0].priority, 1);
  const every = (await kiln.req('GET', w(`/schedules/${everyId}`))).body;
  assert.equal(every.status, 'scheduled');
  assert.equal(every.run_count, 1);
  assert.equal(every.run_every, 60);
  const next = Date.parse(every.next_start);
  assert.ok(next - now.getTime() >= 55000 && next - now.getTime() <= 65000, every.next_start);
  assert.equal(every.end_at, '0001-01-01T00:00:00Z');
  // Monday 2030-01-07 04:30 in Berlin (CET, UTC+1) is 03:30 UTC.
  const cron = (await kiln.req('GET', w(`/schedules/${cronId}`))).body;
  assert.equal(cron.next_start, '2030-01-07T03:30:00Z');
  const listed = (await kiln.req('GET', w('/schedules'))).body.schedules.map((s) => s.id);
  assert.ok(listed.includes(everyId) && listed.includes(cronId));

  const upd = await kiln.req('PUT', w(`/schedules/${cronId}`), { cron: '0 12 * * *', time_zone: 'UTC' });
  assert.equal(upd.status, 200, upd.text);
  assert.equal(upd.body.next_start, '2030-01-01T12:00:00Z');
  // A client that sends back what it read (Go's zero time for unset ones)
  // changes nothing: the zero time stays unset.
  const echoed = await kiln.req('PUT', w(`/schedules/${cronId}`), { end_at: upd.body.end_at, start_at: upd.body.start_at });
  assert.equal(echoed.status, 200, echoed.text);
  assert.equal(echoed.body.end_at, '0001-01-01T00:00:00Z');
  assert.equal(echoed.body.next_start, '2030-01-01T12:00:00Z');
  assert.equal(echoed.body.status, 'scheduled');
  assert.deepEqual((await kiln.req('POST', w(`/schedules/${everyId}/cancel`), {})).body, { msg: 'Cancelled' });
  assert.equal((await kiln.req('GET', w(`/schedules/${everyId}`))).body.status, 'cancelled');
  assert.deepEqual((await kiln.req('POST', w(`/schedules/${everyId}/cancel`), {})).body, { msg: 'Already cancelled' });

  const bad = async (s) => (await kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'tick', payload: '{}', ...s }] })).status;
  assert.equal(await bad({ run_every: 30 }), 400);
  assert.equal(await bad({ payload: '' }), 400);
  assert.equal(await bad({ cron: '61 * * * *' }), 400);
  assert.equal(await bad({ cron: '* * * * *', time_zone: 'Mars/Olympus' }), 400);
  assert.equal(await bad({ start_at: 'yesterday' }), 400);
  assert.equal(await bad({ start_at: '2030-01-01T00:00:nanZ' }), 400);
  assert.equal(await bad({ start_at: '2031-02-29T09:00:00Z' }), 400);  // no such day
  assert.equal(await bad({ cron: '0 0 30 2 *' }), 400);  // would never run
  assert.equal(await bad({ max_concurrency: -7 }), 400);
  assert.equal((await kiln.req('PUT', w(`/schedules/${cronId}`), { schedule: 'oops' })).status, 400);
  // A past start_at of a cron schedule: its next match, not one already over.
  const past = await kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'tick', payload: '{}', cron: '0 0 1 1 *', start_at: '2020-01-01T00:00:00Z' }] });
  assert.equal(past.status, 200, past.text);
  const pastNext = (await kiln.req('GET', w(`/schedules/${past.body.schedules[0].id}`))).body.next_start;
  assert.equal(pastNext, `${new Date().getUTCFullYear() + 1}-01-01T00:00:00Z`);
  await kiln.req('POST', w(`/schedules/${past.body.schedules[0].id}/cancel`), {});
  assert.equal(await bad({ run_every: 2 ** 62 }), 400);
  // Past the limit of 100 active schedules a project: 403, as for any limit (§1.4), and none made.
  const over = await kiln.req('POST', w('/schedules'), { schedules: Array.from({ length: 101 }, () => ({ code_name: 'tick', payload: '{}', start_at: '2100-01-01T00:00:00Z' })) });
  assert.equal(over.status, 403, over.text);
  assert.equal(await bad({ start_at: 1e300 }), 400);
  assert.equal(await bad({ priority: 4294967296 }), 400);
  assert.equal((await kiln.req('GET', w(`/tasks?from_time=${2 ** 62}`))).status, 400);
  assert.equal((await kiln.req('GET', w('/tasks?from_time=200&to_time=100'))).status, 400);  // an empty span
  assert.equal(await bad({ code_name: 'nope' }), 404);
  assert.equal((await kiln.req('GET', w('/schedules/ffffffffffffffffffffffff'))).status, 404);
});

test("a schedule without a priority, or with Go's -3, queues tasks at the code's default_priority", async () => {
  await upload({ name: 'urgent', image: 'busybox', command: 'true', default_priority: 2 });
  const c = await kiln.req('POST', w('/schedules'), { schedules: [
    { code_name: 'urgent', payload: '{}', run_times: 1, label: 'none' },
    { code_name: 'urgent', payload: '{}', run_times: 1, label: 'go', priority: -3 },
    { code_name: 'urgent', payload: '{}', run_times: 1, label: 'set', priority: 0 }] });
  assert.equal(c.status, 200, c.text);
  const tasks = await eventually(async () => {
    const r = (await kiln.req('GET', w('/tasks?code_name=urgent'))).body.tasks;
    return r.length === 3 && r;
  }, 10000);
  const byLabel = Object.fromEntries(tasks.map((t) => [t.label, t.priority]));
  assert.deepEqual(byLabel, { none: 2, go: 2, set: 0 });
  const got = (await kiln.req('GET', w(`/schedules/${c.body.schedules[2].id}`))).body;
  assert.equal(got.priority, 0);
});

test('schedules made in one request list newest first, in the order they were made', async () => {
  await upload({ name: 'ordered', image: 'busybox', command: 'true' });
  const names = Array.from({ length: 20 }, (_, i) => `s${i}`);
  const c = await kiln.req('POST', w('/schedules'), { schedules: names.map((name) => ({ code_name: 'ordered', name, payload: '{}', start_at: '2100-01-01T00:00:00Z' })) });
  assert.equal(c.status, 200, c.text);
  const listed = (await kiln.req('GET', w('/schedules?per_page=100'))).body.schedules.filter((s) => s.code_name === 'ordered');
  assert.deepEqual(listed.map((s) => s.name), [...names].reverse());
  for (const s of c.body.schedules) await kiln.req('POST', w(`/schedules/${s.id}/cancel`), {});
});

test('a schedule past its end_at is refused; PUT takes task_delay as GET shows it; to_time takes its whole second', async () => {
  await upload({ name: 'edges', image: 'busybox', command: 'true' });
  const gone = await kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'edges', payload: '{}', run_every: 3600,
    start_at: '2020-01-01T00:00:00Z', end_at: '2020-01-02T00:00:00Z' }] });
  assert.equal(gone.status, 400, gone.text);
  assert.match(gone.body.msg, /never run/);
  const made = await kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'edges', payload: '{}', start_at: '2100-01-01T00:00:00Z' }] });
  const sid = made.body.schedules[0].id;
  const shown = (await kiln.req('GET', w(`/schedules/${sid}`))).body;
  const put = await kiln.req('PUT', w(`/schedules/${sid}`), { ...shown, task_delay: 5 });
  assert.equal(put.status, 200, put.text);
  assert.equal((await kiln.req('GET', w(`/schedules/${sid}`))).body.task_delay, 5);
  await kiln.req('POST', w(`/schedules/${sid}/cancel`), {});
  // A task created within a second: to_time of that second lists it.
  const id = (await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'edges', payload: '{}', delay: 3600 }] })).body.tasks[0].id;
  const task = (await kiln.req('GET', w(`/tasks/${id}`))).body;
  const sec = Math.floor(Date.parse(task.created_at) / 1000);
  const listed = (await kiln.req('GET', w(`/tasks?code_name=edges&from_time=${sec}&to_time=${sec}`))).body.tasks.map((x) => x.id);
  assert.deepEqual(listed, [id]);
  // A status filter whose value is not valid percent-encoding still filters.
  const queued = (await kiln.req('GET', w('/tasks?code_name=edges&complete=%!d(bool=true)'))).body.tasks;
  assert.deepEqual(queued, []);
  await kiln.req('POST', w(`/tasks/${id}/cancel`), {});
});

test('a completed schedule that is updated to run again counts against the limit of 100', async () => {
  await upload({ name: 'once', image: 'busybox', command: 'true' });
  const done = (await kiln.req('POST', w('/schedules'), { schedules: [{ code_name: 'once', payload: '{}', run_times: 1 }] })).body.schedules[0].id;
  await eventually(async () => (await kiln.req('GET', w(`/schedules/${done}`))).body.status === 'complete', 10000);
  let active = 0;
  for (let page = 0, got; !got || got.length === 100; page++) {
    got = (await kiln.req('GET', w(`/schedules?per_page=100&page=${page}`))).body.schedules;
    active += got.filter((s) => s.status === 'scheduled').length;
  }
  const fill = await kiln.req('POST', w('/schedules'), { schedules: Array.from({ length: 100 - active }, () => ({ code_name: 'once', payload: '{}', start_at: '2100-01-01T00:00:00Z' })) });
  assert.equal(fill.status, 200, fill.text);
  const again = await kiln.req('PUT', w(`/schedules/${done}`), { code_name: 'once', payload: '{}', start_at: '2100-01-01T00:00:00Z' });
  assert.equal(again.status, 403, again.text);
  assert.equal((await kiln.req('GET', w(`/schedules/${done}`))).body.status, 'complete');
  for (const s of fill.body.schedules) await kiln.req('POST', w(`/schedules/${s.id}/cancel`), {});
});

test("a task dir past its code's disk limit ends the task in error; the limit reads back", async (t) => {
  const plain = await upload({ name: 'small-disk-default', image: 'busybox', command: 'true' });
  assert.equal((await kiln.req('GET', w(`/codes/${plain.body.id}`))).body.disk, 10240);
  // Many files, none large (the watch), then one large file (its size limit).
  const up = await upload({ name: 'small-disk', image: 'busybox', disk: 16, command:
    'i=0; while [ $i -lt 100 ]; do dd if=/dev/zero of=f$i bs=1M count=1 2>/dev/null; i=$((i+1)); sleep 0.02; done; echo wrote all' });
  assert.equal(up.status, 200, up.text);
  assert.equal((await kiln.req('GET', w(`/codes/${up.body.id}`))).body.disk, 16);
  const big = await upload({ name: 'big-file', image: 'busybox', disk: 16, command: 'dd if=/dev/zero of=big bs=1M count=64' });
  assert.equal(big.status, 200, big.text);
  const within = await upload({ name: 'within-disk', image: 'busybox', disk: 16, command: 'dd if=/dev/zero of=f bs=1M count=4 2>/dev/null' });
  assert.equal(within.status, 200, within.text);
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'small-disk' }, { code_name: 'big-file' }, { code_name: 'within-disk' }] });
  const [many, one, ok] = await Promise.all(q.body.tasks.map((x) => finished(x.id)));
  if (skipWithoutContainers(t)) return;
  assert.equal(many.status, 'error');
  assert.match(many.msg, /^Task dir over its disk limit \(16 MB\): it held \d+\.\d MB$/);
  assert.doesNotMatch((await kiln.req('GET', w(`/tasks/${many.id}/log`))).text, /wrote all/);
  assert.equal(one.status, 'error');
  // The file stops at 16 MB (EFBIG); with the payload beside it the task dir is just over.
  assert.match(one.msg, /File too large|^Task dir over its disk limit \(16 MB\): it held 16\.[0-9] MB$/);
  assert.equal(ok.status, 'complete', ok.msg);
});

test('a package or a task cannot make Kiln write, read or block on host files', async (t) => {
  const fs = await import('node:fs');
  const host = fs.mkdtempSync('/tmp/kiln-escape-');
  fs.writeFileSync(`${host}/progress.json`, '{"percent":77,"msg":"a host secret"}');
  // payload.json and config.json in the package are symlinks to host paths:
  // Kiln replaces them, it does not write through them.
  await upload({ name: 'escape', file_name: 'run.sh', runtime: 'sh', config: 'the config' },
    makeZip({ 'run.sh': 'cat "$PAYLOAD_FILE"; echo; cat "$CONFIG_FILE"\n',
      'payload.json': `${host}/payload-written`, 'config.json': `${host}/config-written` },
    { symlinks: ['payload.json', 'config.json'] }));
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'escape', payload: 'the payload' }] });
  const task = await finished(q.body.tasks[0].id);
  if (skipIfNoContainers(t, task)) return;
  assert.equal(task.status, 'complete', task.msg);
  assert.equal((await kiln.req('GET', w(`/tasks/${task.id}/log`))).text, 'the payload\nthe config');
  assert.deepEqual(fs.readdirSync(host), ['progress.json']);
  // The progress file as a symlink to a host file is not read; as a FIFO it
  // does not block the service (reads of tasks go on while the task runs).
  await upload({ name: 'sneaky', image: 'busybox',
    command: `ln -s ${host}/progress.json $PROGRESS_FILE; sleep 1; rm $PROGRESS_FILE; mkfifo $PROGRESS_FILE; sleep 2` });
  const s = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'sneaky', payload: '{}' }] });
  const id = s.body.tasks[0].id;
  const seen = [];
  for (let i = 0; i < 8; i++) {
    const r = await kiln.req('GET', w(`/tasks/${id}`));
    assert.equal(r.status, 200);
    seen.push(r.body.msg ?? '');
    assert.equal((await kiln.req('GET', w('/tasks?code_name=sneaky'))).status, 200);
    await sleep(400);
  }
  const done = await finished(id);
  assert.equal(done.status, 'complete', done.msg);
  assert.ok(!seen.includes('a host secret') && done.msg !== 'a host secret', JSON.stringify(seen));
  assert.notEqual(done.percent, 77);
  fs.rmSync(host, { recursive: true });
});

test('image, stack and runtime names cannot leave the image store', async () => {
  for (const data of [{ image: '../../task-work/x/task', command: 'true' }, { image: '/etc', command: 'true' },
    { image: 'a'.repeat(300), command: 'true' }, { stack: 'x/../../y', file_name: 'run.sh', runtime: 'sh' },
    { runtime: '../../etc', file_name: 'run.sh' }]) {
    const r = await upload({ name: 'badimage', ...data }, data.file_name ? makeZip({ 'run.sh': 'true' }) : undefined);
    assert.equal(r.status, 400, `${JSON.stringify(data)} -> ${r.text}`);
  }
  assert.equal((await kiln.req('GET', w('/codes/badimage'))).status, 404);
});

test('GET a task with ?wait answers when it ends, or when the wait runs out', async (t) => {
  await upload({ name: 'short', image: 'busybox', command: 'sleep 1; echo done' });
  await upload({ name: 'long', image: 'busybox', command: 'sleep 30' });
  const q = await kiln.req('POST', w('/tasks'), { tasks: [{ code_name: 'short' }, { code_name: 'long' }] });
  const [shortId, longId] = q.body.tasks.map((x) => x.id);
  const done = (await kiln.req('GET', w(`/tasks/${shortId}?wait=30`))).body;
  if (skipIfNoContainers(t, done)) return;
  assert.equal(done.status, 'complete');
  const t0 = Date.now();
  const still = (await kiln.req('GET', w(`/tasks/${longId}?wait=1`))).body;
  assert.ok(['queued', 'preparing', 'running'].includes(still.status), still.status);
  assert.ok(Date.now() - t0 >= 900, 'waited');
  // A cancel ends the wait of another client at once.
  const waiting = kiln.req('GET', w(`/tasks/${longId}?wait=30`));
  await sleep(100);
  await kiln.req('POST', w(`/tasks/${longId}/cancel`), {});
  assert.equal((await waiting).body.status, 'cancelled');
  assert.ok(Date.now() - t0 < 20000);
});

test('codes, revisions, packages, tasks and schedules survive a restart', async () => {
  const before = {
    codes: (await kiln.req('GET', w('/codes?per_page=100'))).body.codes,
    tasks: (await kiln.req('GET', w('/tasks?per_page=100'))).body.tasks,
    schedules: (await kiln.req('GET', w('/schedules'))).body.schedules,
  };
  await kiln.restart();
  const codes = (await kiln.req('GET', w('/codes?per_page=100'))).body.codes;
  assert.deepEqual(codes.map((c) => [c.id, c.rev, c.status]), before.codes.map((c) => [c.id, c.rev, c.status]));
  const zipper = codes.find((c) => c.name === 'zipper');
  assert.deepEqual((await kiln.req('GET', w(`/codes/${zipper.id}/revisions`))).body.revisions.map((r) => r.rev), [2, 1]);
  const dl = await kiln.req('GET', w(`/codes/${zipper.id}/download?revision=2`));
  assert.equal(dl.status, 200);
  const tasks = (await kiln.req('GET', w('/tasks?per_page=100'))).body.tasks;
  assert.deepEqual(tasks.map((x) => x.id), before.tasks.map((x) => x.id));
  const schedules = (await kiln.req('GET', w('/schedules'))).body.schedules;
  assert.deepEqual(schedules.map((s) => [s.id, s.status, s.next_start]),
    before.schedules.map((s) => [s.id, s.status, s.next_start]));
});

// A download is sent from its file as the client reads it: clients that
// ask for a large package and read slowly (or not at all) do not make the
// server hold a copy each.
test('large downloads are sent from the file, byte for byte, to slow readers too', async () => {
  const big = new Kiln({ args: ['--max-upload-bytes', String(40 << 20)] });
  await big.start();
  try {
    const zip = makeZip({ 'run.sh': 'true\n', 'blob.bin': crypto.randomBytes(24 << 20) });
    const up = await upload({ name: 'big', file_name: 'run.sh', runtime: 'sh' }, zip, big);
    assert.equal(up.status, 200, up.text);
    const path = w(`/codes/${up.body.id}/download`, big);
    const rss = () => Number(fs.readFileSync(`/proc/${big.proc.pid}/status`, 'utf8').match(/VmRSS:\s+(\d+)/)[1]) * 1024;
    const before = rss();
    // Ten clients that read the answer's first bytes, then stop reading.
    const stalled = await Promise.all(Array.from({ length: 10 }, () => new Promise((resolve, reject) => {
      const s = net.connect(big.port, '127.0.0.1', () =>
        s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${big.token}\r\n\r\n`));
      s.once('data', (d) => { s.pause(); resolve({ s, head: d.toString('latin1') }); });
      s.on('error', reject);
    })));
    for (const { head } of stalled) assert.match(head, new RegExp(`^HTTP/1.1 200 [^]*Content-Length: ${zip.length}\r\n`));
    await sleep(300);
    const grown = rss() - before;
    assert.ok(grown < 4 * zip.length, `the server grew by ${grown} bytes for ten stalled downloads of ${zip.length}`);
    // One that reads gets every byte, and so does a stalled one once it reads.
    const dl = await fetch(big.base + path, { headers: { authorization: `OAuth ${big.token}` } });
    assert.equal(dl.status, 200);
    assert.equal(Buffer.compare(Buffer.from(await dl.arrayBuffer()), zip), 0);
    const { s, head } = stalled[0];
    const chunks = [Buffer.from(head, 'latin1')];
    let got = chunks[0].length;
    const want = head.indexOf('\r\n\r\n') + 4 + zip.length;
    await new Promise((resolve) => {
      s.on('data', (d) => { chunks.push(d); got += d.length; if (got >= want) resolve(); });
      s.resume();
    });
    const body = Buffer.concat(chunks).subarray(head.indexOf('\r\n\r\n') + 4);
    assert.equal(Buffer.compare(body, zip), 0);
    // A request pipelined after a download is answered right after its
    // last byte.
    const raw = await new Promise((resolve, reject) => {
      const parts = [];
      const c = net.connect(big.port, '127.0.0.1', () =>
        c.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${big.token}\r\n\r\n` +
          'GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      c.on('data', (d) => parts.push(d));
      c.on('end', () => resolve(Buffer.concat(parts)));
      c.on('error', reject);
    });
    const start = raw.indexOf('\r\n\r\n') + 4;
    assert.equal(Buffer.compare(raw.subarray(start, start + zip.length), zip), 0);
    assert.match(raw.subarray(start + zip.length).toString(), /^HTTP\/1\.1 200 [^]*"version"/);
    // HEAD: the length a GET gets, no body, and the connection goes on.
    const headed = await new Promise((resolve, reject) => {
      let text = '';
      const c = net.connect(big.port, '127.0.0.1', () =>
        c.write(`HEAD ${path} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${big.token}\r\n\r\n` +
          'GET /version HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      c.on('data', (d) => { text += d.toString('latin1'); });
      c.on('end', () => resolve(text));
      c.on('error', reject);
    });
    const [first, second] = headed.split(/(?=HTTP\/1\.1 )/);
    assert.match(first, new RegExp(`^HTTP/1.1 200 [^]*\r\nContent-Length: ${zip.length}\r\n`));
    assert.ok(first.endsWith('\r\n\r\n'), 'no body after the head');
    assert.match(second, /^HTTP\/1\.1 200 [^]*"version"/);
    for (const { s: c } of stalled) c.destroy();
  } finally {
    await big.stop();
    big.cleanup();
  }
});

// Two uploads of a project under way hold its slots: a third is answered
// 503 (which the Iron clients retry) at its head, before its body is read.
test('a third upload of a project under way is refused at its head; the slots come back', async () => {
  const body = uploadBody({ name: 'slots', image: 'busybox', command: 'true' });
  const head = `POST ${w('/codes')} HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: multipart/form-data; boundary=${B}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`;
  // A connection that sent the head; `said` resolves with the first answer.
  const started = () => new Promise((resolve, reject) => {
    const c = net.connect(kiln.port, '127.0.0.1', () => c.write(head));
    let text = '';
    const answers = [];
    c.on('data', (d) => {
      text += d.toString();
      while (text.includes('\r\n\r\n')) {
        const end = text.indexOf('\r\n\r\n') + 4;
        const status = text.slice(0, end);
        const len = Number((status.match(/Content-Length: (\d+)/) || [0, 0])[1]);
        if (text.length < end + len) break;
        answers.push(status + text.slice(end, end + len));
        text = text.slice(end + len);
        resolve({ c, answers });
      }
    });
    c.on('error', reject);
  });
  const a = await started();
  const b = await started();
  assert.match(a.answers[0], /^HTTP\/1\.1 100 Continue/);
  assert.match(b.answers[0], /^HTTP\/1\.1 100 Continue/);
  const third = await started();
  assert.match(third.answers[0], /^HTTP\/1\.1 503 [^]*uploads being stored already/);
  third.c.destroy();
  for (const x of [a, b]) {
    x.c.write(body);
    await eventually(async () => x.answers.length === 2);
    assert.match(x.answers[1], /^HTTP\/1\.1 200 [^]*Upload successful/);
    x.c.destroy();
  }
  assert.equal((await upload({ name: 'slots', image: 'busybox', command: 'true' })).status, 200);
});
