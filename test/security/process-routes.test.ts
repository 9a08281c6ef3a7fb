/**
 * The routes of background processes, watches, contexts and file moves under the attacks every route gets
 * (memory backend: none of these reach a sandbox): another key's sandbox is a 404, NUL and lone surrogates
 * in any string field a 4xx, a 100 MB body a 413 at the route's limit, deep JSON a 400.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postChunked, startTestApp, type TestApp } from '../helpers/app.js';

const KEY_A = 'tenant-a-key';
const KEY_B = 'tenant-b-key';
const as = (key: string) => ({ authorization: `Bearer ${key}` });
let t: TestApp;
let id: string;

beforeAll(async () => {
  // The key's in-flight body budget has its own test (request-attacks): injected requests never 'close', so
  // their declared sizes would add up here.
  t = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_BODY_BYTES_PER_KEY: String(8 * 1024 ** 3) });
  id = (await t.post('/create_sandbox', {}, as(KEY_A))).body.sandbox_id;
});
afterAll(async () => {
  await t.close();
});

/** Each route with a body it takes, and the string fields to poison. */
const ROUTES: Array<[string, Record<string, unknown>, string[]]> = [
  ['/start_process', { command: 'sleep 1', cwd: 'x', tag: 't' }, ['command', 'cwd', 'tag']],
  ['/process_output', { pid: 2 }, []],
  ['/list_processes', {}, []],
  ['/send_input', { pid: 2, data: 'x' }, ['data']],
  ['/signal_process', { pid: 2, signal: 'SIGTERM' }, ['signal']],
  ['/resize_terminal', { pid: 2, cols: 80, rows: 24 }, []],
  ['/make_dir', { path: 'd' }, ['path']],
  ['/move_file', { source: 'a', destination: 'b' }, ['source', 'destination']],
  ['/remove_file', { path: 'd' }, ['path']],
  ['/file_info', { path: 'd' }, ['path']],
  ['/watch_dir', { path: 'd' }, ['path']],
  ['/watch_events', { watch_id: 'w1' }, ['watch_id']],
  ['/unwatch_dir', { watch_id: 'w1' }, ['watch_id']],
  ['/create_context', { language: 'python', cwd: 'x' }, ['language', 'cwd']],
  ['/list_contexts', {}, []],
  ['/restart_context', { context_id: 'ctx_1' }, ['context_id']],
  ['/remove_context', { context_id: 'ctx_1' }, ['context_id']],
];

const send = (url: string, payload: Buffer | string, key = KEY_A) =>
  postChunked(t.app, url, payload, { ...as(key), 'content-type': 'application/json' });

describe('process, watch, context and file-move routes', () => {
  it("answer another key's sandbox with the 404 of one that does not exist", async () => {
    for (const [url, body] of ROUTES) {
      const r = await t.post(url, { sandbox_id: id, ...body }, as(KEY_B));
      expect(r.status, url).toBe(404);
      expect(r.body.error.code, url).toBe('SANDBOX_NOT_FOUND');
    }
  });

  it('answer a NUL or a lone surrogate in any string field with a 4xx, never a 5xx', async () => {
    for (const bad of ['x\u0000y', 'x\ud800y']) {
      for (const [url, body, fields] of ROUTES) {
        for (const field of ['sandbox_id', ...fields]) {
          const r = await t.post(url, { sandbox_id: id, ...body, [field]: bad }, as(KEY_A));
          expect(r.status, `${url} ${field}`).toBeGreaterThanOrEqual(400);
          expect(r.status, `${url} ${field}`).toBeLessThan(500);
        }
      }
    }
  });

  it('refuse a 100 MB body at the route’s limit and deeply nested JSON, before parsing them', async () => {
    const huge = Buffer.alloc(100 * 1024 * 1024, 0x20);
    for (const [url] of ROUTES) {
      const big = await send(url, huge);
      expect(big.statusCode, url).toBe(413);
      const deep = await send(url, `{"sandbox_id": "${id}", "y": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`);
      expect(deep.statusCode, url).toBe(400);
    }
  }, 60_000);
});
