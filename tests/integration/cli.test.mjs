// The CLI against a live server, finding it through iron.json (written at
// first start into the working directory) and IRON_* variables.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kiln, KILN_BIN } from '../support/kiln.mjs';
import { skipWithoutContainers } from '../support/containers.mjs';
import { makeTestPki } from '../support/pki.mjs';

const kiln = new Kiln();
before(() => kiln.start());
after(async () => { await kiln.stop(); kiln.cleanup(); });

function cli(args, { env = {}, input } = {}) {
  return new Promise((resolve) => {
    const child = execFile(KILN_BIN, args, { cwd: kiln.dir, env: { PATH: process.env.PATH, ...env } },
      (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr }));
    if (input !== undefined) child.stdin.end(input);
  });
}

test('mq create, push, peek, reserve, touch, release, delete, info, list, clear, rm', async () => {
  let r = await cli(['mq', 'create', 'work', '--message-timeout', '45']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /queue work ready/);
  r = await cli(['mq', 'push', 'work', 'alpha', 'beta']);
  assert.equal(r.code, 0, r.stderr);
  const ids = r.stdout.trim().split('\n');
  assert.equal(ids.length, 2);
  r = await cli(['mq', 'push', 'work'], { input: 'from stdin' });
  assert.equal(r.code, 0, r.stderr);

  r = await cli(['mq', 'peek', 'work', '-n', '5']);
  assert.match(r.stdout, /alpha[\s\S]*beta[\s\S]*from stdin/);

  r = await cli(['mq', 'reserve', 'work', '--json']);
  const m = JSON.parse(r.stdout).messages[0];
  assert.equal(m.body, 'alpha');
  r = await cli(['mq', 'touch', 'work', m.id, '--reservation-id', m.reservation_id]);
  assert.equal(r.code, 0, r.stderr);
  const fresh = r.stdout.match(/reservation_id ([0-9a-f]{32})/)[1];
  r = await cli(['mq', 'release', 'work', m.id, '--reservation-id', fresh]);
  assert.match(r.stdout, /Released/);
  r = await cli(['mq', 'reserve', 'work', '-n', '1']);
  const rid = r.stdout.match(/reservation_id ([0-9a-f]{32})/)[1];
  r = await cli(['mq', 'delete', 'work', m.id, '--reservation-id', rid]);
  assert.match(r.stdout, /Deleted/);

  r = await cli(['mq', 'info', 'work']);
  assert.match(r.stdout, /size\s+2/);
  assert.match(r.stdout, /message_timeout\s+45 s/);
  r = await cli(['mq', 'list']);
  assert.match(r.stdout, /^work$/m);
  r = await cli(['mq', 'clear', 'work']);
  assert.match(r.stdout, /Cleared/);
  r = await cli(['mq', 'rm', 'work']);
  assert.match(r.stdout, /Deleted/);
  r = await cli(['mq', 'info', 'work']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /404 Queue not found/);
});

test('IRON_* variables override iron.json; a bad token is reported', async () => {
  const r = await cli(['mq', 'list'], { env: { IRON_TOKEN: 'bad' } });
  assert.equal(r.code, 1);
  assert.match(r.stderr, /401/);
  const down = await cli(['mq', 'list'], { env: { IRON_PORT: '1' } });
  assert.equal(down.code, 2);
  assert.match(down.stderr, /cannot reach Kiln/);
});

test('settings are found as iron_core finds them: per product, section before top level', async () => {
  const home = mkdtempSync(join(tmpdir(), 'kiln-cli-home-'));
  const cwd = mkdtempSync(join(tmpdir(), 'kiln-cli-cwd-'));
  const run = (args, env = {}) => new Promise((resolve) => execFile(KILN_BIN, args,
    { cwd, env: { PATH: process.env.PATH, HOME: home, ...env } },
    (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })));
  try {
    // The product's section wins over the top level.
    writeFileSync(join(cwd, 'iron.json'), JSON.stringify({ token: 'wrong', port: kiln.port, host: '127.0.0.1',
      project_id: kiln.project, iron_mq: { token: kiln.token }, worker: { token: kiln.token } }));
    let r = await run(['mq', 'list']);
    assert.equal(r.code, 0, r.stderr);
    r = await run(['worker', 'ls']);
    assert.equal(r.code, 0, r.stderr);
    // IRON_WORKER_* for worker commands, IRON_MQ_* for mq commands.
    writeFileSync(join(cwd, 'iron.json'), JSON.stringify({ port: kiln.port, project_id: kiln.project }));
    r = await run(['worker', 'ls'], { IRON_WORKER_TOKEN: kiln.token, IRON_MQ_TOKEN: 'wrong' });
    assert.equal(r.code, 0, r.stderr);
    r = await run(['mq', 'list'], { IRON_WORKER_TOKEN: kiln.token, IRON_MQ_TOKEN: 'wrong' });
    assert.equal(r.code, 1);
    // A file named by IRON_CONFIG; a scheme that is not http is refused, not ignored.
    writeFileSync(join(home, 'elsewhere.json'), JSON.stringify({ token: kiln.token }));
    r = await run(['mq', 'list'], { IRON_CONFIG: join(home, 'elsewhere.json') });
    assert.equal(r.code, 0, r.stderr);
    r = await run(['mq', 'list'], { IRON_CONFIG: join(home, 'elsewhere.json'), IRON_SCHEME: 'ftp' });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /http and https only/);
  } finally {
    rmSync(home, { recursive: true, force: true });
    rmSync(cwd, { recursive: true, force: true });
  }
});

test('mq list pages past 100 queues; --max-reservations alone keeps the dead letter queue', async () => {
  for (let i = 0; i < 105; i++) await kiln.req('PUT', kiln.q(`many-${String(i).padStart(3, '0')}`), { queue: {} });
  const r = await cli(['mq', 'list', '--prefix', 'many-']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim().split('\n').length, 105);
  const j = JSON.parse((await cli(['mq', 'list', '--prefix', 'many-', '--json'])).stdout);
  assert.equal(j.queues.length, 105);
  await cli(['mq', 'create', 'dl-src', '--dead-letter', 'dl-dead', '--max-reservations', '3']);
  const c = await cli(['mq', 'create', 'dl-src', '--max-reservations', '5']);
  assert.equal(c.code, 0, c.stderr);
  const q = (await kiln.req('GET', kiln.q('dl-src'))).body.queue;
  assert.deepEqual(q.dead_letter, { queue_name: 'dl-dead', max_reservations: 5 });
});

test('project create and token create, list, revoke with the admin token', async () => {
  let r = await cli(['project', 'create', 'team-b', '--port', String(kiln.port)]);
  assert.equal(r.code, 0, r.stderr);
  const project = r.stdout.match(/project_id: ([0-9a-f]{24})/)[1];
  const token = r.stdout.match(/token: ([0-9a-f]+)/)[1];
  r = await cli(['mq', 'push', 'b-queue', 'hi', '--project-id', project, '--token', token]);
  assert.equal(r.code, 0, r.stderr);

  r = await cli(['token', 'create', '--project', project, '--name', 'ci', '--port', String(kiln.port), '--json']);
  const created = JSON.parse(r.stdout).token;
  assert.equal(created.name, 'ci');
  assert.match(created.token, /^[0-9a-f]{32,}$/);
  assert.match(created.id, /^[0-9a-f]{12,}$/);
  r = await cli(['token', 'list', '--project', project, '--port', String(kiln.port)]);
  assert.match(r.stdout, new RegExp(created.id));
  assert.doesNotMatch(r.stdout, new RegExp(created.token));
  r = await cli(['mq', 'list', '--project-id', project, '--token', created.token]);
  assert.equal(r.code, 0, r.stderr);  // it works until it is revoked
  r = await cli(['token', 'revoke', created.id, '--port', String(kiln.port)]);
  assert.match(r.stdout, /Revoked/);
  r = await cli(['mq', 'list', '--project-id', project, '--token', created.token]);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /401/);

  r = await cli(['project', 'list', '--port', String(kiln.port), '--admin-token', 'nope']);
  assert.equal(r.code, 1);
  // The data dir's admin token goes to this machine's server, whatever
  // IRON_HOST (or an iron.json) names: not across the network in the clear.
  r = await cli(['project', 'list', '--port', String(kiln.port)], { env: { IRON_HOST: '192.0.2.1' } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /team-b/);
  // So does one given outright: the port too comes from --port or KILN_PORT
  // only (the working directory's iron.json names this server's port, and
  // IRON_PORT another).
  r = await cli(['project', 'list', '--admin-token', kiln.adminToken],
    { env: { IRON_HOST: '192.0.2.1', IRON_PORT: '1', KILN_PORT: String(kiln.port) } });
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /team-b/);
});

test('mq create a push queue and mq status of a message', async () => {
  const { startSink } = await import('../support/sink.mjs');
  const s = await startSink(() => 202);
  try {
    let r = await cli(['mq', 'create', 'pushy', '--type', 'unicast', '--subscriber', `w=${s.url}`,
      '--retries', '2', '--retries-delay', '5', '--error-queue', 'pushy-err']);
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['mq', 'info', 'pushy']);
    assert.match(r.stdout, /type\s+unicast/);
    assert.match(r.stdout, /retries\s+2 every 5 s/);
    assert.match(r.stdout, new RegExp(`subscriber\\s+w\\s+${s.url}`));
    r = await cli(['mq', 'push', 'pushy', 'deliver me']);
    const id = r.stdout.trim();
    await s.received(1);
    for (let i = 0; i < 50; i++) {
      r = await cli(['mq', 'status', 'pushy', id]);
      if (/reserved/.test(r.stdout)) break;
      await new Promise((res) => setTimeout(res, 100));
    }
    assert.match(r.stdout, /^w\s+reserved\s+code 202/m);
    // A bad argument is CLI11's code (100 and up), not 2 (server unreachable).
    r = await cli(['mq', 'create', 'bad', '--subscriber', 'no-equals-sign']);
    assert.ok(r.code >= 100, `exit ${r.code}`);
    assert.match(r.stderr, /NAME=VALUE, got no-equals-sign/);
  } finally {
    await s.close();
  }
});

test('worker upload and register, task queue, ls, info, log --follow, cancel; schedules', async (t) => {
  const dir = join(kiln.dir, 'mycode');
  mkdirSync(join(dir, 'lib'), { recursive: true });
  writeFileSync(join(dir, 'run.sh'), 'echo started; cat lib/msg.txt; sleep 1; echo "payload $(cat $PAYLOAD_FILE)"\n', { mode: 0o755 });
  writeFileSync(join(dir, 'lib', 'msg.txt'), 'packaged\n');
  let r = await cli(['worker', 'upload', dir, '--name', 'shell', '--runtime', 'sh', '--file-name', 'run.sh',
    '--env', 'A=1', '--retries', '1']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /code [0-9a-f]{24} rev 1 uploaded/);
  // Bad arguments exit 100 and up, and upload nothing.
  r = await cli(['worker', 'upload', dir, '--name', 'shell', '--command', 'true', '--env', 'NOEQUALS']);
  assert.ok(r.code >= 100, `exit ${r.code}`);
  r = await cli(['worker', 'upload', dir, '--name', 'shell']);
  assert.ok(r.code >= 100, `exit ${r.code}`);
  assert.match(r.stderr, /give --command, or --file-name/);
  r = await cli(['worker', 'register', 'busybox', '--name', 'img', '--command', 'echo from image']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['worker', 'ls']);
  assert.match(r.stdout, /shell\s+rev 1/);
  assert.match(r.stdout, /img\s+rev 1/);
  // Without --command the image's own Entrypoint and Cmd run (a new revision).
  r = await cli(['worker', 'register', 'busybox', '--name', 'img']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /rev 2 uploaded/);

  r = await cli(['task', 'queue', 'shell', '--payload', 'P1']);
  assert.equal(r.code, 0, r.stderr);
  const id = r.stdout.trim();
  assert.match(id, /^[0-9a-f]{24}$/);
  r = await cli(['task', 'log', id, '--follow']);
  if (skipWithoutContainers(t)) return;
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout, 'started\npackaged\npayload P1\n');
  // A followed task that fails: its output, then exit 1 saying how it ended;
  // its msg (an error tail, with line breaks) stays on the task's one line.
  r = await cli(['worker', 'register', 'busybox', '--name', 'failing', '--command', 'echo bye; echo oops >&2; exit 3']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['task', 'queue', 'failing']);
  const failing = r.stdout.trim();
  r = await cli(['task', 'log', failing, '--follow']);
  assert.equal(r.code, 1);
  assert.match(r.stdout, /bye\n/);
  assert.match(r.stderr, new RegExp(`task ${failing} ended error`));
  r = await cli(['task', 'ls', '--code', 'failing']);
  assert.equal(r.stdout.trim().split('\n').length, 1, r.stdout);
  r = await cli(['task', 'info', failing]);
  // The error tail, on its line (stdout and stderr are one stream: either order).
  assert.match(r.stdout, /^msg\s+Exit code 3: .*oops/m, r.stdout);
  assert.match(r.stdout, /^exit_code\s+3$/m);
  r = await cli(['task', 'info', id]);
  assert.match(r.stdout, new RegExp(`^id\\s+${id}$`, 'm'));
  assert.match(r.stdout, /^code\s+shell rev 1$/m);
  assert.match(r.stdout, /^status\s+complete$/m);
  assert.match(r.stdout, /^payload\s+P1$/m);
  r = await cli(['task', 'ls', '--code', 'shell', '--status', 'complete']);
  assert.equal(r.stdout.trim().split('\n').length, 1);
  r = await cli(['task', 'ls', '--status', 'failed']);  // a typo lists nothing, and says so
  assert.notEqual(r.code, 0);
  assert.equal(r.stdout, '');
  r = await cli(['task', 'queue', 'img', '--delay', '3600']);
  const later = r.stdout.trim();
  r = await cli(['task', 'cancel', later]);
  assert.equal(r.stdout.trim(), 'Cancelled');
  r = await cli(['task', 'cancel', id]);  // it had ended: no claim that it was cancelled
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), `Task ${id} had already ended: complete`);
  r = await cli(['task', 'queue', 'nope']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /404 Code not found/);

  r = await cli(['schedule', 'create', 'img', '--cron', '0 6 * * *', '--time-zone', 'America/New_York',
    '--start-at', '2031-06-01T00:00:00Z']);
  assert.equal(r.code, 0, r.stderr);
  const sid = r.stdout.trim();
  r = await cli(['schedule', 'ls']);
  // 06:00 EDT (UTC-4) is 10:00Z.
  assert.match(r.stdout, new RegExp(`${sid}  scheduled\\s+img  next 2031-06-01T10:00:00Z  runs 0`));
  r = await cli(['schedule', 'cancel', sid]);
  assert.equal(r.stdout.trim(), 'Cancelled');
  r = await cli(['schedule', 'cancel', sid]);
  assert.equal(r.stdout.trim(), 'Already cancelled');
  r = await cli(['schedule', 'ls', '--json']);
  assert.ok(JSON.parse(r.stdout).schedules.some((s) => s.id === sid));
  r = await cli(['schedule', 'create', 'img', '--run-every', '5']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /run_every/);
});

test('worker info, pause, resume, stats, cancel-all, revisions, rm; task retry and progress; schedule info', async () => {
  let r = await cli(['worker', 'register', 'busybox', '--name', 'held', '--command', 'true',
    '--max-concurrency', '2', '--env', 'K=v']);
  assert.equal(r.code, 0, r.stderr);
  const codeId = r.stdout.match(/code ([0-9a-f]{24})/)[1];
  r = await cli(['worker', 'info', 'held']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, new RegExp(`^id\\s+${codeId}$`, 'm'));
  assert.match(r.stdout, /^status\s+active$/m);
  assert.match(r.stdout, /^image\s+busybox$/m);
  assert.match(r.stdout, /^max_concurrency\s+2$/m);
  assert.match(r.stdout, /^env\s+K=v$/m);
  r = await cli(['worker', 'info', codeId, '--json']);  // by id too
  assert.equal(JSON.parse(r.stdout).name, 'held');

  r = await cli(['task', 'queue', codeId, '--delay', '3600']);  // by the code's id too
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['task', 'cancel', r.stdout.trim()]);
  assert.equal(r.stdout.trim(), 'Cancelled');
  r = await cli(['worker', 'pause', 'held']);
  assert.equal(r.stdout.trim(), 'code held paused');
  r = await cli(['worker', 'info', 'held']);
  assert.match(r.stdout, /^status\s+paused$/m);
  r = await cli(['task', 'queue', 'held']);
  const first = r.stdout.trim();
  r = await cli(['task', 'queue', 'held', '--delay', '3600', '--label', 'nightly', '--priority', '2']);
  const second = r.stdout.trim();
  r = await cli(['task', 'info', second]);
  assert.match(r.stdout, /^label\s+nightly$/m);
  assert.match(r.stdout, /^priority\s+2$/m);
  r = await cli(['task', 'queue', 'held', '--priority', '-5']);  // the API would take it as "none"
  assert.ok(r.code >= 100, `exit ${r.code}`);
  r = await cli(['worker', 'register', 'busybox', '--name', 'held', '--retries', '-1']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /retries/);
  r = await cli(['worker', 'stats', 'held']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^queued\s+2$/m);
  assert.match(r.stdout, /^complete\s+0$/m);
  assert.doesNotMatch(r.stdout, /killed/);  // the server counts them as cancelled

  r = await cli(['task', 'progress', first, '--percent', '40', '--msg', 'warming up']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'Progress set');
  r = await cli(['task', 'info', first, '--json']);
  assert.equal(JSON.parse(r.stdout).percent, 40);
  r = await cli(['task', 'progress', '--msg', 'from inside'], { env: { TASK_ID: first } });
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['task', 'info', first, '--json']);
  assert.equal(JSON.parse(r.stdout).percent, 40);  // a msg alone keeps the percent
  assert.equal(JSON.parse(r.stdout).msg, 'from inside');
  r = await cli(['task', 'progress', first]);  // nothing to set: refused, nothing sent
  assert.ok(r.code >= 100, `exit ${r.code}`);
  r = await cli(['task', 'progress', first, '--percent', '101']);
  assert.ok(r.code >= 100, `exit ${r.code}`);

  r = await cli(['task', 'retry', first]);  // still queued: the server says why not
  assert.equal(r.code, 1);
  assert.match(r.stderr, /Task is queued/);
  r = await cli(['worker', 'cancel-all', 'held']);
  assert.equal(r.stdout.trim(), '2 tasks cancelled');
  r = await cli(['task', 'retry', second, '--delay', '-1']);
  assert.ok(r.code >= 100, `exit ${r.code}`);
  assert.ok(r.stderr.length < 200, r.stderr);  // a readable range
  r = await cli(['task', 'retry', second, '--delay', '60']);
  assert.equal(r.code, 0, r.stderr);
  const again = r.stdout.trim();
  assert.match(again, /^[0-9a-f]{24}$/);
  assert.notEqual(again, second);
  r = await cli(['task', 'info', again]);
  assert.match(r.stdout, /^status\s+queued$/m);
  assert.match(r.stdout, /^delay\s+60 s$/m);
  assert.match(r.stdout, new RegExp(`^retry_of\\s+${second}$`, 'm'));
  r = await cli(['task', 'cancel', second]);  // cancelled before: said so
  assert.equal(r.stdout.trim(), `Task ${second} had already ended: cancelled`);

  r = await cli(['worker', 'resume', 'held']);
  assert.equal(r.stdout.trim(), 'code held resumed');
  r = await cli(['worker', 'register', 'busybox', '--name', 'held', '--command', 'echo two']);
  r = await cli(['worker', 'revisions', 'held']);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^rev 2 .*busybox  echo two\nrev 1 .*busybox  true$/m);

  r = await cli(['schedule', 'create', 'held', '--run-every', '3600', '--run-times', '5',
    '--start-at', '2031-06-01T00:00:00Z', '--payload', 'hello']);
  const sid = r.stdout.trim();
  r = await cli(['schedule', 'info', sid]);
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^code\s+held$/m);
  assert.match(r.stdout, /^run_every\s+3600 s$/m);
  assert.match(r.stdout, /^run_times\s+5$/m);
  assert.match(r.stdout, /^next_start\s+2031-06-01T00:00:00Z$/m);
  assert.match(r.stdout, /^payload\s+hello$/m);
  r = await cli(['schedule', 'create', 'held', '--run-every', '3600', '--end-at', '2031-07-01T00:00:00Z',
    '--start-at', '2031-06-01T00:00:00Z', '--label', 'weekly', '--timeout', '60', '--name', 'reports']);
  r = await cli(['schedule', 'info', r.stdout.trim(), '--json']);
  const sch = JSON.parse(r.stdout);
  assert.equal(sch.label, 'weekly');
  assert.equal(sch.name, 'reports');
  assert.equal(sch.timeout, 60);
  assert.match(sch.end_at, /^2031-07-01T00:00:00/);
  r = await cli(['schedule', 'info', 'f'.repeat(24)]);
  assert.equal(r.code, 1);

  r = await cli(['worker', 'rm', 'held']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(r.stdout.trim(), 'code held deleted');
  r = await cli(['worker', 'info', 'held']);
  assert.equal(r.code, 1);
  assert.match(r.stderr, /404/);
});

test('an empty queue name or id is refused before anything is sent; list options take one value each', async () => {
  let r = await cli(['mq', 'push', 'keep', 'm1', 'm2']);
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['mq', 'create', 'messages']);
  assert.equal(r.code, 0, r.stderr);
  // A script's empty "$ID" or "$QUEUE" once reached the clear of the queue,
  // or the queue called "messages".
  for (const args of [['mq', 'delete', 'keep', ''], ['mq', 'clear', ''], ['mq', 'rm', ''],
    ['mq', 'info', ''], ['mq', 'touch', 'keep', '', '--reservation-id', 'x'], ['task', 'cancel', '']]) {
    r = await cli(args);
    assert.notEqual(r.code, 0, args.join(' '));
    assert.match(r.stderr, /must not be empty/, args.join(' '));
  }
  assert.equal((await kiln.req('GET', kiln.q('keep'))).body.queue.size, 2);
  assert.equal((await kiln.req('GET', kiln.q('messages'))).status, 200);
  // The server too: DELETE .../messages/ is not the clear of the queue.
  r = await kiln.req('DELETE', `${kiln.q('keep')}/messages/`, {});
  assert.equal(r.status, 404);
  assert.equal((await kiln.req('GET', kiln.q('keep'))).body.queue.size, 2);
  // --subscriber once took the queue name after it as a second subscriber.
  r = await cli(['mq', 'create', '--subscriber', 'a=http://127.0.0.1:9/x', 'hooks']);
  assert.equal(r.code, 0, r.stderr);
  const q = (await kiln.req('GET', kiln.q('hooks'))).body.queue;
  assert.deepEqual(q.push.subscribers.map((s) => s.name), ['a']);
  // An option given is sent as given: --dead-letter "" removes the queue's.
  r = await cli(['mq', 'create', 'with-dl', '--dead-letter', 'with-dl-dead']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await kiln.req('GET', kiln.q('with-dl'))).body.queue.dead_letter.queue_name, 'with-dl-dead');
  r = await cli(['mq', 'create', 'with-dl', '--dead-letter', '']);
  assert.equal(r.code, 0, r.stderr);
  assert.equal((await kiln.req('GET', kiln.q('with-dl'))).body.queue.dead_letter, undefined);
  // A line on stdin is the message without its end; nothing on stdin posts nothing.
  r = await cli(['mq', 'push', 'lines'], { input: 'hello\n' });
  assert.equal(r.code, 0, r.stderr);
  r = await cli(['mq', 'push', 'lines'], { input: '' });
  assert.ok(r.code >= 100, `exit ${r.code}`);
  const got = (await kiln.req('GET', `${kiln.q('lines')}/messages?n=10`)).body.messages.map((m) => m.body);
  assert.deepEqual(got, ['hello']);
  // A host in brackets, as iron.json says for a server on IPv6.
  r = await cli(['mq', 'info', 'keep', '--port', String(kiln.port)], { env: { IRON_HOST: '[127.0.0.1]' } });
  assert.equal(r.code, 0, r.stderr);
});

test('serve --help shows every default; client commands do not show "not given" as a value', async () => {
  const serve = await cli(['serve', '--help']);
  assert.equal(serve.code, 0);
  assert.match(serve.stdout, /--listen TEXT=127\.0\.0\.1:8080/);
  assert.match(serve.stdout, /--max-connections-per-address UINT[^=\n]*=5000/);
  const reserve = await cli(['mq', 'reserve', '--help']);
  assert.match(reserve.stdout, /--timeout INT\s+Reservation/);
});

test('image commands say so when --data is no server data dir', async () => {
  const here = await cli(['image', 'ls']);  // ./data is the server's
  assert.equal(here.code, 0);
  assert.equal(here.stderr, '');
  const elsewhere = join(kiln.dir, 'not-data');
  const there = await cli(['image', 'ls', '--data', elsewhere]);
  assert.equal(there.code, 0);
  assert.match(there.stderr, /is no Kiln server's data dir yet/);
});

test('without a project id the CLI says where to give one (exit 2), sending nothing', async () => {
  const r = await new Promise((resolve) => execFile(KILN_BIN, ['mq', 'list'], { cwd: '/', env: { PATH: process.env.PATH } },
    (err, stdout, stderr) => resolve({ code: err ? err.code : 0, stdout, stderr })));
  assert.equal(r.code, 2);
  assert.match(r.stderr, /no project id: give --project-id, set IRON_PROJECT_ID/);
});

test('--json failures are JSON on stdout; replies of another shape do not crash the CLI', async () => {
  let r = await cli(['mq', 'info', 'nope', '--json']);
  assert.equal(r.code, 1);
  assert.deepEqual(JSON.parse(r.stdout), { msg: 'Queue not found' });
  assert.match(r.stderr, /404 Queue not found/);
  r = await cli(['mq', 'list', '--json'], { env: { IRON_PORT: '1' } });
  assert.equal(r.code, 2);
  assert.match(JSON.parse(r.stdout).msg, /cannot reach Kiln/);

  // Something that is not Kiln answers 200 with every body in turn.
  const bodies = ['[]', '"text"', '7', '{}', '{"queue":null,"messages":{"id":1},"ids":[1,null]}',
    '{"queue":{"name":5,"push":[],"dead_letter":"x","size":-1},"messages":[1,{"id":2,"body":{}}],' +
      '"tasks":[7],"codes":["x"],"schedules":[{"run_count":"a"}],"subscribers":[null],"ids":[{}]}',
    'not json'];
  let next = 0;
  const { createServer } = await import('node:http');
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => res.writeHead(200, { 'content-type': 'application/json' })
      .end(bodies[next++ % bodies.length]));
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  const env = { IRON_PORT: String(server.address().port), IRON_PROJECT_ID: kiln.project, IRON_TOKEN: 'x' };
  const commands = [['mq', 'info', 'q'], ['mq', 'list'], ['mq', 'create', 'q'], ['mq', 'push', 'q', 'b'],
    ['mq', 'reserve', 'q'], ['mq', 'peek', 'q'], ['mq', 'touch', 'q', '1', '--reservation-id', 'r'],
    ['mq', 'status', 'q', '1'], ['mq', 'delete', 'q', '1'], ['worker', 'ls'], ['task', 'ls'],
    ['task', 'queue', 'c'], ['schedule', 'ls'], ['task', 'info', 't']];
  try {
    for (const args of commands) {
      for (let i = 0; i < bodies.length; ++i) {
        const res = await new Promise((resolve) => {
          execFile(KILN_BIN, args, { cwd: kiln.dir, env: { PATH: process.env.PATH, ...env } },
            (err, stdout, stderr) => resolve({ err, stdout, stderr }));
        });
        assert.equal(res.err?.signal ?? null, null, `${args.join(' ')} on ${bodies[(next - 1) % bodies.length]}: ${res.stderr}`);
        assert.ok(res.err === null || res.err.code <= 2, `${args.join(' ')}: exit ${res.err?.code} ${res.stderr}`);
      }
    }
  } finally {
    server.close();
  }
});

test('iron.json is written before the port opens (a script may connect at once)', async () => {
  const port = await new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
  });
  const dir = mkdtempSync(join(tmpdir(), 'kiln-first-'));
  const proc = spawn(KILN_BIN, ['serve', '--no-access-log', '--listen', `127.0.0.1:${port}`,
    '--data', join(dir, 'data')], { cwd: dir, stdio: 'ignore' });
  try {
    const connects = () => new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1', () => { c.destroy(); resolve(true); });
      c.on('error', () => resolve(false));
    });
    const deadline = Date.now() + 20000;
    while (!(await connects())) {
      assert.ok(Date.now() < deadline && proc.exitCode === null, 'kiln did not open its port');
    }
    // Checked the moment the first connection went through.
    assert.ok(existsSync(join(dir, 'iron.json')), 'iron.json missing when the port opened');
    assert.ok(existsSync(join(dir, 'data', 'admin.token')));
  } finally {
    proc.kill('SIGTERM');
    await new Promise((r) => (proc.exitCode !== null ? r() : proc.on('exit', r)));
    rmSync(dir, { recursive: true, force: true });
  }
});

test('https: through a TLS proxy whose certificate chains to a trusted CA and names the host', async () => {
  // The certificate names localhost only, so 127.0.0.1 must fail the host check.
  const pki = makeTestPki('DNS:localhost');
  const proxy = https.createServer(pki.tls, (req, res) => {
    const up = http.request({ host: '127.0.0.1', port: kiln.port, method: req.method, path: req.url, headers: req.headers },
      (ans) => { res.writeHead(ans.statusCode, ans.headers); ans.pipe(res); });
    req.pipe(up);
  });
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve));
  const env = { IRON_SCHEME: 'https', IRON_HOST: 'localhost', IRON_PORT: String(proxy.address().port) };
  try {
    let r = await cli(['mq', 'create', 'over-tls'], { env: { ...env, SSL_CERT_FILE: pki.caFile } });
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['mq', 'push', 'over-tls', 'sealed'], { env: { ...env, SSL_CERT_FILE: pki.caFile } });
    assert.equal(r.code, 0, r.stderr);
    r = await cli(['mq', 'peek', 'over-tls', '--json'], { env: { ...env, SSL_CERT_FILE: pki.caFile } });
    assert.equal(JSON.parse(r.stdout).messages[0].body, 'sealed');
    r = await cli(['worker', 'ls', '--scheme', 'https'], { env: { ...env, IRON_SCHEME: 'http', SSL_CERT_FILE: pki.caFile } });
    assert.equal(r.code, 0, r.stderr);
    // A CA this machine does not trust: refused before any request is sent.
    r = await cli(['mq', 'list'], { env });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /certificate verify failed/);
    // Trusted CA, but the certificate does not name 127.0.0.1.
    r = await cli(['mq', 'list'], { env: { ...env, IRON_HOST: '127.0.0.1', SSL_CERT_FILE: pki.caFile } });
    assert.equal(r.code, 2);
    assert.match(r.stderr, /certificate verify failed/);
    // The admin commands take --scheme (or KILN_SCHEME) too.
    r = await cli(['project', 'list', '--host', 'localhost', '--port', env.IRON_PORT, '--admin-token', kiln.adminToken],
      { env: { KILN_SCHEME: 'https', SSL_CERT_FILE: pki.caFile } });
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, new RegExp(kiln.project));
  } finally {
    proxy.closeAllConnections();
    proxy.close();
    rmSync(pki.dir, { recursive: true, force: true });
  }
});

test('a server that accepts and never answers is given up on after the step timeout, over http and https', async () => {
  const held = [];
  const silent = net.createServer((sock) => held.push(sock));
  await new Promise((resolve) => silent.listen(0, '127.0.0.1', resolve));
  try {
    for (const scheme of ['http', 'https']) {
      const r = await cli(['mq', 'list', '--scheme', scheme, '--port', String(silent.address().port)],
        { env: { KILN_CLI_TIMEOUT: '1' } });
      assert.equal(r.code, 2, `${scheme}: ${r.stderr}`);
      assert.match(r.stderr, /timeout/, scheme);
    }
  } finally {
    for (const sock of held) sock.destroy();
    silent.close();
  }
});
