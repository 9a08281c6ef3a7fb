/**
 * `npm run bench`: starts the service (local backend) as its own process on 127.0.0.1 and measures, with
 * the peer baselines measured in the same run: run_code print(1) round trips, execute_command, create →
 * first result (without and with the warm pool, and with numpy + pandas + matplotlib preloaded),
 * throughput across sandboxes, 50 MB upload/download, idle memory per sandbox; a Jupyter kernel and a new
 * Python process per request. Prints a table and writes bench/results.json. Needs root for the per-sandbox
 * memory figures (it reads /proc by sandbox uid). All traffic stays on 127.0.0.1.
 */
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { readFileSync, readdirSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'undici';
import { Sandbox as E2BSandbox } from '@e2b/code-interpreter';

const KEY = 'bench-key';
/** The service's default: an idle sandbox's supervisor hibernates after this long. */
const SUPERVISOR_IDLE_MS = 2000;
const ROOT = new URL('..', import.meta.url).pathname;
type Stats = { p50: number; p95: number; p99: number; max: number; n: number };

function stats(ms: number[]): Stats {
  const s = [...ms].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { p50: at(0.5), p95: at(0.95), p99: at(0.99), max: s[s.length - 1], n: s.length };
}

interface Service {
  url: string;
  pool: Pool;
  child: ChildProcess;
  uidBase: number;
  close(): Promise<void>;
}

async function startService(name: string, env: Record<string, string>): Promise<Service> {
  const uidBase = Number(env.SANDBOX_UID_BASE ?? 1_700_000_000 + Math.floor(Math.random() * 1000) * 100_000);
  const child = spawn(process.execPath, [join(ROOT, 'dist/server.js')], {
    env: {
      PATH: process.env.PATH,
      API_KEY: KEY,
      HOST: '127.0.0.1',
      PORT: '0',
      LOG_LEVEL: 'info',
      MAX_SANDBOXES: '200',
      SANDBOX_ROOT: mkdtempSync(join(tmpdir(), `ciw-bench-${name}-`)),
      STATE_DIR: mkdtempSync(join(tmpdir(), `ciw-bench-state-${name}-`)),
      SANDBOX_UID_BASE: String(uidBase),
      SANDBOX_UID_COUNT: '4096',
      MAX_FILE_BYTES: String(64 * 1024 * 1024),
      SUPERVISOR_IDLE_MS: String(SUPERVISOR_IDLE_MS),
      ...env,
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  for (let i = 0; i < 600 && !/Server listening at/.test(out); i++) await new Promise((r) => setTimeout(r, 50));
  const url = /Server listening at (http:\/\/[\d.:]+)/.exec(out)?.[1];
  if (!url) throw new Error(`the service did not start:\n${out}`);
  const pool = new Pool(url, { connections: 32, pipelining: 1 });
  return {
    url,
    pool,
    child,
    uidBase,
    async close() {
      await pool.close();
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    },
  };
}

async function call(svc: Service, path: string, body: unknown): Promise<any> {
  const res = await svc.pool.request({
    path,
    method: 'POST',
    headers: { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`${path}: HTTP ${res.statusCode} ${text}`);
  return JSON.parse(text);
}

/**
 * A minimal keep-alive HTTP/1.1 client on one connection: writes a prepared request, reads the status line,
 * Content-Length and body. The service's latency is measured with it, so that the figure is the service's
 * and not mostly undici's (≈ 0.1 ms of CPU per call in this process). One request at a time.
 */
class RawClient {
  private head: Buffer = Buffer.alloc(0);
  private status = 0;
  private length = -1;
  private body: Buffer = Buffer.alloc(0);
  private received = 0;
  private waiting: ((r: { status: number; body: Buffer }) => void) | null = null;

  private constructor(
    private readonly socket: Socket,
    private readonly host: string,
  ) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
  }

  private onData(chunk: Buffer): void {
    if (this.length < 0) {
      this.head = this.head.length ? Buffer.concat([this.head, chunk]) : chunk;
      const end = this.head.indexOf('\r\n\r\n');
      if (end < 0) return;
      const text = this.head.toString('latin1', 0, end);
      this.status = Number(text.slice(9, 12));
      this.length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(text)?.[1] ?? NaN);
      if (!Number.isFinite(this.length)) throw new Error(`no content-length in ${text}`);
      chunk = this.head.subarray(end + 4);
      this.head = Buffer.alloc(0);
    }
    // A large body arrives in many chunks: copied into one buffer of its Content-Length as they come.
    if (this.received === 0 && chunk.length >= this.length) {
      this.body = chunk;
      this.received = chunk.length;
    } else {
      if (this.received === 0) this.body = Buffer.allocUnsafe(this.length);
      const n = Math.min(chunk.length, this.length - this.received);
      chunk.copy(this.body, this.received, 0, n);
      this.received += n;
      if (n < chunk.length) this.head = chunk.subarray(n);
    }
    if (this.received < this.length) return;
    const body = this.body.subarray(0, this.length);
    if (this.body.length > this.length) this.head = this.body.subarray(this.length);
    this.body = Buffer.alloc(0);
    this.received = 0;
    this.length = -1;
    const w = this.waiting;
    this.waiting = null;
    w?.({ status: this.status, body });
  }

  static open(url: string): Promise<RawClient> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const socket = connect(Number(u.port), u.hostname, () => resolve(new RawClient(socket, u.host)));
      socket.once('error', reject);
    });
  }

  request(method: string, path: string, contentType: string, body: Buffer | string = ''): Promise<{ status: number; body: Buffer }> {
    const length = typeof body === 'string' ? Buffer.byteLength(body) : body.length;
    return new Promise((resolve) => {
      this.waiting = resolve;
      // Head and body in one system call (writev), as one segment for a small body: two writes would wake
      // the service twice for one request.
      this.socket.cork();
      this.socket.write(
        `${method} ${path} HTTP/1.1\r\nHost: ${this.host}\r\nAuthorization: Bearer ${KEY}\r\n` +
          `Content-Type: ${contentType}\r\nContent-Length: ${length}\r\n\r\n`,
      );
      if (length > 0) this.socket.write(body);
      this.socket.uncork();
    });
  }

  close(): void {
    this.socket.destroy();
  }
}

async function rawRunCode(client: RawClient, id: string): Promise<void> {
  const r = await client.request('POST', '/run_code', 'application/json', JSON.stringify({ sandbox_id: id, code: 'print(1)' }));
  if (r.status !== 200 || !r.body.includes('"stdout":"1\\n"')) throw new Error(`run_code: HTTP ${r.status} ${r.body.toString()}`);
}

async function timed(n: number, warmup: number, fn: () => Promise<unknown>): Promise<Stats> {
  const ms: number[] = [];
  for (let i = 0; i < n + warmup; i++) {
    const t = performance.now();
    await fn();
    if (i >= warmup) ms.push(performance.now() - t);
  }
  return stats(ms);
}

async function poolReady(svc: Service, n: number): Promise<void> {
  for (let i = 0; i < 1200; i++) {
    const res = await svc.pool.request({ path: '/health', method: 'GET' });
    const h = JSON.parse(await res.body.text());
    if ((h.pool?.ready ?? 0) >= n) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error('the warm pool did not fill');
}

async function createToFirst(svc: Service, n: number, code: string, waitPool: number): Promise<Stats> {
  const ms: number[] = [];
  for (let i = 0; i < n; i++) {
    if (waitPool) await poolReady(svc, waitPool);
    const t = performance.now();
    const { sandbox_id: id } = await call(svc, '/create_sandbox', {});
    const r = await call(svc, '/run_code', { sandbox_id: id, code });
    ms.push(performance.now() - t);
    if (r.error) throw new Error(JSON.stringify(r.error));
    await call(svc, '/stop_sandbox', { sandbox_id: id });
  }
  return stats(ms);
}

/**
 * A service process killed (kill -9) with `n` live sandboxes, each holding a variable: the time from the
 * start of the next service process (same SANDBOX_ROOT and STATE_DIR) until every sandbox answered with it.
 */
async function takeOver(n: number): Promise<{ n: number; allAnsweredMs: number; listeningMs: number }> {
  const env = {
    POOL_SIZE: '0',
    SANDBOX_ROOT: mkdtempSync(join(tmpdir(), 'ciw-bench-adopt-')),
    STATE_DIR: mkdtempSync(join(tmpdir(), 'ciw-bench-adopt-state-')),
    SANDBOX_UID_BASE: String(1_700_000_000 + Math.floor(Math.random() * 1000) * 100_000),
  };
  const first = await startService('adopt', env);
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const { sandbox_id: id } = await call(first, '/create_sandbox', {});
    await call(first, '/run_code', { sandbox_id: id, code: `x = ${i}` });
    ids.push(id);
  }
  await first.pool.close();
  first.child.kill('SIGKILL');
  await new Promise((r) => first.child.once('exit', r));
  const t = performance.now();
  const second = await startService('adopt', env);
  const listeningMs = performance.now() - t;
  try {
    const answers = await Promise.all(ids.map((id) => call(second, '/run_code', { sandbox_id: id, code: 'print(x)' })));
    const allAnsweredMs = performance.now() - t;
    answers.forEach((r, i) => {
      if (r.stdout !== `${i}\n` || r.notice) throw new Error(`sandbox ${ids[i]} came back without its state: ${JSON.stringify(r)}`);
    });
    return { n, allAnsweredMs, listeningMs };
  } finally {
    await second.close();
  }
}

/** Processes running under the service's sandbox uids. */
function sandboxProcesses(svc: Service): number {
  let n = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/status`, 'utf8'))![1]);
      if (uid >= svc.uidBase && uid < svc.uidBase + 4096) n++;
    } catch {
      // ended while we looked
    }
  }
  return n;
}

const PLAIN = "a = 1\nb = 'x' * 100\nc = [1, 2, 3]\nprint(a)";
const DATAFRAME =
  "import os, numpy as np, pandas as pd\ndf = pd.DataFrame({'a': np.arange(1_000_000), 'b': np.random.rand(1_000_000)})\n" +
  "open('blob.bin', 'wb').write(os.urandom(10 * 1024 * 1024))\nprint(len(df))";

/**
 * Checkpoints (undo), with a service that keeps them (the default, CHECKPOINTS_KEPT=10) beside one that does
 * not, in the same run: print(1) p50 paced as an agent's calls come (100 ms apart: each keeps a checkpoint,
 * taken CHECKPOINT_WAIT_MS after its answer) and back to back (they share them), alternating blocks;
 * a one-step rollback of a kernel holding a 1e6-row DataFrame; the memory a checkpoint holds after a cell
 * that changed one variable.
 */
async function checkpointFigures(): Promise<Record<string, unknown>> {
  const on = await startService('ckpt-on', { POOL_SIZE: '0' });
  const off = await startService('ckpt-off', { POOL_SIZE: '0', CHECKPOINTS_KEPT: '0' });
  const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
  try {
    const sides = await Promise.all(
      [on, off].map(async (svc) => ({
        id: (await call(svc, '/create_sandbox', {})).sandbox_id as string,
        raw: await RawClient.open(svc.url),
      })),
    );
    for (const s of sides) for (let i = 0; i < 300; i++) await rawRunCode(s.raw, s.id);
    const paced: number[][] = [[], []];
    const backToBack: number[][] = [[], []];
    for (let block = 0; block < 8; block++) {
      for (const [k, s] of sides.entries()) {
        for (let i = 0; i < 20; i++) {
          await pause(100); // longer than CHECKPOINT_WAIT_MS: each call gets its checkpoint
          const t = performance.now();
          await rawRunCode(s.raw, s.id);
          paced[k]!.push(performance.now() - t);
        }
        for (let i = 0; i < 250; i++) {
          const t = performance.now();
          await rawRunCode(s.raw, s.id);
          backToBack[k]!.push(performance.now() - t);
        }
      }
    }
    for (const s of sides) s.raw.close();
    if (process.env.BENCH_ONLY === 'paced') {
      return {
        pacedOn: stats(paced[0]!),
        pacedOff: stats(paced[1]!),
        backToBackOn: stats(backToBack[0]!),
        backToBackOff: stats(backToBack[1]!),
      };
    }
    const { sandbox_id: df } = await call(on, '/create_sandbox', {});
    await call(on, '/run_code', { sandbox_id: df, code: DATAFRAME });
    await pause(100); // its own checkpoint: the one each rollback below goes back to, or the one after it
    const rollback: number[] = [];
    for (let i = 0; i < 20; i++) {
      await call(on, '/run_code', { sandbox_id: df, code: `v = ${i}` });
      await pause(100);
      const t = performance.now();
      const r = await call(on, '/rollback', { sandbox_id: df, steps_back: 1 });
      rollback.push(performance.now() - t);
      if (!r.checkpoint) throw new Error(`rollback: ${JSON.stringify(r)}`);
    }
    const check = await call(on, '/run_code', { sandbox_id: df, code: 'print(len(df))' });
    if (check.stdout !== '1000000\n') throw new Error(`after the rollbacks: ${JSON.stringify(check)}`);
    for (let i = 0; i < 10; i++) {
      await call(on, '/run_code', { sandbox_id: df, code: `x${i} = ${i}` });
      await pause(100);
    }
    const list = (await call(on, '/checkpoints', { sandbox_id: df })).checkpoints as Array<{
      current: boolean;
      memory_bytes: number | null;
    }>;
    const held = list.filter((c) => !c.current && c.memory_bytes !== null).map((c) => c.memory_bytes! / 1048576);
    return {
      pacedOn: stats(paced[0]!),
      pacedOff: stats(paced[1]!),
      backToBackOn: stats(backToBack[0]!),
      backToBackOff: stats(backToBack[1]!),
      rollbackDataFrame: stats(rollback),
      memoryPerCheckpointMiB: held.length ? stats(held) : null,
    };
  } finally {
    await on.close();
    await off.close();
  }
}

/**
 * Pause and resume: `n` times, the sandbox set up by `setup` is paused (timed) and then resumed by a call
 * of `probe` (timed to its first result). Also the stored bytes.
 */
async function pauseResume(
  svc: Service,
  n: number,
  setup: string,
  probe: string,
  beforeResume: () => Promise<void> = async () => undefined,
): Promise<{ pause: Stats; resume: Stats; bytes: number }> {
  const { sandbox_id: id } = await call(svc, '/create_sandbox', {});
  const first = await call(svc, '/run_code', { sandbox_id: id, code: setup });
  if (first.error) throw new Error(JSON.stringify(first.error));
  const pauses: number[] = [];
  const resumes: number[] = [];
  let bytes = 0;
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    const p = await call(svc, '/pause_sandbox', { sandbox_id: id });
    pauses.push(performance.now() - t);
    if (p.status !== 'paused') throw new Error(JSON.stringify(p));
    bytes = p.state_bytes;
    await beforeResume();
    t = performance.now();
    const r = await call(svc, '/run_code', { sandbox_id: id, code: probe });
    resumes.push(performance.now() - t);
    if (r.error || !r.notice) throw new Error(JSON.stringify(r));
  }
  await call(svc, '/stop_sandbox', { sandbox_id: id });
  return { pause: stats(pauses), resume: stats(resumes), bytes };
}

async function throughput(svc: Service, ids: string[], concurrency: number, seconds: number, raw = false): Promise<number> {
  let done = 0;
  const end = performance.now() + seconds * 1000;
  await Promise.all(
    ids.slice(0, concurrency).map(async (id) => {
      const body = { sandbox_id: id, code: 'print(1)' };
      const client = raw ? await RawClient.open(svc.url) : null;
      while (performance.now() < end) {
        if (client) await rawRunCode(client, id);
        else await call(svc, '/run_code', body);
        done++;
      }
      client?.close();
    }),
  );
  return done / seconds;
}

/**
 * The same, with wrk (Debian package `wrk`) as the load generator when it is installed: a C client leaves
 * the two cores to the service instead of spending ≈100 µs of CPU per call in this process's JavaScript.
 */
function throughputWrk(svc: Service, ids: string[], concurrency: number, seconds: number): { rate: number; latency: Stats } | null {
  try {
    execFileSync('wrk', ['--version'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
  }
  // One wrk thread per core, as wrk is meant to run (a thread per connection spends the two cores on
  // switching between 16 client threads). Each thread's connections share its sandboxes: request() hands
  // them out in turn, so when two connections ask the same sandbox at once the second call waits for the
  // first (calls into one sandbox run one at a time) — which can only lower the figure.
  const threads = Math.min(concurrency, Math.max(1, Number(execFileSync('nproc').toString().trim())));
  const per = Math.ceil(concurrency / threads);
  const script = join(mkdtempSync(join(tmpdir(), 'ciw-wrk-')), 'run_code.lua');
  const list = ids
    .slice(0, concurrency)
    .map((id) => `"${id}"`)
    .join(',');
  writeFileSync(
    script,
    `local ids = {${list}}\nlocal n = 0\n` +
      `function setup(thread)\n  thread:set("first", n * ${per})\n  n = n + 1\nend\n` +
      `function init(args)\n  requests = {}\n  for i = 1, ${per} do\n    local id = ids[first + i]\n    if id then requests[#requests + 1] = wrk.format("POST", "/run_code", ` +
      `{["Content-Type"] = "application/json", ["Authorization"] = "Bearer ${KEY}"}, '{"sandbox_id":"' .. id .. '","code":"print(1)"}') end\n  end\n  k = 0\nend\n` +
      `function request()\n  k = k % #requests + 1\n  return requests[k]\nend\n` +
      `function done(summary, latency, requests)\n  io.write(string.format("CIW-LATENCY %f %f %f %d\\n", latency:percentile(50), latency:percentile(95), latency:percentile(99), summary.requests))\nend\n`,
  );
  const out = execFileSync('wrk', ['-t', String(threads), '-c', String(concurrency), '-d', `${seconds}s`, '-s', script, svc.url], {
    encoding: 'utf8',
  });
  if (/Non-2xx/.test(out)) throw new Error(`wrk saw failed requests:\n${out}`);
  const l = /CIW-LATENCY ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(out);
  const us = (i: number) => Number(l?.[i] ?? NaN) / 1000;
  return {
    rate: Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1]),
    latency: { p50: us(1), p95: us(2), p99: us(3), max: NaN, n: Number(l?.[4] ?? 0) },
  };
}

/** Summed RSS and PSS (MiB) of all processes under the service's sandbox uids. */
function sandboxMemory(svc: Service): { rss: number; pss: number } {
  let rss = 0;
  let pss = 0;
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)![1]);
      if (uid < svc.uidBase || uid >= svc.uidBase + 4096) continue;
      rss += Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
      pss += Number(/^Pss:\s+(\d+)/m.exec(readFileSync(`/proc/${name}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      // ended while we looked
    }
  }
  return { rss: rss / 1024, pss: pss / 1024 };
}

/** The median of three measurements (MiB/s): one 50 MiB transfer is short enough for a hiccup to decide it. */
const median3 = (xs: number[]) => [...xs].sort((a, b) => a - b)[1];

/** 50 MB up (a binary body) and down (its signed URL), three times each on one connection; the medians. */
async function transfer(svc: Service, id: string): Promise<{ uploadMBs: number; downloadMBs: number }> {
  const data = Buffer.alloc(50 * 1024 * 1024, 7);
  const client = await RawClient.open(svc.url);
  const up: number[] = [];
  const down: number[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      let t = performance.now();
      const u = await client.request('POST', `/upload_file?sandbox_id=${id}&remote_filename=big.bin`, 'application/octet-stream', data);
      up.push(50 / ((performance.now() - t) / 1000));
      if (u.status !== 200) throw new Error(`upload: HTTP ${u.status} ${u.body.toString()}`);
      const link = new URL((await call(svc, '/download_file', { sandbox_id: id, remote_path: 'big.bin' })).download_url);
      t = performance.now();
      const d = await client.request('GET', link.pathname + link.search, 'application/json');
      down.push(50 / ((performance.now() - t) / 1000));
      if (d.body.length !== data.length) throw new Error(`downloaded ${d.body.length} bytes`);
    }
    return { uploadMBs: median3(up), downloadMBs: median3(down) };
  } finally {
    client.close();
  }
}

/**
 * The same 50 MiB with curl (installed by the setup script) as the client: a Node client in this process
 * shares the two cores with the service and is often the slower end.
 */
function transferCurl(svc: Service, id: string): { uploadMBs: number; downloadMBs: number } | null {
  const dir = mkdtempSync(join(tmpdir(), 'ciw-xfer-'));
  const file = join(dir, 'big.bin');
  writeFileSync(file, Buffer.alloc(50 * 1024 * 1024, 9));
  const curl = (args: string[]) =>
    execFileSync('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code} %{time_total}', ...args], { encoding: 'utf8' });
  const up: number[] = [];
  const down: number[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const u = curl([
        '-H',
        `authorization: Bearer ${KEY}`,
        '-H',
        'content-type: application/octet-stream',
        '--data-binary',
        `@${file}`,
        `${svc.url}/upload_file?sandbox_id=${id}&remote_filename=big-curl.bin`,
      ]).split(' ');
      const link = JSON.parse(
        execFileSync(
          'curl',
          [
            '-s',
            '-H',
            `authorization: Bearer ${KEY}`,
            '-H',
            'content-type: application/json',
            '-d',
            JSON.stringify({ sandbox_id: id, remote_path: 'big-curl.bin' }),
            `${svc.url}/download_file`,
          ],
          { encoding: 'utf8' },
        ),
      ).download_url;
      const d = curl([link]).split(' ');
      if (u[0] !== '200' || d[0] !== '200') throw new Error(`curl: upload HTTP ${u[0]}, download HTTP ${d[0]}`);
      up.push(50 / Number(u[1]));
      down.push(50 / Number(d[1]));
    }
    return { uploadMBs: median3(up), downloadMBs: median3(down) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function processPerRequest(n: number): { plain: Stats; bwrap: Stats | null } {
  const run = (cmd: string, args: string[]) => {
    const ms: number[] = [];
    for (let i = 0; i < n; i++) {
      const t = performance.now();
      execFileSync(cmd, args, { stdio: 'ignore' });
      ms.push(performance.now() - t);
    }
    return stats(ms);
  };
  const plain = run('/usr/bin/python3', ['-c', 'print(1)']);
  let bwrap: Stats | null = null;
  try {
    bwrap = run('bwrap', [
      '--unshare-all',
      '--ro-bind',
      '/usr',
      '/usr',
      '--symlink',
      'usr/lib',
      '/lib',
      '--symlink',
      'usr/lib64',
      '/lib64',
      '--symlink',
      'usr/bin',
      '/bin',
      '--proc',
      '/proc',
      '--dev',
      '/dev',
      '/usr/bin/python3',
      '-c',
      'print(1)',
    ]);
  } catch {
    bwrap = null;
  }
  return { plain, bwrap };
}

function jupyter(): Record<string, any> {
  try {
    return JSON.parse(
      execFileSync('/usr/bin/python3', [join(ROOT, 'bench/jupyter_baseline.py'), '300'], { encoding: 'utf8', timeout: 120_000 }),
    );
  } catch (err) {
    return { skipped: (err as Error).message.split('\n')[0] };
  }
}

const f = (x: number | undefined, d = 2) => (x === undefined ? 'n/a' : x.toFixed(d));

async function main(): Promise<void> {
  const results: Record<string, unknown> = { date: new Date().toISOString(), cpus: execFileSync('nproc').toString().trim() };
  console.log('checkpoints: a service that keeps them and one that does not …');
  results.checkpoints = await checkpointFigures();
  if (process.env.BENCH_ONLY === 'checkpoints' || process.env.BENCH_ONLY === 'paced') {
    console.log(JSON.stringify(results.checkpoints, null, 2));
    return;
  }
  console.log('baselines: Jupyter kernel and a new Python process per request …');
  const jup = jupyter();
  const ppr = processPerRequest(40);
  results.baselines = { jupyter: jup, processPerRequest: ppr };

  console.log('service without a pool …');
  const a = await startService('nopool', { POOL_SIZE: '0' });
  try {
    const { sandbox_id: id } = await call(a, '/create_sandbox', {});
    const raw = await RawClient.open(a.url);
    results.runCode = await timed(3000, 300, () => rawRunCode(raw, id));
    raw.close();
    results.runCodeUndici = await timed(2000, 200, () => call(a, '/run_code', { sandbox_id: id, code: 'print(1)' }));
    results.executeCommand = await timed(500, 50, () => call(a, '/execute_command', { sandbox_id: id, command: 'true' }));
    // The same round trips through the unmodified E2B SDK (its /execute NDJSON stream, its process.Process/Start).
    const e2b = await E2BSandbox.create({ apiKey: KEY, apiUrl: a.url, sandboxUrl: a.url });
    results.e2bRunCode = await timed(500, 50, () => e2b.runCode('1'));
    results.e2bCommand = await timed(300, 30, () => e2b.commands.run('true'));
    await e2b.kill();
    results.createToFirstNoPool = await createToFirst(a, 30, 'print(1)', 0);
    const ids: string[] = [];
    for (let i = 0; i < 16; i++) ids.push((await call(a, '/create_sandbox', {})).sandbox_id);
    for (const sid of ids) await call(a, '/run_code', { sandbox_id: sid, code: 'print(1)' });
    results.throughput = {
      c1: await throughput(a, ids, 1, 3, true),
      c4: await throughput(a, ids, 4, 3, true),
      c16: await throughput(a, ids, 16, 3, true),
    };
    const wrk = [1, 4, 16].map((c) => throughputWrk(a, ids, c, 3));
    results.throughputWrk =
      wrk[0] === null ? { skipped: 'apt-get install -y wrk' } : { c1: wrk[0].rate, c4: wrk[1]!.rate, c16: wrk[2]!.rate };
    if (wrk[0]) results.runCodeWrk = wrk[0].latency;
    results.transfer = await transfer(a, id);
    results.transferCurl = transferCurl(a, id) ?? { skipped: 'curl not installed' };
    for (const sid of [id, ...ids]) await call(a, '/stop_sandbox', { sandbox_id: sid });
    // 50 sandboxes: measured just created, then once their supervisors hibernated (SUPERVISOR_IDLE_MS),
    // then right after a first Python call in each, then idle again. The last is the headline figure.
    const idle: string[] = [];
    for (let i = 0; i < 50; i++) idle.push((await call(a, '/create_sandbox', {})).sandbox_id);
    const perSandbox = () => {
      const m = sandboxMemory(a);
      return { rss: m.rss / 50, pss: m.pss / 50 };
    };
    const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
    await pause(500);
    const fresh = perSandbox();
    await pause(SUPERVISOR_IDLE_MS + 1000);
    const freshIdle = perSandbox();
    for (const sid of idle) await call(a, '/run_code', { sandbox_id: sid, code: 'print(1)' });
    await pause(200);
    const afterCall = perSandbox();
    await pause(SUPERVISOR_IDLE_MS + 1000);
    const afterCallIdle = perSandbox();
    results.idleMemoryMiB = { fresh, freshIdle, afterCall, afterCallIdle };
    // What hibernation costs: the first shell command after it (the supervisor execs again).
    const woken: string[] = [];
    results.executeCommandResumed = await timed(20, 0, async () => {
      const sid = idle.pop()!;
      woken.push(sid);
      await call(a, '/execute_command', { sandbox_id: sid, command: 'true' });
    });
    for (const sid of woken) await call(a, '/stop_sandbox', { sandbox_id: sid });
    // Paused, the 30 sandboxes left hold no process at all.
    const before = sandboxProcesses(a);
    for (const sid of idle) await call(a, '/pause_sandbox', { sandbox_id: sid });
    results.pausedProcesses = { before, after: sandboxProcesses(a), sandboxes: idle.length };
    console.log('pause and resume …');
    results.pauseResumePlain = await pauseResume(a, 10, PLAIN, 'print(a, len(b), c)');
    results.pauseResumeDataFrame = await pauseResume(a, 3, DATAFRAME, 'print(len(df))');
    console.log('a service killed with 100 live sandboxes, and the next one …');
    results.takeOver = await takeOver(100);
  } finally {
    await a.close();
  }

  console.log('service with a warm pool …');
  const b = await startService('pool', { POOL_SIZE: '4' });
  try {
    // Each iteration starts from a full pool, so a hand-over is timed, not a hand-over racing a refill.
    results.createToFirstPool = await createToFirst(b, 30, 'print(1)', 4);
    // A resume takes a sandbox of the pool as a create does (the pool is full again before each).
    results.pauseResumePlainPool = await pauseResume(b, 10, PLAIN, 'print(a, len(b), c)', () => poolReady(b, 4));
  } finally {
    await b.close();
  }
  console.log("Dify's Code node (/v1/sandbox/run), with and without enable_network, from warm pools …");
  const d = await startService('dify', { POOL_SIZE: '4', POOL_NETWORK_SIZE: '4', SANDBOX_NETWORK_ALLOWED: 'true' });
  try {
    // Dify's Python runner template around a node's main(), as Dify sends it (docs/dify.md).
    const inputs = Buffer.from(JSON.stringify({ a: 2, b: 3 })).toString('base64');
    const runner =
      'def main(a: int, b: int) -> dict:\n    return {"sum": a + b}\n' +
      `import json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('${inputs}').decode('utf-8'))\n` +
      "output_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nprint(f'''<<RESULT>>{output_json}<<RESULT>>''')\n";
    const codeNode = async (network: boolean) => {
      const res = await d.pool.request({
        path: '/v1/sandbox/run',
        method: 'POST',
        headers: { 'x-api-key': KEY, 'content-type': 'application/json' },
        body: JSON.stringify({ language: 'python3', code: runner, preload: '', enable_network: network }),
      });
      const body = (await res.body.json()) as { code: number; data: { stdout: string; error: string } };
      if (body.code !== 0 || body.data.error || !body.data.stdout.includes('<<RESULT>>'))
        throw new Error(`Code node run failed: ${JSON.stringify(body)}`);
    };
    const spaced = async (network: boolean, n: number): Promise<Stats> => {
      // A Code node run now and then, as in a workflow: the pools refill between runs (not timed).
      const times: number[] = [];
      for (let i = 0; i < n + 3; i++) {
        await new Promise((r) => setTimeout(r, 400));
        const t0 = performance.now();
        await codeNode(network);
        if (i >= 3) times.push(performance.now() - t0);
      }
      return stats(times);
    };
    results.codeNode = await spaced(false, 30);
    results.codeNodeNetwork = await spaced(true, 30);
  } finally {
    await d.close();
  }
  console.log('service with a pool preloading numpy, pandas, matplotlib …');
  const c = await startService('preload', { POOL_SIZE: '2', POOL_PRELOAD: 'numpy,pandas,matplotlib.pyplot' });
  try {
    results.createToFirstPreloaded = await createToFirst(c, 10, 'import numpy, pandas, matplotlib.pyplot as plt\nprint(1)', 2);
    // A resume takes a sandbox of the pool like a create does: one whose Python has pandas imported already.
    results.pauseResumeDataFramePool = await pauseResume(c, 3, DATAFRAME, 'print(len(df))', () => poolReady(c, 2));
  } finally {
    await c.close();
  }

  writeFileSync(join(ROOT, 'bench/results.json'), `${JSON.stringify(results, null, 2)}\n`);
  const r = results as any;
  const jexec = jup.exec_ms?.p50 as number | undefined;
  const rows: Array<[string, string, string, string]> = [
    // The service's latency is best seen with a C client: a Node client adds ≈ 0.2 ms of its own at
    // concurrency 1 on this kind of machine (its own wake-ups). Both are shown.
    [
      'run_code print(1) over HTTP, warm, wrk client (ms)',
      r.runCodeWrk
        ? `p50 ${f(r.runCodeWrk.p50, 3)} p95 ${f(r.runCodeWrk.p95, 3)} p99 ${f(r.runCodeWrk.p99, 3)}`
        : 'wrk not installed (apt-get install -y wrk)',
      '≤ 0.5 p50; ≥ 10× Jupyter',
      r.runCodeWrk && jexec
        ? `Jupyter p50 ${f(jexec)} → ${f(jexec / r.runCodeWrk.p50, 1)}×; process/request ${f(ppr.plain.p50)} → ${f(ppr.plain.p50 / r.runCodeWrk.p50, 0)}×`
        : jexec
          ? ''
          : 'Jupyter: skipped',
    ],
    [
      '… Node client (raw keep-alive HTTP) (ms)',
      `p50 ${f(r.runCode.p50, 3)} p95 ${f(r.runCode.p95, 3)} p99 ${f(r.runCode.p99, 3)}`,
      '',
      jexec ? `Jupyter → ${f(jexec / r.runCode.p50, 1)}×; process/request → ${f(ppr.plain.p50 / r.runCode.p50, 0)}×` : 'Jupyter: skipped',
    ],
    [
      '… Node client (undici) (ms)',
      `p50 ${f(r.runCodeUndici.p50, 3)} p95 ${f(r.runCodeUndici.p95, 3)} p99 ${f(r.runCodeUndici.p99, 3)}`,
      '',
      jexec ? `Jupyter → ${f(jexec / r.runCodeUndici.p50, 1)}×` : '',
    ],
    [
      'execute_command true (ms)',
      `p50 ${f(r.executeCommand.p50, 3)} p95 ${f(r.executeCommand.p95, 3)} p99 ${f(r.executeCommand.p99, 3)}`,
      '',
      `bwrap+python per request ${f(ppr.bwrap?.p50)}`,
    ],
    [
      'E2B SDK runCode("1") round trip (ms)',
      `p50 ${f(r.e2bRunCode.p50, 3)} p95 ${f(r.e2bRunCode.p95, 3)} p99 ${f(r.e2bRunCode.p99, 3)}`,
      '',
      `our run_code, undici p50 ${f(r.runCodeUndici.p50, 3)}`,
    ],
    [
      'E2B SDK commands.run("true") (ms)',
      `p50 ${f(r.e2bCommand.p50, 3)} p95 ${f(r.e2bCommand.p95, 3)} p99 ${f(r.e2bCommand.p99, 3)}`,
      '',
      `our execute_command p50 ${f(r.executeCommand.p50, 3)}`,
    ],
    [
      'Dify Code node /v1/sandbox/run, Python runner, from the pool (ms)',
      `p50 ${f(r.codeNode.p50)} p95 ${f(r.codeNode.p95)}`,
      '≤ 20 p50',
      `bwrap + python3 per request ${f(ppr.bwrap?.p50)}`,
    ],
    [
      '… with enable_network (network pool) (ms)',
      `p50 ${f(r.codeNodeNetwork.p50)} p95 ${f(r.codeNodeNetwork.p95)}`,
      '≤ 20 p50',
      `without network ${f(r.codeNode.p50)}`,
    ],
    [
      'create → first result, no pool (ms)',
      `p50 ${f(r.createToFirstNoPool.p50)} p95 ${f(r.createToFirstNoPool.p95)} p99 ${f(r.createToFirstNoPool.p99)}`,
      '≤ 60 p50',
      `Jupyter start ${f(jup.start_ms?.p50, 0)} → ${f(jup.start_ms?.p50 / r.createToFirstNoPool.p50, 0)}×`,
    ],
    [
      'create → first result, pool (ms)',
      `p50 ${f(r.createToFirstPool.p50)} p95 ${f(r.createToFirstPool.p95)} p99 ${f(r.createToFirstPool.p99)}`,
      '≤ 5 p50',
      '',
    ],
    [
      '… numpy+pandas+matplotlib, pool (ms)',
      `p50 ${f(r.createToFirstPreloaded.p50)} p95 ${f(r.createToFirstPreloaded.p95)}`,
      '≤ 10 p50',
      '',
    ],
    [
      'run_code throughput (calls/s), Node client',
      `c1 ${f(r.throughput.c1, 0)} c4 ${f(r.throughput.c4, 0)} c16 ${f(r.throughput.c16, 0)}`,
      '≥ 8000 at c16',
      '',
    ],
    [
      'run_code throughput (calls/s), wrk',
      r.throughputWrk.skipped ?? `c1 ${f(r.throughputWrk.c1, 0)} c4 ${f(r.throughputWrk.c4, 0)} c16 ${f(r.throughputWrk.c16, 0)}`,
      '≥ 8000 at c16',
      '',
    ],
    [
      'idle memory per sandbox, after a Python call (MiB)',
      `RSS ${f(r.idleMemoryMiB.afterCallIdle.rss, 1)} PSS ${f(r.idleMemoryMiB.afterCallIdle.pss, 1)}`,
      '≤ 15',
      `Jupyter RSS ${f(jup.idle_rss_mb, 1)} → ${f(jup.idle_rss_mb / r.idleMemoryMiB.afterCallIdle.rss, 1)}×`,
    ],
    ['… never used (MiB)', `RSS ${f(r.idleMemoryMiB.freshIdle.rss, 1)} PSS ${f(r.idleMemoryMiB.freshIdle.pss, 1)}`, '', ''],
    [
      '… before its supervisor hibernates: new / after a call (MiB)',
      `RSS ${f(r.idleMemoryMiB.fresh.rss, 1)} / ${f(r.idleMemoryMiB.afterCall.rss, 1)}`,
      '',
      `hibernates after SUPERVISOR_IDLE_MS=${SUPERVISOR_IDLE_MS}`,
    ],
    [
      'execute_command true, supervisor hibernated (ms)',
      `p50 ${f(r.executeCommandResumed.p50, 1)} p95 ${f(r.executeCommandResumed.p95, 1)}`,
      '',
      'the supervisor execs again',
    ],
    [
      '50 MiB upload / download, curl, median of 3 (MiB/s)',
      r.transferCurl.skipped ?? `${f(r.transferCurl.uploadMBs, 0)} / ${f(r.transferCurl.downloadMBs, 0)}`,
      '≥ 200 each',
      '',
    ],
    ['… Node client (MiB/s)', `${f(r.transfer.uploadMBs, 0)} / ${f(r.transfer.downloadMBs, 0)}`, '≥ 200 each', ''],
    [
      'pause, 10 MB workspace + 1e6-row DataFrame (ms)',
      `p50 ${f(r.pauseResumeDataFrame.pause.p50, 0)} max ${f(r.pauseResumeDataFrame.pause.max, 0)} (${f(r.pauseResumeDataFrame.bytes / 1048576, 1)} MiB stored)`,
      '≤ 1000',
      '',
    ],
    [
      'resume → first result, a few variables, pool (ms)',
      `p50 ${f(r.pauseResumePlainPool.resume.p50, 1)} p95 ${f(r.pauseResumePlainPool.resume.p95, 1)} (pause p50 ${f(r.pauseResumePlainPool.pause.p50, 1)})`,
      '≤ 100',
      `create → first result, pool ${f(r.createToFirstPool.p50)}`,
    ],
    [
      '… no pool (ms)',
      `p50 ${f(r.pauseResumePlain.resume.p50, 1)} p95 ${f(r.pauseResumePlain.resume.p95, 1)}`,
      '',
      `create → first result, no pool ${f(r.createToFirstNoPool.p50)}`,
    ],
    [
      'resume → first result, the DataFrame sandbox (ms)',
      `p50 ${f(r.pauseResumeDataFrame.resume.p50, 0)} max ${f(r.pauseResumeDataFrame.resume.max, 0)}`,
      '≤ 1500',
      `Jupyter start ${f(jup.start_ms?.p50, 0)}`,
    ],
    [
      '… into a pool preloading pandas (ms)',
      `p50 ${f(r.pauseResumeDataFramePool.resume.p50, 0)} max ${f(r.pauseResumeDataFramePool.resume.max, 0)}`,
      '≤ 300',
      '',
    ],
    [
      'service killed (kill -9) with 100 live sandboxes → all answer again, from the new process start (s)',
      `${f(r.takeOver.allAnsweredMs / 1000, 2)} (listening after ${f(r.takeOver.listeningMs / 1000, 2)})`,
      '≤ 3',
      'every sandbox with its own variable',
    ],
    [
      'checkpoints on: run_code print(1), calls 100 ms apart (each keeps one), Node raw client (ms)',
      `p50 ${f(r.checkpoints.pacedOn.p50, 3)} p95 ${f(r.checkpoints.pacedOn.p95, 3)}`,
      'within 10 % of off',
      `off p50 ${f(r.checkpoints.pacedOff.p50, 3)} → ${f((r.checkpoints.pacedOn.p50 / r.checkpoints.pacedOff.p50 - 1) * 100, 1)} %`,
    ],
    [
      '… back to back (they share checkpoints: CHECKPOINT_WAIT_MS) (ms)',
      `p50 ${f(r.checkpoints.backToBackOn.p50, 3)} p95 ${f(r.checkpoints.backToBackOn.p95, 3)}`,
      '',
      `off p50 ${f(r.checkpoints.backToBackOff.p50, 3)} → ${f((r.checkpoints.backToBackOn.p50 / r.checkpoints.backToBackOff.p50 - 1) * 100, 1)} %`,
    ],
    [
      'rollback one step, kernel holding a 1e6-row DataFrame (ms)',
      `p50 ${f(r.checkpoints.rollbackDataFrame.p50, 1)} p95 ${f(r.checkpoints.rollbackDataFrame.p95, 1)} max ${f(r.checkpoints.rollbackDataFrame.max, 1)}`,
      '≤ 50',
      `pause of the same sandbox ${f(r.pauseResumeDataFrame.pause.p50, 0)}`,
    ],
    [
      'memory per kept checkpoint after a cell that changed 1 variable (MiB)',
      r.checkpoints.memoryPerCheckpointMiB
        ? `p50 ${f(r.checkpoints.memoryPerCheckpointMiB.p50, 2)} max ${f(r.checkpoints.memoryPerCheckpointMiB.max, 2)}`
        : 'not readable',
      '≤ 1',
      'copy-on-write: the heap (1e6-row DataFrame) is shared',
    ],
    [
      'processes of paused sandboxes',
      `${r.pausedProcesses.after} for ${r.pausedProcesses.sandboxes} sandboxes`,
      '0',
      `${r.pausedProcesses.before} while they were idle`,
    ],
  ];
  console.log('\n| figure | measured | target | baseline (same run) |\n|---|---|---|---|');
  for (const row of rows) console.log(`| ${row.join(' | ')} |`);
  console.log('\nwritten: bench/results.json');
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
