// The IronMQ v3 pull-queue API over real HTTP against the real binary:
// status codes, bodies and semantics as docs/http-api.md states them.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Kiln, eventually, sleep } from '../support/kiln.mjs';

const kiln = new Kiln();
before(() => kiln.start());
after(async () => { await kiln.stop(); kiln.cleanup(); });

const post = (q, messages) => kiln.req('POST', kiln.q(q) + '/messages', { messages });
const reserve = (q, opts = {}) => kiln.req('POST', kiln.q(q) + '/reservations', opts);

test('health and version need no token', async () => {
  assert.equal((await kiln.req('GET', '/healthz', undefined, { token: null })).status, 200);
  const v = await kiln.req('GET', '/version', undefined, { token: null });
  assert.equal(v.status, 200);
  assert.match(v.body.version, /^\d+\.\d+\.\d+$/);
});

test("the server's threads carry names an operator can tell apart", async () => {
  const { readdirSync, readFileSync } = await import('node:fs');
  const dir = `/proc/${kiln.proc.pid}/task`;
  const names = readdirSync(dir).map((t) => readFileSync(`${dir}/${t}/comm`, 'utf8').trim());
  for (const want of ['kiln-io0', 'kiln-commit', 'kiln-push', 'kiln-tick', 'kiln-walfill'])
    assert.ok(names.includes(want), `${want} among ${names.join(' ')}`);
});

test('create, get, update, list and delete a queue', async () => {
  const c = await kiln.req('PUT', kiln.q('orders'), { queue: { message_timeout: 120 } });
  assert.equal(c.status, 200);
  assert.equal(c.body.queue.name, 'orders');
  assert.equal(c.body.queue.message_timeout, 120);
  assert.equal(c.body.queue.message_expiration, 604800);
  assert.equal(c.body.queue.type, 'pull');
  assert.equal(c.body.queue.project_id, kiln.project);

  // PUT again is idempotent and applies the fields.
  const again = await kiln.req('PUT', kiln.q('orders'), { queue: { message_expiration: 3600 } });
  assert.equal(again.status, 200);
  assert.equal(again.body.queue.message_timeout, 120);
  assert.equal(again.body.queue.message_expiration, 3600);

  const upd = await kiln.req('PATCH', kiln.q('orders'),
    { queue: { dead_letter: { queue_name: 'orders-dlq', max_reservations: 3 } } });
  assert.equal(upd.status, 200);
  assert.deepEqual(upd.body.queue.dead_letter, { queue_name: 'orders-dlq', max_reservations: 3 });

  const get = await kiln.req('GET', kiln.q('orders'));
  assert.equal(get.status, 200);
  assert.equal(get.body.queue.size, 0);
  assert.equal(get.body.queue.total_messages, 0);

  const rmDl = await kiln.req('PATCH', kiln.q('orders'), { queue: { dead_letter: { queue_name: '' } } });
  assert.equal(rmDl.body.queue.dead_letter, undefined);

  const typeChange = await kiln.req('PATCH', kiln.q('orders'), { queue: { type: 'multicast' } });
  assert.equal(typeChange.status, 400);

  const del = await kiln.req('DELETE', kiln.q('orders'), {});
  assert.deepEqual([del.status, del.body], [200, { msg: 'Deleted' }]);
  const gone = await kiln.req('GET', kiln.q('orders'));
  assert.deepEqual([gone.status, gone.body], [404, { msg: 'Queue not found' }]);
  assert.equal((await kiln.req('DELETE', kiln.q('orders'), {})).status, 404);
  assert.equal((await kiln.req('PATCH', kiln.q('orders'), { queue: {} })).status, 404);
});

test('list queues with prefix, previous and per_page', async () => {
  for (const n of ['l-a', 'l-b', 'l-c', 'm-a']) await kiln.req('PUT', kiln.q(n), {});
  const all = await kiln.req('GET', kiln.q() + '?prefix=l-');
  assert.deepEqual(all.body.queues.map((q) => q.name), ['l-a', 'l-b', 'l-c']);
  const page = await kiln.req('GET', kiln.q() + '?prefix=l-&previous=l-a&per_page=1');
  assert.deepEqual(page.body.queues.map((q) => q.name), ['l-b']);
  assert.equal((await kiln.req('GET', kiln.q() + '?per_page=101')).status, 400);
  assert.equal((await kiln.req('GET', kiln.q() + '?per_page=x')).status, 400);
});

test('post, reserve, delete: the whole cycle', async () => {
  const p = await post('cycle', [{ body: 'one' }, { body: 'two' }, { body: 'three' }]);
  assert.equal(p.status, 201);
  assert.equal(p.body.msg, 'Messages put on queue.');
  assert.equal(p.body.ids.length, 3);
  for (const id of p.body.ids) assert.match(id, /^\d+$/);

  const r = await reserve('cycle', { n: 2 });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body.messages.map((m) => m.body), ['one', 'two']);
  for (const m of r.body.messages) {
    assert.equal(m.reserved_count, 1);
    assert.match(m.reservation_id, /^[0-9a-f]{32}$/);
  }
  const [m1, m2] = r.body.messages;
  assert.deepEqual((await kiln.req('DELETE', kiln.q('cycle') + '/messages/' + m1.id,
    { reservation_id: m1.reservation_id })).body, { msg: 'Deleted' });
  // Without the reservation a reserved message cannot be deleted.
  const no = await kiln.req('DELETE', kiln.q('cycle') + '/messages/' + m2.id, {});
  assert.equal(no.status, 403);
  // Batch delete with reservation ids.
  const batch = await kiln.req('DELETE', kiln.q('cycle') + '/messages',
    { ids: [{ id: m2.id, reservation_id: m2.reservation_id }, { id: p.body.ids[2] }] });
  assert.deepEqual([batch.status, batch.body], [200, { msg: 'Deleted' }]);
  const info = await kiln.req('GET', kiln.q('cycle'));
  assert.equal(info.body.queue.size, 0);
  assert.equal(info.body.queue.total_messages, 3);
  const empty = await reserve('cycle');
  assert.deepEqual(empty.body, { messages: [] });
});

test('reserve on a missing queue is 404; post creates the queue', async () => {
  const r = await reserve('never-made');
  assert.deepEqual([r.status, r.body], [404, { msg: 'Queue not found' }]);
  assert.equal((await post('made-by-post', [{ body: 'x' }])).status, 201);
  assert.equal((await kiln.req('GET', kiln.q('made-by-post'))).body.queue.size, 1);
});

test('touch issues a new reservation; release returns the message', async () => {
  await post('touchy', [{ body: 't' }]);
  const m = (await reserve('touchy', { timeout: 30 })).body.messages[0];
  const t = await kiln.req('POST', `${kiln.q('touchy')}/messages/${m.id}/touch`,
    { reservation_id: m.reservation_id, timeout: 60 });
  assert.equal(t.status, 200);
  assert.equal(t.body.msg, 'Touched');
  assert.notEqual(t.body.reservation_id, m.reservation_id);
  const stale = await kiln.req('POST', `${kiln.q('touchy')}/messages/${m.id}/release`,
    { reservation_id: m.reservation_id });
  assert.equal(stale.status, 403);
  const rel = await kiln.req('POST', `${kiln.q('touchy')}/messages/${m.id}/release`,
    { reservation_id: t.body.reservation_id });
  assert.deepEqual([rel.status, rel.body], [200, { msg: 'Released' }]);
  const again = (await reserve('touchy')).body.messages[0];
  assert.equal(again.id, m.id);
  assert.equal(again.reserved_count, 3); // reserve, touch, reserve
});

test('peek and get by id do not reserve; clear empties the queue', async () => {
  const ids = (await post('peeky', [{ body: 'a' }, { body: 'b' }])).body.ids;
  const peek = await kiln.req('GET', kiln.q('peeky') + '/messages?n=5');
  assert.deepEqual(peek.body.messages.map((m) => [m.body, m.reserved_count]), [['a', 0], ['b', 0]]);
  assert.equal(peek.body.messages[0].reservation_id, undefined);
  const one = await kiln.req('GET', kiln.q('peeky') + '/messages/' + ids[1]);
  assert.deepEqual(one.body, { message: { id: ids[1], body: 'b', reserved_count: 0 } });
  assert.equal((await kiln.req('GET', kiln.q('peeky') + '/messages/12345')).status, 404);
  assert.equal((await kiln.req('GET', kiln.q('peeky') + '/messages/not-a-number')).status, 404);
  const clear = await kiln.req('DELETE', kiln.q('peeky') + '/messages', {});
  assert.deepEqual(clear.body, { msg: 'Cleared' });
  assert.equal((await kiln.req('GET', kiln.q('peeky'))).body.queue.size, 0);
  assert.deepEqual((await kiln.req('GET', kiln.q('peeky') + '/messages')).body, { messages: [] });
});

test('delayed messages appear on time; reserve with delete removes', async () => {
  await post('later', [{ body: 'soon', delay: 1 }]);
  assert.deepEqual((await reserve('later')).body.messages, []);
  await sleep(1100);
  const r = await reserve('later', { delete: true, wait: 2 });
  assert.equal(r.body.messages[0].body, 'soon');
  assert.equal(r.body.messages[0].reservation_id, undefined);
  assert.equal((await kiln.req('GET', kiln.q('later'))).body.queue.size, 0);
});

test('long poll: a post wakes a waiting reserve; an empty wait ends on time', async () => {
  await kiln.req('PUT', kiln.q('poll'), {});
  const started = Date.now();
  const waiting = reserve('poll', { wait: 10 });
  await sleep(200);
  await post('poll', [{ body: 'wake' }]);
  const r = await waiting;
  assert.equal(r.body.messages[0].body, 'wake');
  assert.ok(Date.now() - started < 9000, 'the post should end the wait');

  const t0 = Date.now();
  const none = await reserve('poll', { wait: 1 });
  assert.deepEqual(none.body.messages, []);
  assert.ok(Date.now() - t0 >= 900, 'the wait should last about a second');
});

test('a long poll whose client went away takes no message (delete: true loses none)', async () => {
  await kiln.req('PUT', kiln.q('gone'), {});
  const body = JSON.stringify({ n: 1, wait: 10, delete: true });
  const sock = net.connect(kiln.port, '127.0.0.1');
  await new Promise((res) => sock.once('connect', res));
  sock.write(`POST ${kiln.q('gone')}/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
  await sleep(300);  // it waits now
  sock.destroy();  // the client's own timeout
  await sleep(300);
  await post('gone', [{ body: 'for someone still there' }]);
  await sleep(300);
  const r = await reserve('gone', { n: 1 });
  assert.equal(r.status, 200, r.text);
  assert.equal(r.body.messages.length, 1);
  assert.equal(r.body.messages[0].body, 'for someone still there');
});

test('a half-closed client with requests pipelined behind its long poll still gets its message', async () => {
  await kiln.req('PUT', kiln.q('half'), {});
  const body = JSON.stringify({ n: 1, wait: 10, delete: true });
  const sock = net.connect(kiln.port, '127.0.0.1');
  let got = '';
  sock.on('data', (d) => { got += d; });
  await new Promise((res) => sock.once('connect', res));
  sock.end(`POST ${kiln.q('half')}/reservations HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}` +
    'GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');  // then FIN: it only reads now
  await sleep(300);
  await post('half', [{ body: 'for the half-closed' }]);
  await eventually(async () => got.includes('{"msg":"ok"}'), 10000);
  sock.destroy();
  assert.match(got, /for the half-closed/);
});

test('dead letter: over-reserved messages move to the dead letter queue', async () => {
  await kiln.req('PUT', kiln.q('fragile'), {
    queue: { message_timeout: 30, dead_letter: { queue_name: 'fragile-dlq', max_reservations: 1 } },
  });
  const id = (await post('fragile', [{ body: 'poison' }])).body.ids[0];
  const m = (await reserve('fragile')).body.messages[0];
  await kiln.req('POST', `${kiln.q('fragile')}/messages/${m.id}/release`, { reservation_id: m.reservation_id });
  assert.deepEqual((await reserve('fragile')).body.messages, []);
  // The move is written, then indexed: it shows within a group commit.
  const dead = await eventually(async () => {
    const r = await kiln.req('GET', kiln.q('fragile-dlq') + '/messages?n=10');
    return r.status === 200 && r.body.messages.length > 0 && r;
  });
  assert.deepEqual(dead.body.messages.map((x) => [x.id, x.body, x.reserved_count]), [[id, 'poison', 1]]);
});

test('message ids are numeric, reservation and ordering hold across many', async () => {
  const bodies = Array.from({ length: 100 }, (_, i) => ({ body: `m${i}` }));
  const p = await post('many', bodies);
  assert.equal(p.body.ids.length, 100);
  const r = await reserve('many', { n: 100 });
  assert.deepEqual(r.body.messages.map((m) => m.body), bodies.map((b) => b.body));
  const del = await kiln.req('DELETE', kiln.q('many') + '/messages',
    { ids: r.body.messages.map((m) => ({ id: m.id, reservation_id: m.reservation_id })) });
  assert.equal(del.status, 200);
});

test('unicode and JSON-looking bodies come back byte for byte', async () => {
  const body = '{"a":1}\n\t"quoted" — ünïcødé ✓ \u0001';
  await post('bytes', [{ body }]);
  assert.equal((await reserve('bytes', { delete: true })).body.messages[0].body, body);
});

test('tokens: missing, wrong, query form, other project, admin', async () => {
  const none = await kiln.req('GET', kiln.q(), undefined, { token: null });
  assert.equal(none.status, 401);
  assert.ok(none.body.msg);
  assert.equal((await kiln.req('GET', kiln.q(), undefined, { token: 'nope' })).status, 401);
  for (const scheme of ['OAUTH', 'bearer', 'oAuth']) {  // schemes are case-insensitive (RFC 9110)
    const r = await kiln.req('GET', kiln.q(), undefined, { token: null, headers: { authorization: `${scheme} ${kiln.token}` } });
    assert.equal(r.status, 200, scheme);
  }
  const viaQuery = await kiln.req('GET', kiln.q() + '?oauth=' + kiln.token, undefined, { token: null });
  assert.equal(viaQuery.status, 200);

  const created = await kiln.req('POST', '/kiln/v1/projects', { name: 'other' }, { token: kiln.adminToken });
  assert.equal(created.status, 201);
  const other = created.body.project.id;
  assert.match(other, /^[0-9a-f]{24}$/);
  const otherToken = created.body.token.token;
  await kiln.req('PUT', kiln.q('secret'), {});
  // The other project's token cannot reach this project's queues ...
  const cross = await kiln.req('GET', kiln.q('secret'), undefined, { token: otherToken });
  assert.equal(cross.status, 401);
  // ... and sees only its own.
  const own = await kiln.req('GET', `/3/projects/${other}/queues`, undefined, { token: otherToken });
  assert.deepEqual(own.body, { queues: [] });
  // A project token is not an admin token.
  assert.equal((await kiln.req('GET', '/kiln/v1/projects')).status, 403);

  // Tokens can be listed (without secrets) and revoked.
  const list = await kiln.req('GET', `/kiln/v1/tokens?project_id=${other}`, undefined, { token: kiln.adminToken });
  assert.equal(list.body.tokens.length, 1);
  assert.equal(list.body.tokens[0].token, undefined);
  const rev = await kiln.req('DELETE', `/kiln/v1/tokens/${list.body.tokens[0].id}`, undefined, { token: kiln.adminToken });
  assert.equal(rev.status, 200);
  const after = await kiln.req('GET', `/3/projects/${other}/queues`, undefined, { token: otherToken });
  assert.equal(after.status, 401);
});

// Writes `parts` on a raw connection, 30 ms apart, and resolves with what
// came back once `done(text)` says it is all there.
const exchange = (parts, done) => new Promise((resolve, reject) => {
  const s = net.connect(kiln.port, '127.0.0.1', async () => {
    for (const p of parts) { s.write(p); await sleep(30); }
  });
  let buf = '';
  s.on('data', (d) => {
    buf += d;
    if (done(buf)) { s.end(); resolve(buf); }
  });
  s.on('error', reject);
  setTimeout(() => reject(new Error('timeout: ' + buf)), 5000);
});
const count = (text, re) => (text.match(re) || []).length;

test('Expect: 100-continue is answered before the body is sent', async () => {
  const body = JSON.stringify({ messages: [{ body: 'after the interim answer' }] });
  const sock = net.connect(kiln.port, '127.0.0.1');
  let got = '';
  sock.on('data', (d) => { got += d; });
  await new Promise((res) => sock.once('connect', res));
  sock.write(`POST ${kiln.q('continue')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
  await eventually(async () => got.startsWith('HTTP/1.1 100 Continue\r\n\r\n'), 5000);
  sock.write(body);
  await eventually(async () => got.includes('HTTP/1.1 201'), 5000);
  sock.destroy();
  assert.equal((await kiln.req('GET', kiln.q('continue'))).body.queue.size, 1);
});

test('keep-alive with pipelined requests on one connection', async () => {
  const reqs = [1, 2, 3].map(() => `GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n`).join('');
  const text = await exchange([reqs], (buf) => count(buf, /HTTP\/1\.1 200/g) === 3);
  assert.equal(count(text, /\{"msg":"ok"\}/g), 3);
});

// The server parses what one read brought and writes what the socket
// takes at once, awaiting only for the rest: requests cut at odd bytes,
// posts pipelined behind them, and an answer far larger than the socket's
// buffers, read by a client that pauses, all come through whole.
test('requests cut at any byte, pipelined posts, and an answer larger than the socket buffers', async () => {
  const one = (body) => {
    const b = JSON.stringify({ messages: [{ body }] });
    return `POST ${kiln.q('pieces')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(b)}\r\n\r\n${b}`;
  };
  const first = one('first'), head = first.indexOf('\r\n\r\n');
  const pieces = [first.slice(0, 7), first.slice(7, head - 3), first.slice(head - 3, head + 10),
    first.slice(head + 10) + one('second') + one('third')];
  const text = await exchange(pieces, (buf) => count(buf, /HTTP\/1\.1 201/g) === 3);
  assert.equal(count(text, /"ids":\["\d+"\]/g), 3);
  const peeked = await kiln.req('GET', kiln.q('pieces') + '/messages?n=3');
  assert.deepEqual(peeked.body.messages.map((m) => m.body), ['first', 'second', 'third']);

  const big = 'b'.repeat(60000);
  for (let i = 0; i < 10; i++) {
    assert.equal((await post('big', Array.from({ length: 10 }, () => ({ body: big })))).status, 201);
  }
  const answer = await new Promise((resolve, reject) => {
    const s = net.connect(kiln.port, '127.0.0.1', () => {
      s.write(`GET ${kiln.q('big')}/messages?n=100 HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n\r\n`);
      s.pause();  // the answer piles up in the server's socket
      setTimeout(() => s.resume(), 300);
    });
    const chunks = [];
    let want = -1, have = 0;
    s.on('data', (d) => {
      chunks.push(d);
      have += d.length;
      const all = Buffer.concat(chunks);
      const end = all.indexOf('\r\n\r\n');
      if (want < 0 && end >= 0) want = end + 4 + Number(/content-length: (\d+)/i.exec(all.subarray(0, end).toString())[1]);
      if (want >= 0 && have >= want) { s.end(); resolve(all.subarray(all.indexOf('\r\n\r\n') + 4).toString()); }
    });
    s.on('error', reject);
    setTimeout(() => reject(new Error(`timeout after ${have} bytes`)), 10000);
  });
  const messages = JSON.parse(answer).messages;
  assert.equal(messages.length, 100);
  assert.ok(messages.every((m) => m.body === big));
});

test('a chunked request body, sent whole or in pieces across the chunk framing', async () => {
  const head = `POST ${kiln.q('chunked')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
  const framed = (text) => {  // two chunks, cut inside the second one's data
    const body = JSON.stringify({ messages: [{ body: text }] });
    return [head + '5\r\n' + body.slice(0, 5) + '\r\n', (body.length - 5).toString(16) + '\r\n' + body.slice(5, 12),
      body.slice(12) + '\r\n', '0\r\n\r\n'];
  };
  const whole = [framed('all at once').join('')], pieces = framed('in pieces');
  for (const parts of [whole, pieces]) {
    const text = await exchange(parts, (buf) => /\r\n\r\n\{.*\}$/s.test(buf));
    assert.match(text, /^HTTP\/1\.1 201/);
  }
  const peeked = await kiln.req('GET', kiln.q('chunked') + '/messages?n=5');
  assert.deepEqual(peeked.body.messages.map((m) => m.body), ['all at once', 'in pieces']);
});

test('concurrent consumers never get the same message twice while it is reserved', async () => {
  const total = 1000;
  for (let i = 0; i < total; i += 100) {
    await post('race', Array.from({ length: 100 }, (_, j) => ({ body: `r${i + j}` })));
  }
  const seen = new Map();
  const consumer = async () => {
    for (;;) {
      const r = await reserve('race', { n: 7, timeout: 300 });
      assert.equal(r.status, 200);
      if (r.body.messages.length === 0) return;
      for (const m of r.body.messages) {
        assert.ok(!seen.has(m.id), `message ${m.id} handed out twice`);
        seen.set(m.id, m.body);
      }
      const del = await kiln.req('DELETE', kiln.q('race') + '/messages',
        { ids: r.body.messages.map((m) => ({ id: m.id, reservation_id: m.reservation_id })) });
      assert.equal(del.status, 200);
    }
  };
  await Promise.all(Array.from({ length: 8 }, consumer));
  assert.equal(seen.size, total);
  assert.equal(new Set(seen.values()).size, total);
  assert.equal((await kiln.req('GET', kiln.q('race'))).body.queue.size, 0);
});

test('queue names with spaces and unicode travel percent-encoded', async () => {
  const name = 'my queue/ünï';
  const path = `/3/projects/${kiln.project}/queues/${encodeURIComponent(name).replace('%2F', '%2F')}`;
  const bad = await kiln.req('PUT', path, {});
  assert.equal(bad.status, 400); // "/" is not allowed in a name
  const ok = 'my queue ünï';
  const p = await kiln.req('POST', kiln.q(ok) + '/messages', { messages: [{ body: 'x' }] });
  assert.equal(p.status, 201);
  const list = await kiln.req('GET', kiln.q() + '?prefix=' + encodeURIComponent('my queue'));
  assert.deepEqual(list.body.queues.map((q) => q.name), [ok]);
  assert.equal((await kiln.req('GET', kiln.q(ok))).body.queue.name, ok);
});

test('the access log names each request without the secrets in its query', async () => {
  const logged = await new Kiln({ accessLog: true }).start();
  try {
    const r = await fetch(`${logged.base}${logged.q('hooked')}/webhook?oauth=${logged.token}&x=1`, { method: 'POST', body: 'hi' });
    assert.equal(r.status, 201);
    await fetch(`${logged.base}${logged.q('hooked')}/messages/1?subscriber_name=s&reservation_id=00ff00ff00ff00ff00ff00ff00ff00ff`, { method: 'DELETE' });
    await eventually(async () => logged.output.includes('/webhook?oauth=***&x=1 201'));
    await eventually(async () => logged.output.includes('subscriber_name=s&reservation_id=*** 401'));
    // A percent-encoded key is the same parameter to the server, and to the log.
    const encoded = await fetch(`${logged.base}${logged.q('hooked')}/webhook?%6Fauth=${logged.token}`, { method: 'POST', body: 'ho' });
    assert.equal(encoded.status, 201);
    await eventually(async () => logged.output.includes('/webhook?%6Fauth=*** 201'));
    // (The first start prints the token once, to connect with: not a request line.)
    const lines = logged.output.split('\n').filter((l) => l.includes(' /3/'));
    assert.equal(lines.length, 3, lines.join('\n'));
    assert.ok(!lines.some((l) => l.includes(logged.token)), 'the token is in the log');
    assert.ok(!lines.some((l) => l.includes('00ff00ff00ff00ff')), 'the reservation id is in the log');
  } finally {
    await logged.stop();
    logged.cleanup();
  }
});
