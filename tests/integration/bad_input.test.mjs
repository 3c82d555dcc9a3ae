// Bad input gets a clear error, never crashes the server, never loses a
// message: malformed JSON, wrong types, out-of-range values, oversized
// bodies and headers, garbage and half-closed connections, unknown paths.
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Kiln, eventually, sleep } from '../support/kiln.mjs';

const kiln = new Kiln({ args: ['--max-request-bytes', '262144', '--read-timeout', '1'] });
let kept;
before(async () => {
  await kiln.start();
  kept = (await kiln.req('POST', kiln.q('safe') + '/messages', { messages: [{ body: 'keep me' }] })).body.ids[0];
});
after(async () => {
  // The server is alive and the message is intact after everything below.
  const m = await kiln.req('GET', kiln.q('safe') + '/messages/' + kept);
  assert.equal(m.body.message.body, 'keep me');
  const { code } = await kiln.stop();
  assert.equal(code, 0);
  kiln.cleanup();
});

function expectError(res, status) {
  assert.equal(res.status, status, res.text);
  assert.equal(typeof res.body.msg, 'string', `JSON {"msg"} body expected, got ${res.text}`);
}

test('malformed JSON is 400 on every body-taking endpoint', async () => {
  const m = kiln.q('safe') + '/messages';
  for (const [method, path] of [['POST', m], ['PUT', kiln.q('safe')], ['PATCH', kiln.q('safe')],
    ['POST', kiln.q('safe') + '/reservations'], ['DELETE', m], ['DELETE', `${m}/${kept}`],
    ['POST', `${m}/${kept}/touch`], ['POST', `${m}/${kept}/release`]]) {
    expectError(await kiln.req(method, path, '{"messages": [ {'), 400);
    expectError(await kiln.req(method, path, '[1,2]'), 400);
  }
});

test('wrong types and missing fields are 400', async () => {
  const m = kiln.q('safe') + '/messages';
  for (const body of [{}, { messages: 'x' }, { messages: [] }, { messages: [{}] },
    { messages: [{ body: 5 }] }, { messages: [{ body: 'x', delay: 'soon' }] },
    { messages: [{ body: 'x', delay: 1.5 }] }, { messages: ['x'] }]) {
    expectError(await kiln.req('POST', m, body), 400);
  }
  const r = kiln.q('safe') + '/reservations';
  for (const body of [{ n: 'two' }, { n: 0 }, { n: 101 }, { timeout: 29 }, { timeout: 86401 },
    { wait: 31 }, { wait: -1 }, { delete: 'yes' }]) {
    expectError(await kiln.req('POST', r, body), 400);
  }
  for (const queue of [{ queue: { message_timeout: 'long' } }, { queue: { message_timeout: 10 } },
    { queue: { message_expiration: 99999999 } }, { queue: { type: 'weird' } }, { queue: 'x' },
    { queue: { dead_letter: { queue_name: 'safe' } } }]) {
    expectError(await kiln.req('PUT', kiln.q('safe'), queue), 400);
  }
  expectError(await kiln.req('POST', m, { messages: [{ body: 'x', delay: 604801 }] }), 400);
  expectError(await kiln.req('DELETE', m, { ids: [{ id: 5 }] }), 400);
  expectError(await kiln.req('DELETE', m, { ids: null }), 400);  // not a clear
  expectError(await kiln.req('DELETE', m, { ids: [{ reservation_id: 'ab' }] }), 400);  // no id
  // An admin token belongs to no project: asking for both is a mistake.
  expectError(await kiln.req('POST', '/kiln/v1/tokens', { project_id: kiln.project, admin: true }, { token: kiln.adminToken }), 400);
  // A dead letter change without queue_name keeps the queue it names.
  assert.equal((await kiln.req('PUT', kiln.q('dl-src'), { queue: { dead_letter: { queue_name: 'dl-dst', max_reservations: 3 } } })).status, 200);
  const dl = await kiln.req('PATCH', kiln.q('dl-src'), { queue: { dead_letter: { max_reservations: 5 } } });
  assert.equal(dl.status, 200, dl.text);
  assert.deepEqual(dl.body.queue.dead_letter, { queue_name: 'dl-dst', max_reservations: 5 });
  expectError(await kiln.req('GET', m + '?n=abc'), 400);
  // max_reservations alone, or nothing, on a queue without a dead letter queue.
  for (const dead of [{ max_reservations: 3 }, {}])
    expectError(await kiln.req('PUT', kiln.q('no-dl'), { queue: { dead_letter: dead } }), 400);
  // Queue names are UTF-8: %FF%FE and %FF%FD would both list as "\ufffd\ufffd".
  for (const name of ['%FF%FE', 'a%C0%AF'])
    expectError(await kiln.req('PUT', `/3/projects/${kiln.project}/queues/${name}`, {}), 400);
  // A subscriber url that nothing can be sent to is refused when it is set.
  for (const url of ['http://127.0.0.1:99999/x', 'http://exa mple.com/x', 'http://:80/x', 'https://h:/x', 'http://[::1/x'])
    expectError(await kiln.req('PUT', kiln.q('bad-sub'), { queue: { type: 'multicast', push: { subscribers: [{ name: 's', url }] } } }), 400);
  for (const url of ['http://127.0.0.1:8080/x', 'https://[::1]:8443/hook?a=b', 'http://my_host.local'])
    assert.equal((await kiln.req('PUT', kiln.q(`good-sub-${url.length}`), { queue: { type: 'multicast', push: { subscribers: [{ name: 's', url }] } } })).status, 200, url);
  // A subscriber name must read back as it was (in the Iron-Subscriber-Name
  // header, in JSON, in an acknowledgement): no control bytes, UTF-8 only.
  const sub = (name, extra = {}) => ({ queue: { type: 'multicast', push: { subscribers: [{ name, url: 'http://127.0.0.1:9/x', ...extra }] } } });
  for (const name of ['svc\nA', 'tab\there', 'del\u007f'])
    expectError(await kiln.req('PUT', kiln.q('bad-sub-name'), sub(name)), 400);
  const [head, tail] = JSON.stringify(sub('X')).split('"X"');
  const notUtf8 = Buffer.concat([Buffer.from(head + '"'), Buffer.from([0xff, 0xfe]), Buffer.from('"' + tail)]);
  expectError(await kiln.req('PUT', kiln.q('bad-sub-name'), notUtf8), 400);
  assert.equal((await kiln.req('PUT', kiln.q('good-sub-name'), sub('équipe 1'))).status, 200);
  // A NUL inside a header name or value is refused, not cut at.
  for (const headers of [{ 'X-Nul': 'before\u0000after' }, { 'X\u0000Evil': 'v' }])
    expectError(await kiln.req('PUT', kiln.q('bad-sub-header'), sub('s', { headers })), 400);
  for (const push_headers of [{ 'X-P': 'pre\u0000post' }, { 'X\u0000P': 'v' }])
    expectError(await kiln.req('POST', kiln.q('good-sub-name') + '/messages', { messages: [{ body: 'b', push_headers }] }), 400);
});

test('deeply nested JSON is 400 and the server keeps serving', async () => {
  const m = kiln.q('safe') + '/messages';
  const deep = '['.repeat(200000);
  expectError(await kiln.req('POST', m, deep), 400);
  expectError(await kiln.req('POST', m, `{"messages":[{"body":"x","push_headers":${'{"a":'.repeat(100)}1${'}'.repeat(100)}}]}`), 400);
  // Without a token too (a push acknowledgement takes none).
  expectError(await kiln.req('DELETE', `${m}/${kept}`, deep, { token: null }), 401);
  // 64 levels are still JSON it reads; brackets inside strings do not count.
  const r = await kiln.req('POST', m, { messages: [{ body: '['.repeat(1000) }] });
  assert.equal(r.status, 201, r.text);
});

test("Go's zero values mean the defaults: queue settings, reserve and touch timeouts", async () => {
  // iron_go3 sends QueueInfo's zeros (no omitempty) on create, and Pop sends timeout 0.
  const q = kiln.q('go-zeros');
  const made = await kiln.req('PUT', q, { queue: { name: 'go-zeros', size: 0, total_messages: 0, message_timeout: 0, message_expiration: 0 } });
  assert.equal(made.status, 200, made.text);
  assert.equal(made.body.queue.message_timeout, 60);
  assert.equal(made.body.queue.message_expiration, 604800);
  await kiln.req('POST', q + '/messages', { messages: [{ body: 'go' }] });
  const got = await kiln.req('POST', q + '/reservations', { n: 1, timeout: 0, wait: 0, delete: false });
  assert.equal(got.status, 200, got.text);
  const [msg] = got.body.messages;
  assert.equal(msg.body, 'go');
  const touched = await kiln.req('POST', `${q}/messages/${msg.id}/touch`, { reservation_id: msg.reservation_id, timeout: 0 });
  assert.equal(touched.status, 200, touched.text);
});

test('an oversized message is 413; an oversized request body is 413', async () => {
  const m = kiln.q('safe') + '/messages';
  expectError(await kiln.req('POST', m, { messages: [{ body: 'x'.repeat(64 * 1024 + 1) }] }), 413);
  // Each message within its limit, the request past --max-request-bytes (256 KiB here).
  const five = Array.from({ length: 5 }, () => ({ body: 'y'.repeat(60 * 1024) }));
  expectError(await kiln.req('POST', m, { messages: five }), 413);
  assert.equal((await kiln.req('POST', m, { messages: five.slice(0, 3) })).status, 201);  // 180 KiB: fine
  // Exactly at the limit is fine.
  assert.equal((await kiln.req('POST', m, { messages: [{ body: 'z'.repeat(64 * 1024) }] })).status, 201);
});

test('unknown paths are 404, wrong methods 405, other versions 404', async () => {
  expectError(await kiln.req('GET', '/nothing/here'), 404);
  expectError(await kiln.req('GET', `/1/projects/${kiln.project}/queues`), 404);
  expectError(await kiln.req('POST', kiln.q()), 405);
  expectError(await kiln.req('PUT', kiln.q('safe') + '/reservations'), 405);
  // The task webhook takes POST: a GET there is 405, not a task named "webhook".
  expectError(await kiln.req('GET', `/2/projects/${kiln.project}/tasks/webhook`), 405);
  expectError(await kiln.req('GET', `/2/projects/${kiln.project}/tasks/${'f'.repeat(24)}`), 404);
  expectError(await kiln.req('GET', `/3/projects/${kiln.project}/queues/%zz`), 400);
});

function raw(bytes, { end = true } = {}) {
  return new Promise((resolve) => {
    const s = net.connect(kiln.port, '127.0.0.1', () => { s.write(bytes); if (end) s.end(); });
    let buf = '';
    s.on('data', (d) => { buf += d; });
    s.on('close', () => resolve(buf));
    s.on('error', () => resolve(buf));
    setTimeout(() => { s.destroy(); resolve(buf); }, 8000);  // far past the 1 s read timeout
  });
}

test('garbage, oversized headers and half-closed connections', async () => {
  assert.match(await raw('this is not http\r\n\r\n'), /^HTTP\/1\.1 400/);
  const bigHeader = `GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20000)}\r\n\r\n`;
  assert.match(await raw(bigHeader), /^HTTP\/1\.1 431/);
  // A request cut off in the middle, then the client goes away.
  assert.equal(await raw(`POST ${kiln.q('safe')}/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{"mess`), '');
  // A body longer than the server accepts (by one byte), announced up front.
  assert.match(await raw(`POST ${kiln.q('safe')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\nContent-Length: 262145\r\n\r\n`), /^HTTP\/1\.1 413/);
  assert.equal((await kiln.req('GET', '/healthz')).status, 200);
});

test('a body over 64 KiB is read only from a token good for the path: the others are answered at the head', async () => {
  const post = (path, auth, length, extra = '') => raw(`POST ${path} HTTP/1.1\r\nHost: x\r\n${auth}${extra}` +
    `Content-Type: application/json\r\n${length === undefined ? 'Transfer-Encoding: chunked' : `Content-Length: ${length}`}\r\n\r\n`, { end: false });
  const m = kiln.q('safe') + '/messages';
  const started = Date.now();
  for (const answer of [
    await post(m, '', 200000),                                   // no token
    await post(m, 'Authorization: OAuth nope\r\n', 200000),     // a bad one
    await post(m, '', undefined),                                // chunked, of unknown length
    await post(`/3/projects/ffffffffffffffffffffffff/queues/q/messages`, `Authorization: OAuth ${kiln.token}\r\n`, 200000),
    await post(`${kiln.q('hook')}/webhook?oauth=nope`, '', 200000),
    await post('/kiln/v1/projects', `Authorization: OAuth ${kiln.token}\r\n`, 200000),  // a project token, an admin path
    await post('/nothing/here', '', 200000),
  ]) {
    assert.match(answer, /^HTTP\/1\.1 40[13] /, answer);
    assert.match(answer, /"msg":/, answer);
  }
  // Answered without waiting for bodies that never came (each would
  // otherwise be cut at the 1 s read timeout).
  assert.ok(Date.now() - started < 5000);
  // A good token still sends large bodies, by the header or in the query.
  const big = { messages: [{ body: 'b'.repeat(60000) }, { body: 'c'.repeat(60000) }] };
  assert.equal((await kiln.req('POST', m, big)).status, 201);
  assert.equal((await kiln.req('POST', `${kiln.q('hook')}/webhook?oauth=${kiln.token}`, 'h'.repeat(65000), { token: '' })).status, 201);
  // Small bodies are not checked before they are read, and get their 401 after.
  expectError(await kiln.req('POST', m, { messages: [{ body: 'small' }] }, { token: 'nope' }), 401);
});

test('empty lines before a request line are passed over (RFC 9112 2.2), but not for ever', async () => {
  assert.match(await raw('\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'), /^HTTP\/1\.1 200/);
  // A body followed by an extra CRLF, then the next request on the connection.
  const body = JSON.stringify({ messages: [{ body: 'crlf' }] });
  const got = await raw(`POST ${kiln.q('crlf')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}\r\n` +
    'GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const answers = got.split(/(?=HTTP\/1\.1 )/);
  assert.equal(answers.length, 2, got);
  assert.match(answers[0], /^HTTP\/1\.1 201/);
  assert.match(answers[1], /^HTTP\/1\.1 200/);
  // Only empty lines, read after read, each well within the read timeout:
  // the connection is closed all the same.
  const s = net.connect(kiln.port, '127.0.0.1');
  let closed = false;
  s.on('close', () => { closed = true; });
  s.on('error', () => {});
  for (let i = 0; i < 40 && !closed; i++) {
    s.write('\r\n');
    await sleep(100);
  }
  assert.ok(closed, 'a client sending only empty lines kept its connection');
  s.destroy();
});

test('a HEAD answer has no body, so the next answer on the connection stays whole', async () => {
  const got = await raw('HEAD /version HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const heads = got.split('\r\n\r\n');
  assert.match(heads[0], /^HTTP\/1\.1 200 .*\r\nContent-Length: [1-9]/s, got);  // a GET route's head
  assert.match(heads[1], /^HTTP\/1\.1 200 /, `the second answer starts right after the first head: ${JSON.stringify(got)}`);
});

test('on a kept-alive connection the next request, once begun, has the read timeout too', async () => {
  let sentPartAt = 0;
  const got = await new Promise((resolve) => {
    let buf = '';
    const s = net.connect(kiln.port, '127.0.0.1', () => s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (!sentPartAt) { sentPartAt = Date.now(); s.write('GET /heal'); }  // and no more
    });
    s.on('close', () => resolve(buf));
    setTimeout(() => { s.destroy(); resolve(buf); }, 8000);
  });
  assert.match(got, /^HTTP\/1\.1 200 /);
  const waited = Date.now() - sentPartAt;
  assert.ok(sentPartAt > 0 && waited >= 900 && waited < 7000, `closed ${waited} ms after the partial request (read timeout 1 s, idle 75 s)`);
});

test('stale and malformed reservation ids are 403, unknown message ids 404', async () => {
  const m = kiln.q('reserved') + '/messages';
  const id = (await kiln.req('POST', m, { messages: [{ body: 'r' }] })).body.ids[0];
  const r = (await kiln.req('POST', kiln.q('reserved') + '/reservations', { n: 1 })).body.messages[0];
  assert.equal(r.id, id);
  expectError(await kiln.req('DELETE', `${m}/${id}`, { reservation_id: 'garbage' }), 403);
  expectError(await kiln.req('POST', `${m}/${id}/touch`, { reservation_id: '0'.repeat(32) }), 403);
  // Without the reservation (Go's omitempty sends {}): 403, as a stale one is.
  expectError(await kiln.req('POST', `${m}/${id}/touch`, {}), 403);
  expectError(await kiln.req('POST', `${m}/${id}/release`, { reservation_id: '' }), 403);
  // Queue settings outside {"queue": ...} would be ignored: 400 instead.
  expectError(await kiln.req('PUT', kiln.q('unwrapped'), { message_timeout: 120 }), 400);
  expectError(await kiln.req('PATCH', kiln.q('reserved'), { message_timeout: 120 }), 400);
  const unreserved = (await kiln.req('POST', m, { messages: [{ body: 'peeked only' }] })).body.ids[0];
  expectError(await kiln.req('POST', `${m}/${unreserved}/touch`, {}), 403);
  expectError(await kiln.req('DELETE', `${m}/99999`, {}), 404);
  expectError(await kiln.req('POST', `${m}/99999/release`, { reservation_id: r.reservation_id }), 404);
  assert.equal((await kiln.req('DELETE', `${m}/${id}`, { reservation_id: r.reservation_id })).status, 200);
});

test('a slow client is cut off after the read timeout; others are served meanwhile', async () => {
  const t0 = Date.now();
  const slow = raw(`POST ${kiln.q('safe')}/messages HTTP/1.1\r\nHost: x\r\nContent-Le`, { end: false });
  assert.equal((await kiln.req('GET', '/healthz')).status, 200);
  const got = await slow;
  const waited = Date.now() - t0;
  assert.equal(got, '');
  assert.ok(waited >= 900 && waited < 7000, `closed after ${waited} ms`);
});

test('a large body sent slowly gets more than the read timeout: a second per 64 KiB', async () => {
  const body = JSON.stringify({ messages: Array.from({ length: 4 }, (_, i) => ({ body: String(i).repeat(50000) })) });
  const sock = net.connect(kiln.port, '127.0.0.1');
  let got = '';
  sock.on('data', (d) => { got += d; });
  await new Promise((res) => sock.once('connect', res));
  sock.write(`POST ${kiln.q('slow-upload')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n`);
  // ~200 KB over ~2 s: past the 1 s read timeout, within 1 s + 3 s.
  const step = Math.ceil(body.length / 8);
  for (let at = 0; at < body.length; at += step) {
    await sleep(250);
    sock.write(body.slice(at, at + step));
  }
  await eventually(async () => got.includes('\r\n\r\n'), 10000);
  sock.destroy();
  assert.match(got, /^HTTP\/1\.1 201/, got.slice(0, 200));
});

test('a chunked body sent slowly gets a second per 64 KiB that has come; a trickle is cut', async () => {
  const head = (q) => `POST ${kiln.q(q)}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${kiln.token}\r\n` +
    'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
  const chunk = (text) => `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
  const open = async () => {
    const sock = net.connect(kiln.port, '127.0.0.1');
    const state = { got: '', closed: false };
    sock.on('data', (d) => { state.got += d; });
    sock.on('close', () => { state.closed = true; });
    sock.on('error', () => {});
    await new Promise((res) => sock.once('connect', res));
    return { sock, state };
  };
  // ~200 KB over ~2 s: past the 1 s read timeout, within what has come allows.
  const body = JSON.stringify({ messages: Array.from({ length: 4 }, (_, i) => ({ body: String(i).repeat(50000) })) });
  const fast = await open();
  fast.sock.write(head('slow-chunked'));
  const step = Math.ceil(body.length / 8);
  for (let at = 0; at < body.length && !fast.state.closed; at += step) {
    await sleep(250);
    fast.sock.write(chunk(body.slice(at, at + step)));
  }
  fast.sock.write('0\r\n\r\n');
  await eventually(async () => fast.state.got.includes('\r\n\r\n') || fast.state.closed, 10000);
  fast.sock.destroy();
  assert.match(fast.state.got, /^HTTP\/1\.1 201/, fast.state.got.slice(0, 200));
  assert.equal((await kiln.req('GET', kiln.q('slow-chunked'))).body.queue.size, 4);
  // A few bytes every 300 ms earn nothing: closed unanswered after about 1 s.
  const slow = await open();
  slow.sock.write(head('trickle-chunked') + chunk('{"messages":'));
  const t0 = Date.now();
  for (let i = 0; i < 20 && !slow.state.closed; i++) {
    await sleep(300);
    slow.sock.write(chunk(' '));
  }
  const waited = Date.now() - t0;
  slow.sock.destroy();
  assert.ok(slow.state.closed, 'a trickling chunked body was not cut off');
  assert.equal(slow.state.got, '');
  assert.ok(waited < 5500, `closed after ${waited} ms`);
});

test('past --max-connections a new connection is closed at once; the open ones still work', async () => {
  const small = await new Kiln({ args: ['--max-connections', '3'] }).start();
  const open = () => new Promise((resolve, reject) => {
    const s = net.connect(small.port, '127.0.0.1', () => resolve(s));
    s.on('error', reject);
  });
  const closedWithoutAnswer = (s) => new Promise((resolve) => {
    let got = '';
    s.on('data', (d) => { got += d; });
    s.on('close', () => resolve(got));
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  });
  try {
    const held = [await open(), await open(), await open()];
    await new Promise((r) => setTimeout(r, 200));  // all three accepted
    assert.equal(await closedWithoutAnswer(await open()), '');
    // One of the three still gets its answer; once it goes, a new one works.
    const answer = await new Promise((resolve) => {
      held[0].once('data', (d) => resolve(d.toString()));
      held[0].write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    });
    assert.match(answer, /^HTTP\/1\.1 200/);
    held[0].destroy();
    await new Promise((r) => setTimeout(r, 200));
    const res = await fetch(`http://127.0.0.1:${small.port}/healthz`);
    assert.equal(res.status, 200);
    held.slice(1).forEach((s) => s.destroy());
  } finally {
    await small.stop();
    small.cleanup();
  }
});

test('past --max-connections-per-address one client is closed at once; other addresses are not', async () => {
  const small = await new Kiln({ args: ['--max-connections-per-address', '2'] }).start();
  const open = (localAddress) => new Promise((resolve, reject) => {
    const s = net.connect({ port: small.port, host: '127.0.0.1', localAddress }, () => resolve(s));
    s.on('error', reject);
  });
  const answer = (s) => new Promise((resolve) => {
    let got = '';
    s.on('data', (d) => { got += d; if (got.includes('\r\n\r\n')) resolve(got); });
    s.on('close', () => resolve(got));
    s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
  });
  try {
    const held = [await open('127.0.0.1'), await open('127.0.0.1')];
    await sleep(200);  // both accepted
    assert.equal(await answer(await open('127.0.0.1')), '');  // a third from that address
    const other = await open('127.0.0.2');
    assert.match(await answer(other), /^HTTP\/1\.1 200/);
    assert.match(await answer(held[0]), /^HTTP\/1\.1 200/);
    held[0].destroy();  // its slot is given back
    await sleep(200);
    assert.match(await answer(await open('127.0.0.1')), /^HTTP\/1\.1 200/);
    held[1].destroy();
    other.destroy();
  } finally {
    await small.stop();
    small.cleanup();
  }
});

// Started with the usual soft limit of open files far below what it serves
// (here 256; 1024 on most machines), the server raises it to the hard limit.
test('a server started under a low open-files soft limit serves 600 connections at once', async () => {
  const k = await new Kiln({ wrap: ['bash', '-c', 'ulimit -Sn 256 && exec "$@"', 'bash'] }).start();
  const socks = [];
  try {
    for (let i = 0; i < 600; i++) {
      socks.push(await new Promise((resolve, reject) => {
        const s = net.connect(k.port, '127.0.0.1', () => resolve(s));
        s.on('error', reject);
      }));
    }
    const answers = await Promise.all(socks.map((s) => new Promise((resolve) => {
      let got = '';
      const timer = setTimeout(() => resolve(got), 10000);
      s.on('data', (d) => {
        got += d;
        if (got.includes('\r\n\r\n')) { clearTimeout(timer); resolve(got); }
      });
      s.write('GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n');
    })));
    const answered = answers.filter((a) => /^HTTP\/1\.1 200/.test(a)).length;
    assert.equal(answered, 600);
  } finally {
    socks.forEach((s) => s.destroy());
    await k.stop();
    k.cleanup();
  }
});

test('a request under way when SIGTERM comes is answered, then the server exits 0', async () => {
  const k = await new Kiln().start();
  try {
    const s = net.connect(k.port, '127.0.0.1');
    await new Promise((r) => s.on('connect', r));
    let got = '';
    s.on('data', (d) => { got += d; });
    const closed = new Promise((r) => s.on('close', r));
    const body = JSON.stringify({ messages: [{ body: 'in flight at shutdown' }] });
    // The head goes now; the body after the signal.
    s.write(`POST ${k.q('late')}/messages HTTP/1.1\r\nHost: x\r\nAuthorization: OAuth ${k.token}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
    await sleep(200);
    const exited = k.stop();
    await sleep(200);
    s.write(body);
    await closed;
    assert.match(got, /^HTTP\/1\.1 201/, got);
    assert.match(got, /Connection: close/i);
    assert.equal((await exited).code, 0);
    // And the message it acknowledged is there after a restart.
    await k.start();
    const m = await k.req('GET', k.q('late') + '/messages');
    assert.equal(m.body.messages[0].body, 'in flight at shutdown');
  } finally {
    await k.stop();
    k.cleanup();
  }
});
