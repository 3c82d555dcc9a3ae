// HTTP(S) subscriber servers for push tests: each records what it received
// and answers with whatever `respond` says for the nth request.
import http from 'node:http';
import https from 'node:https';

// respond(n, req, body) -> status code, or 'hang' to never answer.
export function startSink(respond = () => 200, { tls } = {}) {
  const requests = [];
  const waiters = [];
  const handler = (req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const entry = { method: req.method, url: req.url, headers: req.headers, body: body.toString(), raw: body, at: Date.now() };
      requests.push(entry);
      waiters.splice(0).forEach((w) => w());
      const status = respond(requests.length, entry);
      if (status === 'hang') return;
      res.writeHead(status, { 'content-type': 'text/plain' });
      res.end('answer ' + status);
    });
  };
  const server = tls ? https.createServer(tls, handler) : http.createServer(handler);
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const port = server.address().port;
    resolve({
      port,
      url: `${tls ? 'https://localhost' : 'http://127.0.0.1'}:${port}/hook`,
      requests,
      // Resolves once `n` requests have arrived.
      async received(n, ms = 20000) {
        const deadline = Date.now() + ms;
        while (requests.length < n) {
          if (Date.now() > deadline) throw new Error(`sink got ${requests.length} of ${n} requests`);
          await new Promise((r) => { waiters.push(r); setTimeout(r, 100); });
        }
        return requests;
      },
      close() { server.closeAllConnections?.(); return new Promise((r) => server.close(r)); },
    });
  }));
}
