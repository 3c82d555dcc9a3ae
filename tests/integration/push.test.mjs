// Push queues against real HTTP subscriber servers: delivery, headers,
// retries, the error queue, 202 acknowledgement, unicast failover, fan-out,
// webhooks, validation, and deliveries that resume after kill -9.
import http from 'node:http';
import net from 'node:net';
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { Kiln, eventually, sleep } from '../support/kiln.mjs';
import { startSink } from '../support/sink.mjs';

const kiln = new Kiln();
const sinks = [];
before(() => kiln.start());
after(async () => {
  await Promise.all(sinks.map((s) => s.close()));
  const { code } = await kiln.stop();
  assert.equal(code, 0);
  kiln.cleanup();
});
async function sink(respond) { const s = await startSink(respond); sinks.push(s); return s; }

const put = (q, queue) => kiln.req('PUT', kiln.q(q), { queue });
const post = (q, messages) => kiln.req('POST', kiln.q(q) + '/messages', { messages });
// Messages ever posted to the queues, in all (total_messages).
const postedTo = async (...queues) => {
  let n = 0;
  for (const q of queues) n += (await kiln.req('GET', kiln.q(q))).body.queue.total_messages;
  return n;
};
const status = (q, id) => kiln.req('GET', `${kiln.q(q)}/messages/${id}/subscribers`);
async function finalStatus(q, id) {
  return eventually(async () => {
    const s = await status(q, id);
    return s.status === 200 && s.body.subscribers.every((x) => ['deleted', 'error'].includes(x.status)) && s.body;
  }, 30000);
}

test('multicast delivers the body and headers to every subscriber', async () => {
  const a = await sink(), b = await sink();
  const c = await put('mc', { type: 'multicast', push: { subscribers: [
    // Framing headers of a subscriber are dropped: they could smuggle a request.
    { name: 'a', url: a.url, headers: { 'X-From-Sub': 'sa', 'User-Agent': 'custom-agent',
      Host: 'evil.example', 'Content-Length': '3', 'Transfer-Encoding': 'chunked', Connection: 'close' } },
    { name: 'b', url: b.url }] } });
  assert.equal(c.status, 200, c.text);
  assert.equal(c.body.queue.type, 'multicast');
  assert.deepEqual(c.body.queue.push.subscribers.map((s) => s.name), ['a', 'b']);
  assert.equal(c.body.queue.push.retries, 3);
  assert.equal(c.body.queue.push.retries_delay, 60);

  const id = (await post('mc', [{ body: 'payload ✓', push_headers: { 'X-Msg': 'm1' } }])).body.ids[0];
  const [ra] = await a.received(1);
  const [rb] = await b.received(1);
  for (const r of [ra, rb]) {
    assert.equal(r.method, 'POST');
    assert.equal(r.body, 'payload ✓');
    assert.equal(r.headers['iron-message-id'], id);
    assert.match(r.headers['iron-reservation-id'], /^[0-9a-f]{32}$/);
    assert.equal(r.headers['x-msg'], 'm1');
    assert.equal(r.headers['content-type'], 'text/plain; encoding=utf-8');
    assert.match(r.headers['iron-subscriber-message-url'], new RegExp(`/messages/${id}\\?`));
    assert.equal(r.headers['kiln-hops'], '1');  // a posted message has made no hop yet
    assert.equal(r.headers['kiln-spread'], '1');  // neither subscriber names a queue: no copies
  }
  assert.equal(ra.headers['iron-subscriber-name'], 'a');
  assert.equal(rb.headers['iron-subscriber-name'], 'b');
  assert.equal(ra.headers['x-from-sub'], 'sa');
  assert.equal(ra.headers['user-agent'], 'custom-agent');
  assert.equal(ra.headers.host, new URL(a.url).host);
  assert.equal(ra.headers['transfer-encoding'], undefined);
  assert.equal(rb.headers['user-agent'], 'IronMQ Pusherd');
  const st = await finalStatus('mc', id);
  assert.deepEqual(st.subscribers.map((s) => [s.name, s.status, s.status_code, s.tries]),
    [['a', 'deleted', 200, 1], ['b', 'deleted', 200, 1]]);
  assert.equal((await kiln.req('GET', kiln.q('mc'))).body.queue.size, 0);
});

test('failures are retried after retries_delay; each subscriber on its own', async () => {
  const flaky = await sink((n) => (n === 1 ? 503 : 200));
  const good = await sink();
  await put('retry', { type: 'multicast', push: { retries: 2, retries_delay: 3,
    subscribers: [{ name: 'flaky', url: flaky.url }, { name: 'good', url: good.url }] } });
  const id = (await post('retry', [{ body: 'again' }])).body.ids[0];
  await flaky.received(1);
  const mid = await eventually(async () => {
    const s = await status('retry', id);
    return s.body.subscribers[0].status === 'retrying' && s.body;
  });
  assert.equal(mid.subscribers[0].status_code, 503);
  assert.equal(mid.subscribers[0].retries_remaining, 1);
  const [first, second] = await flaky.received(2);
  const gap = second.at - first.at;
  assert.ok(gap >= 2900 && gap < 6000, `retry after ${gap} ms`);
  assert.equal(good.requests.length, 1, 'the good subscriber is not retried');
  const st = await finalStatus('retry', id);
  assert.deepEqual(st.subscribers.map((s) => [s.status, s.tries]), [['deleted', 2], ['deleted', 1]]);
});

test('after the last retry the message goes to the error queue', async () => {
  const bad = await sink(() => 500);
  const refused = 'http://who:secret@127.0.0.1:9/never';
  await put('doomed', { type: 'multicast', push: { retries: 1, retries_delay: 3, error_queue: 'doomed-errors',
    subscribers: [{ name: 'bad', url: bad.url }, { name: 'gone', url: refused }] } });
  const id = (await post('doomed', [{ body: 'lost cause', push_headers: { 'X-Trace': 't1' } }])).body.ids[0];
  await bad.received(2);
  const st = await finalStatus('doomed', id);
  assert.deepEqual(st.subscribers.map((s) => [s.status, s.tries]), [['error', 2], ['error', 2]]);
  assert.equal(st.subscribers[1].status_code, 0);
  assert.ok(st.subscribers[1].msg, 'a connection error has a message');
  const err = await eventually(async () => {
    const r = await kiln.req('GET', kiln.q('doomed-errors') + '/messages?n=5');
    return r.status === 200 && r.body.messages.length === 1 && r.body.messages[0];
  });
  const e = JSON.parse(err.body);
  assert.equal(e.source_msg_id, id);
  assert.equal(e.body, 'lost cause');
  assert.deepEqual(e.headers, { 'X-Trace': 't1' });
  // The report leaves the queue: the URL's secret stays behind.
  assert.deepEqual(e.subscribers.map((s) => [s.name, s.url, s.code]),
    [['bad', bad.url, 500], ['gone', 'http://who:***@127.0.0.1:9/never', 0]]);
  for (const s of e.subscribers) assert.equal(typeof s.msg, 'string');
});

test('202 holds the delivery until the subscriber acknowledges it, without a token', async () => {
  const later = await sink(() => 202);
  await put('slowwork', { type: 'multicast', push: { subscribers: [{ name: 'w', url: later.url }] } });
  const id = (await post('slowwork', [{ body: 'long job' }])).body.ids[0];
  const [r] = await later.received(1);
  await eventually(async () => (await status('slowwork', id)).body.subscribers[0].status === 'reserved');
  const ackUrl = new URL(r.headers['iron-subscriber-message-url']);
  // A wrong reservation is refused.
  const bad = await fetch(ackUrl.origin + ackUrl.pathname + '?subscriber_name=w&reservation_id=' + '0'.repeat(32), { method: 'DELETE' });
  assert.equal(bad.status, 401); // without a token a failure tells nothing more
  const ack = await fetch(ackUrl, { method: 'DELETE' });
  assert.equal(ack.status, 200);
  const st = await finalStatus('slowwork', id);
  assert.equal(st.subscribers[0].status, 'deleted');
  assert.equal(later.requests.length, 1);
});

test('202 can also be acknowledged by DELETE with reservation_id and subscriber_name', async () => {
  const later = await sink(() => 202);
  await put('ackbody', { type: 'unicast', push: { subscribers: [{ name: 'w', url: later.url }] } });
  const id = (await post('ackbody', [{ body: 'x' }])).body.ids[0];
  const [r] = await later.received(1);
  await eventually(async () => (await status('ackbody', id)).body.subscribers[0].status === 'reserved');
  const del = await kiln.req('DELETE', `${kiln.q('ackbody')}/messages/${id}`,
    { reservation_id: r.headers['iron-reservation-id'], subscriber_name: 'w' });
  assert.deepEqual([del.status, del.body], [200, { msg: 'Deleted' }]);
  assert.equal((await finalStatus('ackbody', id)).subscribers[0].status, 'deleted');
});

test('unicast tries the next subscriber at once and stops at the first success', async () => {
  const down = await sink(() => 500);
  const up = await sink();
  const spare = await sink();
  await put('uni', { type: 'unicast', push: { subscribers: [
    { name: 'down', url: down.url }, { name: 'up', url: up.url }, { name: 'spare', url: spare.url }] } });
  const id = (await post('uni', [{ body: 'one of you' }])).body.ids[0];
  const [r] = await up.received(1);
  assert.equal(r.body, 'one of you');
  assert.ok(r.at - down.requests[0].at < 2000, 'failover is immediate');
  // Done once one subscriber has it: the ones tried keep the status they
  // had; the one never needed is not listed (it would be "queued" for ever).
  const st = await eventually(async () => {
    const r = await status('uni', id);
    return r.body.subscribers?.[1]?.status === 'deleted' && r.body;
  });
  assert.deepEqual(st.subscribers.map((s) => [s.name, s.status, s.tries]), [['down', 'retrying', 1], ['up', 'deleted', 1]]);
  await sleep(200);
  assert.equal(spare.requests.length, 0);
});

test('ironmq:// subscribers fan out into other queues of this server', async () => {
  await put('fan', { type: 'multicast', push: { subscribers: [
    { name: 'copy1', url: 'ironmq:///fan-copy-1' },
    { name: 'copy2', url: `ironmq://${kiln.project}:${kiln.token}@127.0.0.1:${kiln.port}/fan-copy-2` },
    // "localhost" is not how this server names itself: this one goes over HTTP.
    { name: 'copy3', url: `ironmq://${kiln.project}:${kiln.token}@localhost:${kiln.port}/fan-copy-3` }] } });
  const id = (await post('fan', [{ body: 'everywhere' }])).body.ids[0];
  for (const q of ['fan-copy-1', 'fan-copy-2', 'fan-copy-3']) {
    const m = await eventually(async () => {
      const r = await kiln.req('GET', kiln.q(q) + '/messages');
      return r.status === 200 && r.body.messages[0];
    });
    assert.equal(m.body, 'everywhere');
  }
  assert.deepEqual((await finalStatus('fan', id)).subscribers.map((s) => [s.status, s.status_code]),
    [['deleted', 201], ['deleted', 201], ['deleted', 201]]);
});

test("ironmq:// into another project needs that project's token, not an admin token", async () => {
  const created = await kiln.req('POST', '/kiln/v1/projects', { name: 'fan-target' }, { token: kiln.adminToken });
  assert.equal(created.status, 201, created.text);
  const other = created.body.project.id, otherToken = created.body.token.token;
  const url = (token) => `ironmq://${other}:${token}@127.0.0.1:${kiln.port}/inbox`;
  await put('cross', { type: 'multicast', push: { retries: 0, subscribers: [
    { name: 'own', url: url(otherToken) }, { name: 'admin', url: url(kiln.adminToken) }] } });
  const id = (await post('cross', [{ body: 'to the other project' }])).body.ids[0];
  const st = await finalStatus('cross', id);
  assert.deepEqual(st.subscribers.map((s) => [s.name, s.status, s.status_code]),
    [['own', 'deleted', 201], ['admin', 'error', 401]]);
  const got = await kiln.req('GET', `/3/projects/${other}/queues/inbox/messages?n=5`, undefined, { token: otherToken });
  assert.deepEqual(got.body.messages.map((m) => m.body), ['to the other project']);  // once: by its own token
});

test('queues that push into each other stop after ten hops; a queue cannot push to itself', async () => {
  const self = await put('narcissus', { type: 'multicast', push: { subscribers: [{ name: 'me', url: 'ironmq:///narcissus' }] } });
  assert.equal(self.status, 400);
  assert.match(self.body.msg, /cannot push to itself/);
  for (const [q, to] of [['loop-a', 'loop-b'], ['loop-b', 'loop-a']]) {
    const r = await put(q, { type: 'multicast', push: { retries: 0, subscribers: [{ name: 'next', url: `ironmq:///${to}` }] } });
    assert.equal(r.status, 200, r.text);
  }
  await post('loop-a', [{ body: 'round and round' }]);
  const total = () => postedTo('loop-a', 'loop-b');
  await eventually(async () => (await total()) === 11);  // the post and ten forwards
  await sleep(1000);
  assert.equal(await total(), 11);
});

test('multicast queues that copy into each other stop at 1,000 copies of a message', async () => {
  // Four subscribers each way: without a bound, 4^10 (about a million)
  // messages of one post within the ten hops.
  for (const [q, to] of [['fan-a', 'fan-b'], ['fan-b', 'fan-a']]) {
    const subscribers = [1, 2, 3, 4].map((i) => ({ name: `copy${i}`, url: `ironmq:///${to}` }));
    const r = await put(q, { type: 'multicast', push: { retries: 0, subscribers } });
    assert.equal(r.status, 200, r.text);
  }
  await post('fan-a', [{ body: 'copy me' }]);
  const total = () => postedTo('fan-a', 'fan-b');
  // 1 + 4 + 16 + 64 + 256; the next 1,024 copies are refused.
  await eventually(async () => (await total()) === 341);
  await sleep(1500);
  assert.equal(await total(), 341);
  // Error reports are copies too: two subscribers into the other queue, one
  // that always fails, and each queue the other's error queue make 3^n
  // messages on level n, until a copy of spread 3^7 = 2187 is refused.
  for (const [q, to] of [['rep-a', 'rep-b'], ['rep-b', 'rep-a']]) {
    const subscribers = [{ name: 'c1', url: `ironmq:///${to}` }, { name: 'c2', url: `ironmq:///${to}` },
      { name: 'down', url: 'http://127.0.0.1:9/down' }];
    const r = await put(q, { type: 'multicast', push: { retries: 0, error_queue: to, subscribers } });
    assert.equal(r.status, 200, r.text);
  }
  await post('rep-a', [{ body: 'report me' }]);
  const reports = () => postedTo('rep-a', 'rep-b');
  await eventually(async () => (await reports()) === 1093, 60000);  // 1 + 3 + ... + 729
  await sleep(1500);
  assert.equal(await reports(), 1093);
  // From another server, the same bound; a queue's width is bounded too.
  const far = await kiln.req('POST', kiln.q('fan-c') + '/messages', { messages: [{ body: 'x' }] },
    { headers: { 'Kiln-Spread': '1001' } });
  assert.equal(far.status, 400);
  assert.match(far.body.msg, /copied more than 1000 times/);
  const own = await post('fan-c', [{ body: 'w', push_headers: { 'Kiln-Spread': '1' } }]);
  assert.equal(own.status, 400);
  const wide = Array.from({ length: 101 }, (_, i) => ({ name: `s${i}`, url: 'http://127.0.0.1:9/x' }));
  const r = await put('fan-d', { type: 'multicast', push: { subscribers: wide } });
  assert.equal(r.status, 400);
  assert.match(r.body.msg, /at most 100 subscribers/);
  assert.equal((await put('fan-d', { type: 'multicast', push: { subscribers: wide.slice(1) } })).status, 200);
});

test('queues of servers that push into each other over HTTP stop after ten hops too', async () => {
  // Each hop leaves over HTTP, as to another server: a webhook url one way,
  // an ironmq:// url that does not name this server the other way.
  const hook = `${kiln.base}${kiln.q('wire-b')}/webhook?oauth=${kiln.token}`;
  const back = `ironmq://${kiln.project}:${kiln.token}@localhost:${kiln.port}/wire-a`;
  for (const [q, url] of [['wire-a', hook], ['wire-b', back]]) {
    const r = await put(q, { type: 'multicast', push: { retries: 0, subscribers: [{ name: 'next', url }] } });
    assert.equal(r.status, 200, r.text);
  }
  await post('wire-a', [{ body: 'across the wire' }]);
  const total = () => postedTo('wire-a', 'wire-b');
  await eventually(async () => (await total()) === 11);  // the post and ten forwards
  await sleep(1500);
  assert.equal(await total(), 11);
  // A post that says it has come far enough is refused; one that says
  // nothing sensible starts at zero.
  const far = await kiln.req('POST', kiln.q('wire-c') + '/messages', { messages: [{ body: 'x' }] },
    { headers: { 'Kiln-Hops': '11' } });
  assert.equal(far.status, 400);
  assert.match(far.body.msg, /more than 10/);
  const odd = await kiln.req('POST', kiln.q('wire-c') + '/webhook', 'y', { headers: { 'Kiln-Hops': 'lots' } });
  assert.equal(odd.status, 201, odd.text);
  const huge = await kiln.req('POST', kiln.q('wire-c') + '/webhook', 'z', { headers: { 'Kiln-Hops': '9'.repeat(30) } });
  assert.equal(huge.status, 400, huge.text);
  // A message cannot set its own hops through push headers.
  const own = await post('wire-a', [{ body: 'w', push_headers: { 'kiln-hops': '0' } }]);
  assert.equal(own.status, 400);
  assert.match(own.body.msg, /Push header not allowed/);
});

test('subscribers: add or update, replace, remove; rules of push queues', async () => {
  const s1 = await sink();
  await put('subs', { type: 'multicast', push: { subscribers: [{ name: 'one', url: s1.url }] } });
  const base = kiln.q('subs') + '/subscribers';
  assert.deepEqual((await kiln.req('POST', base, { subscribers: [{ name: 'two', url: 'http://127.0.0.1:9/x' }] })).body, { msg: 'Updated' });
  assert.deepEqual((await kiln.req('POST', base, { subscribers: [{ name: 'one', url: s1.url + '?v=2' }] })).body, { msg: 'Updated' });
  let q = (await kiln.req('GET', kiln.q('subs'))).body.queue;
  assert.deepEqual(q.push.subscribers.map((s) => [s.name, s.url]), [['one', s1.url + '?v=2'], ['two', 'http://127.0.0.1:9/x']]);
  assert.equal((await kiln.req('DELETE', base, { subscribers: [{ name: 'two' }] })).status, 200);
  assert.equal((await kiln.req('DELETE', base, { subscribers: [{ name: 'nobody' }] })).status, 404);
  assert.equal((await kiln.req('DELETE', base, { subscribers: [{ name: 'one' }] })).status, 400, 'the last one stays');
  assert.equal((await kiln.req('PUT', base, { subscribers: [{ name: 'three', url: s1.url }] })).status, 200);
  q = (await kiln.req('GET', kiln.q('subs'))).body.queue;
  assert.deepEqual(q.push.subscribers.map((s) => s.name), ['three']);

  const bad = async (path, method, body) => {
    const r = await kiln.req(method, path, body);
    assert.equal(r.status, 400, `${method} ${path} ${JSON.stringify(body)} -> ${r.text}`);
    assert.ok(r.body.msg);
  };
  await bad(kiln.q('nosubs'), 'PUT', { queue: { type: 'multicast' } });
  for (const url of ['ironmq://', 'ironmq:///a/b', 'ironmq://nope:tok@127.0.0.1/q', 'ironmq://h st/q'])
    await bad(kiln.q('badfan'), 'PUT', { queue: { type: 'multicast', push: { subscribers: [{ name: 'x', url }] } } });
  await bad(kiln.q('subs'), 'PATCH', { queue: { type: 'pull' } });
  await bad(kiln.q('subs'), 'PATCH', { queue: { dead_letter: { queue_name: 'x' } } });
  await bad(kiln.q('pullq'), 'PUT', { queue: { push: { retries: 2 }, type: 'pull' } });
  await bad(kiln.q('badurl'), 'PUT', { queue: { push: { subscribers: [{ name: 'x', url: 'ftp://x' }] } } });
  await bad(kiln.q('dupe'), 'PUT', { queue: { push: { subscribers: [{ name: 'x', url: s1.url }, { name: 'x', url: s1.url }] } } });
  await bad(kiln.q('retries'), 'PUT', { queue: { push: { retries: 101, subscribers: [{ name: 'x', url: s1.url }] } } });
  await bad(kiln.q('delay'), 'PUT', { queue: { push: { retries_delay: 2, subscribers: [{ name: 'x', url: s1.url }] } } });
  await put('plain', {});
  await bad(kiln.q('plain') + '/subscribers', 'POST', { subscribers: [{ name: 'x', url: s1.url }] });
  await bad(kiln.q('subs') + '/messages', 'POST', { messages: [{ body: 'x', push_headers: { 'Content-Type': 'x' } }] });
  await bad(kiln.q('subs') + '/messages', 'POST', { messages: [{ body: 'x', push_headers: { a: '1', b: '1', c: '1', d: '1', e: '1', f: '1' } }] });
  // Header names must be tokens: "Transfer-Encoding " would pass the
  // framing filter and mean Transfer-Encoding to a lenient receiver.
  for (const name of ['Transfer-Encoding ', 'Content-Length\t', 'X Y', ''])
    await bad(kiln.q('hdr'), 'PUT', { queue: { push: { subscribers: [{ name: 'x', url: s1.url, headers: { [name]: '1' } }] } } });
  await bad(kiln.q('subs') + '/messages', 'POST', { messages: [{ body: 'x', push_headers: { 'Transfer-Encoding\t': 'chunked' } }] });
  // push given without a type makes a multicast queue.
  const implicit = await put('implicit', { push: { subscribers: [{ name: 'x', url: s1.url }] } });
  assert.equal(implicit.body.queue.type, 'multicast');
});

test('1xx answers before the final one are skipped, on a kept-alive connection too', async () => {
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => {
      res.writeEarlyHints({ link: '</style.css>; rel=preload' });  // 103
      res.writeHead(++n === 1 ? 200 : 500);
      res.end('done');
    });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${server.address().port}/hook`;
    await put('early', { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url }] } });
    const ok = (await post('early', [{ body: 'one' }])).body.ids[0];
    const a = await finalStatus('early', ok);
    assert.deepEqual([a.subscribers[0].status, a.subscribers[0].status_code], ['deleted', 200]);
    // The second answer is a 500 after its own 103: read as 500, not as a
    // leftover of the first exchange.
    const bad = (await post('early', [{ body: 'two' }])).body.ids[0];
    const b = await finalStatus('early', bad);
    assert.deepEqual([b.subscribers[0].status, b.subscribers[0].status_code], ['error', 500]);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('an answer whose body is too big to keep still counts by its status', async () => {
  const big = Buffer.alloc(3 << 20, 'z');  // past the 1 MiB the client keeps of an answer
  let n = 0;
  const server = http.createServer((req, res) => {
    req.resume();
    req.on('end', () => { res.writeHead(++n === 1 ? 200 : 503); res.end(big); });
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  try {
    const url = `http://127.0.0.1:${server.address().port}/hook`;
    await put('bigans', { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url }] } });
    const ok = (await post('bigans', [{ body: 'one' }])).body.ids[0];
    const a = await finalStatus('bigans', ok);
    assert.deepEqual([a.subscribers[0].status, a.subscribers[0].status_code, a.subscribers[0].tries], ['deleted', 200, 1]);
    // The next one goes on a fresh connection and reads its own answer.
    const bad = (await post('bigans', [{ body: 'two' }])).body.ids[0];
    const b = await finalStatus('bigans', bad);
    assert.deepEqual([b.subscribers[0].status, b.subscribers[0].status_code], ['error', 503]);
    assert.equal(n, 2);
  } finally {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  }
});

test('webhook: any body and content type becomes a message; X-Subscribers-* become push headers', async () => {
  const s = await sink();
  await put('hooked', { type: 'multicast', push: { subscribers: [{ name: 'x', url: s.url }] } });
  const bytes = Buffer.from([0, 1, 2, 250, 251, 252, 10, 13]).toString('latin1');
  const r = await fetch(`${kiln.base}${kiln.q('hooked')}/webhook?oauth=${kiln.token}`, {
    method: 'POST', body: 'a=1&b=two', headers: { 'content-type': 'application/x-www-form-urlencoded', 'X-Subscribers-Trace': 'abc', 'X-Subscribers-Content-Type': 'dropped' } });
  assert.equal(r.status, 201);
  const [got] = await s.received(1);
  assert.equal(got.body, 'a=1&b=two');
  assert.equal(got.headers.trace, 'abc');
  assert.equal(got.headers['content-type'], 'text/plain; encoding=utf-8');
  // Pull queue webhook, binary body and a body of 60 KiB.
  const big = 'x'.repeat(60 * 1024);
  for (const body of [bytes, big, '']) {
    const w = await fetch(`${kiln.base}${kiln.q('hook-pull')}/webhook?oauth=${kiln.token}`, { method: 'POST', body, headers: { 'content-type': 'application/octet-stream' } });
    assert.equal(w.status, 201);
  }
  const got2 = (await kiln.req('POST', kiln.q('hook-pull') + '/reservations', { n: 3, delete: true })).body.messages;
  assert.deepEqual(got2.map((m) => m.body.length), [bytes.length, big.length, 0]);
  const tooBig = await fetch(`${kiln.base}${kiln.q('hook-pull')}/webhook?oauth=${kiln.token}`, { method: 'POST', body: 'y'.repeat(64 * 1024 + 1) });
  assert.equal(tooBig.status, 413);
  const noToken = await fetch(`${kiln.base}${kiln.q('hook-pull')}/webhook`, { method: 'POST', body: 'x' });
  assert.equal(noToken.status, 401);
  // A sender that adds its own Authorization header: the URL's token still counts.
  const signed = await fetch(`${kiln.base}${kiln.q('hook-pull')}/webhook?oauth=${kiln.token}`,
    { method: 'POST', body: 'signed', headers: { authorization: 'Bearer not-a-kiln-token' } });
  assert.equal(signed.status, 201);

  // Bytes that are not UTF-8: a pull queue's messages are JSON strings, so
  // it refuses them (and is not created); a push queue delivers them as they are.
  const binary = Buffer.from([0xff, 0xfe, 0x41, 0x00, 0xc3]);
  const pull = await fetch(`${kiln.base}${kiln.q('hook-binary')}/webhook?oauth=${kiln.token}`, { method: 'POST', body: binary });
  assert.equal(pull.status, 400);
  assert.match((await pull.json()).msg, /not valid UTF-8/);
  assert.equal((await kiln.req('GET', kiln.q('hook-binary'))).status, 404);
  const inJson = await kiln.req('POST', kiln.q('hook-pull') + '/messages',
    Buffer.concat([Buffer.from('{"messages":[{"body":"'), Buffer.from([0xff, 0x41]), Buffer.from('"}]}')]));
  assert.equal(inJson.status, 400);
  const push = await fetch(`${kiln.base}${kiln.q('hooked')}/webhook?oauth=${kiln.token}`, { method: 'POST', body: binary });
  assert.equal(push.status, 201);
  const [, raw] = await s.received(2);
  assert.deepEqual([...raw.raw], [...binary]);
});

test('a kept-alive connection that sent more than its answer is not used again; bad ports fail', async () => {
  let conns = 0, requests = 0;
  const server = net.createServer((sock) => {
    conns++;
    let seen = 0, buf = '';
    sock.on('data', (d) => {
      buf += d.toString('latin1');
      const n = buf.split('POST ').length - 1;
      for (; seen < n; seen++) {
        requests++;
        const ok = 'HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n';
        sock.write(requests === 1 ? ok + ok : ok);  // the first answer comes twice
      }
    });
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  try {
    const url = `http://127.0.0.1:${server.address().port}/`;
    await put('stray', { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url }] } });
    for (const body of ['one', 'two']) {
      const id = (await post('stray', [{ body }])).body.ids[0];
      assert.equal((await finalStatus('stray', id)).subscribers[0].status, 'deleted');
    }
    assert.equal(requests, 2);
    assert.equal(conns, 2, 'the second delivery took a new connection, not the stray answer');
  } finally {
    server.close();
  }
  // A port past 65535 is refused when the subscriber is set, not wrapped
  // around to another one.
  const bad = await kiln.req('PUT', kiln.q('badport'), { queue: { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url: 'http://127.0.0.1:65616/' }] } } });
  assert.equal(bad.status, 400, bad.text);
  assert.match(bad.body.msg, /port 1-65535/);
});

test('deliveries resume after kill -9', async () => {
  const k2 = await new Kiln().start();
  try {
    const s = await startSink((n) => (n === 1 ? 500 : 200));
    sinks.push(s);
    await k2.req('PUT', k2.q('durable-push'), { queue: { type: 'multicast', push: { retries: 3, retries_delay: 3, subscribers: [{ name: 'x', url: s.url }] } } });
    const id = (await k2.req('POST', k2.q('durable-push') + '/messages', { messages: [{ body: 'survivor' }] })).body.ids[0];
    const [first] = await s.received(1);
    await sleep(300); // let the failed try be recorded
    await k2.stop('SIGKILL');
    await k2.start();
    const [, again] = await s.received(2);
    // The recorded try survived: the retry waits out its delay, and counts.
    assert.ok(again.at - first.at >= 2500, `retried after ${again.at - first.at} ms`);
    assert.equal(again.body, 'survivor');
    assert.equal(again.headers['iron-message-id'], id);
    const st = await eventually(async () => {
      const r = await k2.req('GET', `${k2.q('durable-push')}/messages/${id}/subscribers`);
      return r.status === 200 && r.body.subscribers[0].status === 'deleted' && r.body;
    });
    assert.equal(st.subscribers[0].tries, 2);
  } finally {
    await k2.stop();
    k2.cleanup();
  }
});

test('alerts: a growing queue posts notices; snooze, desc, replace and remove', async () => {
  const made = await kiln.req('PATCH', kiln.q('watched'), {}).then(async (r) => (r.status === 404 ? put('watched', {}) : r));
  assert.equal(made.status, 200);
  const add = await kiln.req('PATCH', kiln.q('watched'), { queue: { alerts: [
    { type: 'fixed', direction: '', trigger: 3, queue: 'watched-alerts' }, // Go's unset direction: asc
    { type: 'progressive', direction: 'asc', trigger: 2, queue: 'watched-progress', snooze: 0 },
    { type: 'fixed', direction: 'desc', trigger: 1, queue: 'watched-drained' }] } });
  assert.equal(add.status, 200, add.text);
  assert.equal(add.body.queue.alerts.length, 3);
  const dup = await kiln.req('PATCH', kiln.q('watched'), { queue: { alerts: [{ type: 'fixed', direction: 'asc', trigger: 3, queue: 'x' }] } });
  assert.deepEqual([dup.status, dup.body.msg], [400, 'At least one new alert duplicates current queue alerts.']);
  // PUT is idempotent: a set-up script that sends the same alerts again changes nothing.
  for (let i = 0; i < 2; i++) {
    const again = await kiln.req('PUT', kiln.q('put-alerts'), { queue: { alerts: [{ type: 'fixed', trigger: 3, queue: 'x' }] } });
    assert.equal(again.status, 200, again.text);
    assert.equal(again.body.queue.alerts.length, 1);
  }
  // IronMQ v2's add: POST /alerts.
  const posted = await kiln.req('POST', `${kiln.q('put-alerts')}/alerts`, { alerts: [{ type: 'progressive', trigger: 10, queue: 'x' }] });
  assert.equal(posted.status, 200, posted.text);
  assert.equal(posted.body.queue.alerts.length, 2);
  // The Ruby client's add_alerts: PATCH /alerts, either shape.
  for (const [i, body] of [[3, { alerts: [{ type: 'fixed', trigger: 20, queue: 'x' }] }],
    [4, { queue: { alerts: [{ type: 'fixed', trigger: 30, queue: 'x' }] } }]]) {
    const patched = await kiln.req('PATCH', `${kiln.q('put-alerts')}/alerts`, body);
    assert.equal(patched.status, 200, patched.text);
    assert.equal(patched.body.queue.alerts.length, i);
  }
  assert.equal((await kiln.req('PATCH', `${kiln.q('put-alerts')}/alerts`, { queue: 'x' })).status, 400);

  for (let i = 0; i < 5; i++) await post('watched', [{ body: `m${i}` }]);
  const notices = async (q, n) => eventually(async () => {
    const r = await kiln.req('GET', kiln.q(q) + '/messages?n=10');
    return r.status === 200 && r.body.messages.length >= n && r.body.messages.map((m) => JSON.parse(m.body));
  });
  const fixed = await notices('watched-alerts', 1);
  assert.equal(fixed.length, 1);
  assert.equal(fixed[0].source_queue, 'watched');
  assert.equal(fixed[0].queue_size, 3);
  assert.equal(fixed[0].alert_type, 'fixed');
  assert.equal(fixed[0].alert_direction, 'asc');
  assert.equal(fixed[0].alert_trigger, 3);
  assert.match(fixed[0].alert_id, /^[0-9a-f]{24}$/);
  assert.match(fixed[0].created_at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);
  const prog = await notices('watched-progress', 2);
  assert.deepEqual(prog.map((p) => p.queue_size), [2, 4]);

  await kiln.req('DELETE', kiln.q('watched') + '/messages', {});
  const drained = await notices('watched-drained', 1);
  assert.equal(drained[0].queue_size, 0);

  const q = (await kiln.req('GET', kiln.q('watched'))).body.queue;
  const one = await kiln.req('DELETE', `${kiln.q('watched')}/alerts/${q.alerts[0].id}`, {});
  assert.equal(one.body.queue.alerts.length, 2);
  const some = await kiln.req('DELETE', `${kiln.q('watched')}/alerts`, { alerts: [{ id: q.alerts[1].id }] });
  assert.equal(some.body.queue.alerts.length, 1);
  assert.equal((await kiln.req('DELETE', `${kiln.q('watched')}/alerts/nope`, {})).status, 404);
  const cleared = await kiln.req('PUT', `${kiln.q('watched')}/alerts`, { alerts: [] });
  assert.equal(cleared.body.queue.alerts, undefined);

  const s = await sink();
  await put('push-no-alerts', { type: 'multicast', push: { subscribers: [{ name: 'x', url: s.url }] } });
  const refused = await kiln.req('PATCH', kiln.q('push-no-alerts'), { queue: { alerts: [{ type: 'fixed', trigger: 1, queue: 'a' }] } });
  assert.deepEqual([refused.status, refused.body.msg], [400, 'Push queues do not support alerts.']);
  const six = await kiln.req('PUT', `${kiln.q('watched')}/alerts`, { alerts: [1, 2, 3, 4, 5, 6].map((t) => ({ type: 'fixed', trigger: t, queue: 'a' })) });
  assert.equal(six.status, 400);
});

test('an alert feeding a push queue: a growing queue triggers a subscriber', async () => {
  const s = await sink();
  await put('grow-hook', { type: 'multicast', push: { subscribers: [{ name: 'scaler', url: s.url }] } });
  await put('grow', { alerts: [{ type: 'fixed', direction: 'asc', trigger: 2, queue: 'grow-hook' }] });
  await post('grow', [{ body: 'a' }, { body: 'b' }]);
  const [r] = await s.received(1);
  const notice = JSON.parse(r.body);
  assert.equal(notice.source_queue, 'grow');
  assert.equal(notice.queue_size, 2);
});
