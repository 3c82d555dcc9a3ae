// Starts the real kiln binary for a test: a temp working directory (where
// first start writes iron.json) and data directory, port 0, and helpers to
// speak HTTP to it, stop it (SIGTERM), kill it (SIGKILL) and start it again.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const KILN_BIN = process.env.KILN_BIN || new URL('../../build/kiln', import.meta.url).pathname;

export class Kiln {
  // `wrap`: a command that runs the binary, given as its last arguments
  // (e.g. to start it in a mount namespace of its own).
  constructor({ dir, args = [], wrap = [], accessLog = false } = {}) {
    this.dir = dir || mkdtempSync(join(tmpdir(), 'kiln-it-'));
    this.args = accessLog ? args : ['--no-access-log', ...args];
    this.wrap = wrap;
    this.output = '';
  }

  async start() {
    this.output = '';
    const argv = [KILN_BIN, 'serve', '--listen', '127.0.0.1:0', '--data', join(this.dir, 'data'),
      ...this.args];
    const [cmd, ...rest] = [...this.wrap, ...argv];
    this.proc = spawn(cmd, rest, { cwd: this.dir, stdio: ['ignore', 'pipe', 'pipe'] });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code, signal) => resolve({ code, signal })));
    const onData = (d) => { this.output += d.toString(); };
    this.proc.stdout.on('data', onData);
    this.proc.stderr.on('data', onData);
    const deadline = Date.now() + 20000;
    while (Date.now() < deadline) {
      const m = this.output.match(/listening on [^ ]+:(\d+)/);
      if (m) {
        this.port = Number(m[1]);
        this.base = `http://127.0.0.1:${this.port}`;
        const iron = JSON.parse(readFileSync(join(this.dir, 'iron.json'), 'utf8'));
        this.project = iron.project_id;
        this.token = iron.token;
        this.adminToken = readFileSync(join(this.dir, 'data', 'admin.token'), 'utf8').trim();
        return this;
      }
      if (this.proc.exitCode !== null) break;
      await sleep(20);
    }
    throw new Error(`kiln did not start:\n${this.output}`);
  }

  async stop(signal = 'SIGTERM') {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode) return this.exited;
    this.proc.kill(signal);
    return this.exited;
  }

  async restart() {
    await this.stop();
    return this.start();
  }

  cleanup() {
    rmSync(this.dir, { recursive: true, force: true });
  }

  q(name = '') {
    return `/3/projects/${this.project}/queues${name ? '/' + encodeURIComponent(name) : ''}`;
  }

  // One request. `body` objects are sent as JSON; strings as they are.
  async req(method, path, body, { token = this.token, headers = {} } = {}) {
    const h = { ...headers };
    if (token) h.authorization = `OAuth ${token}`;
    let payload;
    if (body !== undefined) {
      payload = typeof body === 'string' || body instanceof Uint8Array ? body : JSON.stringify(body);
      if (!h['content-type']) h['content-type'] = 'application/json';
    }
    const res = await fetch(this.base + path, { method, headers: h, body: payload });
    const text = await res.text();
    let json;
    try { json = JSON.parse(text); } catch { json = undefined; }
    return { status: res.status, body: json, text, headers: res.headers };
  }
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls `fn` until it returns a truthy value or `ms` pass.
export async function eventually(fn, ms = 10000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await sleep(50);
  }
}
