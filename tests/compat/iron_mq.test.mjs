// The official Node client iron_mq@0.9.3, unchanged, against a live Kiln:
// every pull-queue method it has (iron-api.md §2.5).
import test, { after, before } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { Kiln } from '../support/kiln.mjs';

const require = createRequire(import.meta.url);
const iron_mq = require('iron_mq');
assert.equal(require('iron_mq/package.json').version, '0.9.3');

const kiln = new Kiln();
let client;
before(async () => {
  await kiln.start();
  client = new iron_mq.Client({
    scheme: 'http', host: '127.0.0.1', port: kiln.port,
    project_id: kiln.project, token: kiln.token, queue_name: 'compat',
  });
});
after(async () => { await kiln.stop(); kiln.cleanup(); });

// The client calls some callbacks twice (cb(cb(err, body))): keep the first.
function call(fn) {
  return new Promise((resolve, reject) => {
    let done = false;
    fn((err, body) => {
      if (done) return;
      done = true;
      if (err) reject(err instanceof Error ? err : new Error(JSON.stringify(err)));
      else resolve(body);
    });
  });
}

test('create_queue, info, update, update_queue, queues, del_queue', async () => {
  const created = await call((cb) => client.create_queue('compat-a', { message_timeout: 90 }, cb));
  assert.equal(created.queue.name, 'compat-a');
  assert.equal(created.queue.message_timeout, 90);
  const q = client.queue('compat-a');
  const info = await call((cb) => q.info(cb));
  assert.equal(info.name, 'compat-a');
  assert.equal(info.size, 0);
  assert.equal(info.message_timeout, 90);
  const upd = await call((cb) => q.update({ message_expiration: 3600 }, cb));
  assert.equal(upd.queue.message_expiration, 3600);
  const upd2 = await call((cb) => client.update_queue('compat-a', { message_timeout: 45 }, cb));
  assert.equal(upd2.queue.message_timeout, 45);
  await call((cb) => client.create_queue('compat-b', {}, cb));
  const list = await call((cb) => client.queues({ prefix: 'compat-' }, cb));
  assert.deepEqual(list.map((x) => x.name), ['compat-a', 'compat-b']);
  const paged = await call((cb) => client.queues({ previous: 'compat-a', per_page: 1, prefix: 'compat-' }, cb));
  assert.deepEqual(paged.map((x) => x.name), ['compat-b']);
  const del = await call((cb) => q.del_queue(cb));
  assert.equal(del.msg, 'Deleted');
  await assert.rejects(call((cb) => q.info(cb)));
});

test('post one and many, reserve, get, get_n, peek, peek_n, msg_get', async () => {
  const q = client.queue('compat-msgs');
  const id = await call((cb) => q.post('first', cb));
  assert.match(id, /^\d+$/);
  const ids = await call((cb) => q.post(['second', { body: 'third' }, { body: 'delayed', delay: 60 }], cb));
  assert.equal(ids.length, 3);

  const peeked = await call((cb) => q.peek({}, cb));
  assert.equal(peeked.body, 'first');
  const peekedN = await call((cb) => q.peek_n({ n: 10 }, cb));
  assert.deepEqual(peekedN.map((m) => m.body), ['first', 'second', 'third']);

  const got = await call((cb) => q.msg_get(ids[0], cb));
  assert.equal(got.body, 'second');
  assert.equal(got.reserved_count, 0);

  const one = await call((cb) => q.reserve({}, cb));
  assert.equal(one.id, id);
  assert.equal(one.body, 'first');
  assert.ok(one.reservation_id);
  const two = await call((cb) => q.get_n({ n: 2, timeout: 30 }, cb));
  assert.deepEqual(two.map((m) => m.body), ['second', 'third']);
  const none = await call((cb) => q.get({}, cb));
  assert.equal(none, undefined);
  const alsoNone = await call((cb) => q.get_n({ n: 5, wait: 1 }, cb));
  assert.deepEqual(alsoNone, []);

  await call((cb) => q.del(one.id, { reservation_id: one.reservation_id }, cb));
  const res = await call((cb) => q.del_multiple({ reservation_ids: two }, cb));
  assert.equal(res.msg, 'Deleted');
  const info = await call((cb) => q.info(cb));
  assert.equal(info.size, 1); // the delayed one
  assert.equal(info.total_messages, 4);
});

test('msg_touch, msg_release, del with a stale reservation fails', async () => {
  const q = client.queue('compat-touch');
  await call((cb) => q.post('t', cb));
  const m = await call((cb) => q.reserve({ timeout: 30 }, cb));
  const touched = await call((cb) => q.msg_touch(m.id, m.reservation_id, { timeout: 60 }, cb));
  assert.ok(touched.reservation_id);
  assert.notEqual(touched.reservation_id, m.reservation_id);
  await assert.rejects(call((cb) => q.del(m.id, { reservation_id: m.reservation_id }, cb)));
  const released = await call((cb) => q.msg_release(m.id, touched.reservation_id, { delay: 0 }, cb));
  assert.equal(released.msg, 'Released');
  const again = await call((cb) => q.reserve({ n: 1 }, cb));
  assert.equal(again.id, m.id);
  assert.equal(again.reserved_count, 3);
});

test('reserve with delete, del_multiple by ids, clear', async () => {
  const q = client.queue('compat-clear');
  const ids = await call((cb) => q.post(['a', 'b', 'c', 'd'], cb));
  const taken = await call((cb) => q.reserve({ n: 1, delete: true }, cb));
  assert.equal(taken.body, 'a');
  await call((cb) => q.del_multiple({ ids: [ids[1]] }, cb));
  const left = await call((cb) => q.peek_n({ n: 10 }, cb));
  assert.deepEqual(left.map((m) => m.body), ['c', 'd']);
  const cleared = await call((cb) => q.clear(cb));
  assert.equal(cleared.msg, 'Cleared');
  assert.equal((await call((cb) => q.info(cb))).size, 0);
});

test('errors reach the client: missing queue, bad token', async () => {
  await assert.rejects(call((cb) => client.queue('compat-missing').reserve({}, cb)), /Queue not found/);
  const bad = new iron_mq.Client({ scheme: 'http', host: '127.0.0.1', port: kiln.port,
    project_id: kiln.project, token: 'wrong', queue_name: 'compat' });
  await assert.rejects(call((cb) => bad.queue('compat-msgs').post('x', cb)));
});

test('push queues: create_queue with subscribers, add/rpl/rm_subscribers, msg_push_statuses, del_msg_push_status', async () => {
  const { startSink } = await import('../support/sink.mjs');
  const s = await startSink((n) => (n === 1 ? 202 : 200));
  try {
    const created = await call((cb) => client.create_queue('compat-push', {
      type: 'multicast', push: { subscribers: [{ name: 'first', url: s.url }] } }, cb));
    assert.equal(created.queue.type, 'multicast');
    const q = client.queue('compat-push');
    assert.equal((await call((cb) => q.add_subscribers({ name: 'second', url: 'http://127.0.0.1:9/x' }, cb))).msg, 'Updated');
    assert.equal((await call((cb) => q.rm_subscribers({ name: 'second' }, cb))).msg, 'Updated');
    assert.equal((await call((cb) => q.rpl_subscribers([{ name: 'only', url: s.url }], cb))).msg, 'Updated');
    const info = await call((cb) => q.info(cb));
    assert.deepEqual(info.push.subscribers.map((x) => x.name), ['only']);

    const id = await call((cb) => q.post('to push', cb));
    const [r] = await s.received(1);
    let statuses;
    for (let i = 0; i < 100; i++) {
      statuses = await call((cb) => q.msg_push_statuses(id, cb));
      if (statuses.subscribers[0].status === 'reserved') break;
      await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(statuses.subscribers[0].status, 'reserved');
    assert.equal(statuses.subscribers[0].status_code, 202);
    const acked = await call((cb) => q.del_msg_push_status(id, r.headers['iron-reservation-id'], 'only', cb));
    assert.equal(acked.msg, 'Deleted');
    const after = await call((cb) => q.msg_push_statuses(id, cb));
    assert.equal(after.subscribers[0].status, 'deleted');
  } finally {
    await s.close();
  }
});
