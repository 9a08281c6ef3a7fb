/**
 * An attack run against the real service process (local backend, two API keys, 127.0.0.1 only): slow and
 * idle connections with no key, bodies built to stall the event loop, downloads nobody reads. Meanwhile key
 * B keeps calling print(1). Every attack must be refused or cut off by the service itself, its memory must
 * stay bounded, and the figures are printed: /health's worst latency while attacks were refused, and key
 * B's latency under attack as a ratio to the same calls idle (reported, not asserted: shared machines).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { readFileSync } from 'node:fs';
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js';
import { localEnv } from '../helpers/local.js';

const KEY_A = 'attack-run-key-a';
const KEY_B = 'attack-run-key-b';
const MiB = 1024 * 1024;
const DOWNLOAD_BYTES = 40 * MiB;

let server: ServerProcess;
let base: string;
let port: number;

const call = async (path: string, body: unknown, key = KEY_B) => {
  const r = await fetch(`${base}${path}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
  return { status: r.status, body: (await r.json()) as any };
};

const rssBytes = () => Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${server.child.pid}/status`, 'utf8'))![1]) * 1024;

/** A raw connection that reports when the server ends it. */
function rawConnection(): { socket: Socket; closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  socket.on('error', () => undefined);
  let text = '';
  socket.on('data', (d) => (text += d.toString('latin1')));
  const closed = new Promise<string>((resolve) => socket.once('close', () => resolve(text)));
  return { socket, closed };
}

async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

beforeAll(async () => {
  server = startServerProcess(
    localEnv({
      API_KEYS: `${KEY_A},${KEY_B}`,
      HOST: '127.0.0.1',
      PORT: '0',
      POOL_SIZE: '0',
      HTTP_HEADERS_TIMEOUT_S: '2',
      HTTP_REQUEST_TIMEOUT_S: '4',
      HTTP_KEEPALIVE_TIMEOUT_S: '5',
      FILE_SEND_IDLE_TIMEOUT_S: '2',
      MAX_FILE_BYTES: String(64 * MiB),
      SANDBOX_DISK_BYTES: String(256 * MiB),
      MAX_CONNECTIONS: '400',
    }),
  );
  base = await server.listening(30_000);
  port = Number(new URL(base).port);
}, 40_000);
afterAll(async () => {
  if (!server || server.child.exitCode !== null) return;
  const exited = new Promise((r) => server.child.once('exit', r));
  server.child.kill('SIGTERM');
  const killer = setTimeout(() => server.child.kill('SIGKILL'), 15_000);
  await exited;
  clearTimeout(killer);
}, 30_000);

describe('an attack run against the real service', () => {
  it('refuses or cuts off every attack, keeps its memory, and keeps answering key B', async () => {
    const sandboxB = (await call('/create_sandbox', {})).body.sandbox_id as string;
    const printOne = () => call('/run_code', { sandbox_id: sandboxB, code: 'print(1)' }).then((r) => expect(r.body.stdout).toBe('1\n'));
    for (let i = 0; i < 10; i++) await printOne(); // warm
    const idle: number[] = [];
    for (let i = 0; i < 40; i++) idle.push(await timed(printOne));

    // Key A's files to download, 40 MiB each in five sandboxes, with signed links (no key needed to use them).
    const links: string[] = [];
    for (let i = 0; i < 5; i++) {
      const sandboxA = (await call('/create_sandbox', {}, KEY_A)).body.sandbox_id as string;
      await call('/execute_command', { sandbox_id: sandboxA, command: `head -c ${DOWNLOAD_BYTES} /dev/urandom > big.bin` }, KEY_A);
      links.push((await call('/download_file', { sandbox_id: sandboxA, remote_path: 'big.bin' }, KEY_A)).body.download_url as string);
    }
    const rssBefore = rssBytes();

    // 1. 100 connections without a key, each sending a body slowly: a 401, and the connection goes with it.
    const slow = Array.from({ length: 100 }, () => {
      const c = rawConnection();
      c.socket.write(`POST /run_code HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n{"code": "`);
      const drip = setInterval(() => c.socket.writable && c.socket.write('x'), 200);
      void c.closed.then(() => clearInterval(drip));
      return c;
    });
    // 2. 50 connections that never send a byte: closed after HTTP_HEADERS_TIMEOUT_S.
    const silent = Array.from({ length: 50 }, () => rawConnection());
    // 3. Five downloads nobody reads: cut off after FILE_SEND_IDLE_TIMEOUT_S, holding little meanwhile.
    const stalledSince = Date.now();
    const stalled = links.map((link) => {
      const url = new URL(link);
      const c = rawConnection();
      c.socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: x\r\n\r\n`);
      c.socket.pause();
      return c;
    });
    // 4. Bodies built to hold the event loop, over and over, with /health probed all along.
    const spaces = `${' '.repeat(1_000_000)}!`;
    const bodies = [
      JSON.stringify({ sandbox_id: sandboxB, remote_path: 'a', encoding: 'base64', content: spaces }),
      JSON.stringify({ sandbox_id: sandboxB, code_base64: spaces }),
      `{"code": "1", "x": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`,
      `{"code": "1", "x": [${Array(1_500_000).fill('{}').join(',')}]}`,
    ];
    let healthWorst = 0;
    let probing = true;
    const prober = (async () => {
      while (probing) {
        healthWorst = Math.max(healthWorst, await timed(() => fetch(`${base}/health`).then((r) => r.text())));
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const refusals = (async () => {
      for (let round = 0; round < 5; round++) {
        for (const [i, body] of bodies.entries()) {
          // The answer is a 400; or, when the service refused the body at its first bad chunk and Node closed
          // the connection before the client had written the rest, the client's write fails (EPIPE).
          const r = await fetch(`${base}/${i === 0 ? 'write_file' : 'run_code'}`, {
            method: 'POST',
            headers: { authorization: `Bearer ${KEY_A}`, 'content-type': 'application/json', 'idempotency-key': `r${round}-${i}` },
            body,
          }).catch((err: Error & { cause?: { code?: string } }) => {
            expect(['EPIPE', 'ECONNRESET']).toContain(err.cause?.code);
            return null;
          });
          if (r) {
            expect(r.status).toBe(400);
            await r.text();
          }
        }
      }
    })();
    const underAttack: number[] = [];
    for (let i = 0; i < 40; i++) underAttack.push(await timed(printOne));
    await refusals;

    // The stalled downloads hold a few hundred KiB each in the service, not their 40 MiB; then they are cut.
    await new Promise((r) => setTimeout(r, Math.max(1000, stalledSince + 1500 - Date.now())));
    const rssStalled = rssBytes();
    await new Promise((r) => setTimeout(r, Math.max(0, stalledSince + 4500 - Date.now())));
    probing = false;
    await prober;

    const slowAnswers = await Promise.all(slow.map((c) => c.closed));
    for (const text of slowAnswers) expect(text).toMatch(/^HTTP\/1\.1 401/);
    await Promise.all(silent.map((c) => c.closed));
    for (const c of stalled) c.socket.resume();
    const received = (await Promise.all(stalled.map((c) => c.closed))).map((t) => t.length);
    for (const n of received) expect(n).toBeLessThan(DOWNLOAD_BYTES);

    const growthMiB = (rssStalled - rssBefore) / MiB;
    console.log(
      `[security] attack run: /health worst ${healthWorst.toFixed(1)} ms while attacks were refused; key B print(1) median ` +
        `${median(idle).toFixed(2)} ms idle, ${median(underAttack).toFixed(2)} ms under attack (ratio ${(median(underAttack) / median(idle)).toFixed(2)}); ` +
        `service memory +${growthMiB.toFixed(1)} MiB with 5 unread 40 MiB downloads`,
    );
    expect(growthMiB).toBeLessThan(100);

    // Afterwards the service is whole: key B runs, and the download works for a reader that reads.
    await printOne();
    const whole = await fetch(links[0]);
    expect((await whole.arrayBuffer()).byteLength).toBe(DOWNLOAD_BYTES);
  }, 120_000);

  it('keeps a connection whose call runs silently for longer than the header timeout', async () => {
    const id = (await call('/create_sandbox', {})).body.sandbox_id as string;
    const body = JSON.stringify({ sandbox_id: id, code: 'import time\ntime.sleep(3)\nprint("done")' });
    const c = rawConnection();
    c.socket.write(
      `POST /run_code HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY_B}\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`,
    );
    const answer = await new Promise<string>((resolve) => {
      let text = '';
      c.socket.on('data', (d) => {
        text += d;
        if (text.includes('"done\\n"')) resolve(text);
      });
      void c.closed.then(() => resolve(text));
    });
    expect(answer).toMatch(/^HTTP\/1\.1 200/);
    c.socket.destroy();
  }, 30_000);

  it("lets link holders keep at most two of a sandbox's downloads going at once", async () => {
    const id = (await call('/create_sandbox', {}, KEY_A)).body.sandbox_id as string;
    await call('/execute_command', { sandbox_id: id, command: `head -c ${DOWNLOAD_BYTES} /dev/urandom > big.bin` }, KEY_A);
    const url = new URL((await call('/download_file', { sandbox_id: id, remote_path: 'big.bin' }, KEY_A)).body.download_url as string);
    const stalled = [rawConnection(), rawConnection()];
    for (const c of stalled) {
      c.socket.write(`GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: x\r\n\r\n`);
      c.socket.pause();
    }
    await new Promise((r) => setTimeout(r, 1000));
    const third = await fetch(url);
    expect(third.status).toBe(429);
    expect(((await third.json()) as any).error.code).toBe('CALL_LIMIT_REACHED');
    for (const c of stalled) c.socket.destroy();
    await Promise.all(stalled.map((c) => c.closed));
    // Once they are gone, the link works again.
    let again = await fetch(url);
    for (let i = 0; i < 20 && again.status === 429; i++) {
      await again.arrayBuffer();
      await new Promise((r) => setTimeout(r, 200));
      again = await fetch(url);
    }
    expect((await again.arrayBuffer()).byteLength).toBe(DOWNLOAD_BYTES);
  }, 30_000);

  it('refuses connections past MAX_CONNECTIONS at once instead of running out of descriptors', async () => {
    const many = Array.from({ length: 420 }, () => rawConnection());
    let refused = 0;
    for (const c of many) void c.closed.then(() => refused++);
    await new Promise((r) => setTimeout(r, 1500)); // before HTTP_HEADERS_TIMEOUT_S (2 s) would close them anyway
    expect(refused).toBeGreaterThanOrEqual(20);
    for (const c of many) c.socket.destroy();
    await Promise.all(many.map((c) => c.closed));
    expect((await fetch(`${base}/health`)).status).toBe(200);
  }, 30_000);
});
