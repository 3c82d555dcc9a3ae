// Push cases that take real time: TLS with a test CA, the SSRF guard,
// subscribers that never answer (10 s timeout), a 202 never acknowledged
// (redelivered after the 30 s message timeout), and a slow subscriber that
// must not hold back another queue, and a subscriber whose name never
// resolves (a DNS server that does not answer). Tests run concurrently.
import test, { after, before, describe } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Kiln, eventually } from '../support/kiln.mjs';
import { startSink } from '../support/sink.mjs';
import { makeTestPki } from '../support/pki.mjs';

// A throwaway CA and a certificate for "localhost" signed by it.
const { dir: pki, caFile, tls } = makeTestPki();

const kiln = new Kiln({ args: ['--push-ca-file', caFile] });
const sinks = [];
before(() => kiln.start());
after(async () => {
  await Promise.all(sinks.map((s) => s.close()));
  await kiln.stop();
  kiln.cleanup();
  rmSync(pki, { recursive: true, force: true });
});
async function sink(respond, opts) { const s = await startSink(respond, opts); sinks.push(s); return s; }
const put = (k, q, queue) => k.req('PUT', k.q(q), { queue });
const post = (k, q, body) => k.req('POST', k.q(q) + '/messages', { messages: [{ body }] });
const subStatus = (k, q, id) => eventually(async () => {
  const r = await k.req('GET', `${k.q(q)}/messages/${id}/subscribers`);
  return r.status === 200 && r.body.subscribers;
});

// A second Kiln, in a mount namespace of its own whose resolv.conf names a
// DNS server that takes every query and answers none (and glibc told to
// wait 30 s for it). Needs root (mount) and a free 127.0.0.2:53.
const dnsDir = mkdtempSync(join(tmpdir(), 'kiln-dns-'));
const resolv = join(dnsDir, 'resolv.conf');
writeFileSync(resolv, 'nameserver 127.0.0.2\noptions timeout:30 attempts:1\n');
const silent = dgram.createSocket('udp4');
const k2 = new Kiln({ wrap: ['unshare', '-m', 'sh', '-c', `mount --bind ${resolv} /etc/resolv.conf && exec "$@"`, 'sh'] });
let noDns = '';
before(async () => {
  if (process.getuid() !== 0) { noDns = 'needs root'; return; }
  try {
    await new Promise((resolve, reject) => { silent.once('error', reject); silent.bind(53, '127.0.0.2', resolve); });
  } catch (e) { noDns = `cannot bind 127.0.0.2:53: ${e.message}`; return; }
  await k2.start();
});
after(async () => {
  await k2.stop();
  k2.cleanup();
  try { silent.close(); } catch {}
  rmSync(dnsDir, { recursive: true, force: true });
});

describe('slow push cases', { concurrency: true }, () => {
  test('https subscribers are verified against the trusted CA', async () => {
    const s = await sink(() => 200, { tls });
    await put(kiln, 'tls', { type: 'multicast', push: { subscribers: [{ name: 's', url: s.url }] } });
    const id = (await post(kiln, 'tls', 'over tls')).body.ids[0];
    const [r] = await s.received(1);
    assert.equal(r.body, 'over tls');
    await eventually(async () => (await subStatus(kiln, 'tls', id))[0].status === 'deleted');
  });

  test('without the CA the certificate is refused', async () => {
    const k = await new Kiln().start();
    try {
      const s = await sink(() => 200, { tls });
      await put(k, 'tls', { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url: s.url }] } });
      const id = (await post(k, 'tls', 'x')).body.ids[0];
      const st = await eventually(async () => {
        const x = await subStatus(k, 'tls', id);
        return x[0].status === 'error' && x;
      });
      assert.equal(st[0].status_code, 0);
      assert.match(st[0].msg, /certificate|verify|handshake/i);
      assert.equal(s.requests.length, 0);
    } finally { await k.stop(); k.cleanup(); }
  });

  test('the SSRF guard refuses loopback subscribers when asked to', async () => {
    const k = await new Kiln({ args: ['--push-forbid-private'] }).start();
    try {
      const s = await sink();
      const port = new URL(s.url).port;
      // Loopback, also as an IPv4-compatible, a NAT64, a 6to4 and an
      // IPv4-translated (SIIT) IPv6 address, and a local-use NAT64 one.
      const urls = [s.url, `http://[::127.0.0.1]:${port}/`, `http://[64:ff9b::7f00:1]:${port}/`,
        `http://[2002:7f00:1::1]:${port}/`, `http://[::ffff:0:7f00:1]:${port}/`,
        `http://[64:ff9b:1::7f00:1]:${port}/`];
      await put(k, 'ssrf', { type: 'multicast', push: { retries: 0,
        subscribers: urls.map((url, i) => ({ name: `s${i}`, url })) } });
      const id = (await post(k, 'ssrf', 'x')).body.ids[0];
      const st = await eventually(async () => {
        const x = await subStatus(k, 'ssrf', id);
        return x.every((d) => d.status === 'error') && x;
      });
      for (const d of st) assert.match(d.msg, /not allowed/, d.url);
      assert.equal(s.requests.length, 0);
    } finally { await k.stop(); k.cleanup(); }
  });

  test('a subscriber that never answers times out after 10 s and is retried', async () => {
    const s = await sink((n) => (n === 1 ? 'hang' : 200));
    await put(kiln, 'hang', { type: 'multicast', push: { retries: 1, retries_delay: 3, subscribers: [{ name: 's', url: s.url }] } });
    const id = (await post(kiln, 'hang', 'are you there')).body.ids[0];
    const [first, second] = await s.received(2, 30000);
    const gap = second.at - first.at;
    assert.ok(gap >= 12000 && gap < 20000, `retried after ${gap} ms (10 s timeout + 3 s delay)`);
    const st = await eventually(async () => {
      const x = await subStatus(kiln, 'hang', id);
      return x[0].status === 'deleted' && x;
    });
    assert.equal(st[0].tries, 2);
  });

  test('a timeout on a pooled connection is not retried at once: the subscriber may have the message', async () => {
    // Four deliveries first, so that every client thread holds a kept-alive
    // connection to the sink; the fifth request hangs on one of them.
    const s = await sink((n) => (n === 5 ? 'hang' : 200));
    await put(kiln, 'pooled', { type: 'multicast', push: { retries: 1, retries_delay: 3, subscribers: [{ name: 's', url: s.url }] } });
    for (let i = 1; i <= 4; i++) {
      await post(kiln, 'pooled', `warm-up ${i}`);
      await s.received(i);
    }
    const id = (await post(kiln, 'pooled', 'fifth')).body.ids[0];
    const [hung, again] = (await s.received(6, 30000)).slice(4);
    assert.equal(again.body, 'fifth');
    const gap = again.at - hung.at;
    assert.ok(gap >= 12000, `tried again after ${gap} ms (10 s timeout + 3 s delay, no second try inside the timeout)`);
    const st = await eventually(async () => {
      const x = await subStatus(kiln, 'pooled', id);
      return x[0].status === 'deleted' && x;
    });
    assert.equal(st[0].tries, 2);
  });

  test('a 202 never acknowledged is redelivered after the message timeout, not the retry delay on top', async () => {
    const s = await sink((n) => (n === 1 ? 202 : 200));
    await put(kiln, 'noack', { type: 'multicast', message_timeout: 30, push: { retries: 1, retries_delay: 20, subscribers: [{ name: 's', url: s.url }] } });
    const id = (await post(kiln, 'noack', 'ack me')).body.ids[0];
    const [first, second] = await s.received(2, 45000);
    const gap = second.at - first.at;
    assert.ok(gap >= 29000 && gap < 40000, `redelivered after ${gap} ms`);
    await eventually(async () => (await subStatus(kiln, 'noack', id))[0].status === 'deleted');
  });

  test('a slow subscriber does not hold back another queue', async () => {
    const slow = await sink(() => 'hang');
    const fast = await sink();
    await put(kiln, 'slowq', { type: 'multicast', push: { retries: 0, subscribers: [{ name: 's', url: slow.url }] } });
    await put(kiln, 'fastq', { type: 'multicast', push: { subscribers: [{ name: 'f', url: fast.url }] } });
    for (let i = 0; i < 50; i++) await post(kiln, 'slowq', `slow ${i}`);
    const t0 = Date.now();
    for (let i = 0; i < 20; i++) await post(kiln, 'fastq', `fast ${i}`);
    await fast.received(20, 5000);
    assert.ok(Date.now() - t0 < 5000);
    assert.ok(slow.requests.length <= 32, `at most 32 at once to one host, saw ${slow.requests.length}`);
  });

  test('fails its try at the 10 s deadline and holds back no other subscriber', async (t) => {
    if (noDns) return t.skip(noDns);
    const s = await sink();
    // Two push threads take sends in turn: "hang" and "c" share one, so
    // "c" would wait behind the hanging lookup if an address went through it.
    const subscribers = [{ name: 'hang', url: 'http://never.resolves.example:8080/hook' },
      { name: 'b', url: s.url }, { name: 'c', url: s.url.replace('/hook', '/c') }];
    await put(k2, 'dns', { type: 'multicast', push: { retries: 0, subscribers } });
    const t0 = Date.now();
    const id = (await post(k2, 'dns', 'hello')).body.ids[0];
    await s.received(2, 5000);
    assert.ok(Date.now() - t0 < 5000, 'the other subscribers got it at once');
    const st = await eventually(async () => {
      const x = await subStatus(k2, 'dns', id);
      return x.find((d) => d.name === 'hang').status === 'error' && x;
    }, 25000);
    const took = Date.now() - t0;
    const hang = st.find((d) => d.name === 'hang');
    assert.ok(took >= 9000 && took < 20000, `gave up after ${took} ms (10 s deadline; glibc would wait 30 s)`);
    assert.match(hang.msg, /resolving never\.resolves\.example timed out/);
  });
});
