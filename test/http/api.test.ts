/** The HTTP API through app.inject() over the in-memory backend. */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import SwaggerParser from '@apidevtools/swagger-parser';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startServer } from '../helpers/http-server.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp({
    PUBLIC_BASE_URL: 'http://ciw.example:8000/',
    MAX_SANDBOXES: '5',
    DIFY_SANDBOX_RESERVED: '0',
    MAX_FILE_BYTES: '2097152',
  });
});
afterAll(async () => t.close());
afterEach(async () => {
  for (const s of t.service.list('anonymous')) await t.service.stop('anonymous', s.id);
});

const create = async (body: object = {}) => {
  const r = await t.post('/create_sandbox', body);
  expect(r.status).toBe(200);
  return r.body.sandbox_id as string;
};

describe('sandbox lifecycle', () => {
  it('creates a sandbox with the original fields and info', async () => {
    const r = await t.post('/create_sandbox', {});
    expect(r.status).toBe(200);
    expect(r.body.sandbox_id).toMatch(/^sbx_[0-9a-f]{24}$/);
    expect(r.body.reused).toBe(false);
    expect(r.body.info).toMatchObject({ id: r.body.sandbox_id, status: 'running', backend: 'memory', workspace: '/workspace' });
    expect(Date.parse(r.body.info.expires_at)).toBeGreaterThan(Date.now());
  });

  it('accepts a create with no body at all', async () => {
    const res = await t.app.inject({ method: 'POST', url: '/create_sandbox' });
    expect(res.statusCode).toBe(200);
    expect(JSON.parse(res.body).sandbox_id).toMatch(/^sbx_/);
  });

  it('returns the live sandbox of a conversation', async () => {
    const a = await t.post('/create_sandbox', { conversation_id: 'conv-1' });
    const b = await t.post('/create_sandbox', { conversation_id: 'conv-1' });
    expect(b.body.sandbox_id).toBe(a.body.sandbox_id);
    expect(b.body.reused).toBe(true);
    expect(b.body.info.conversation_id).toBe('conv-1');
  });

  it("creates a conversation's sandbox on first use by run_code", async () => {
    const r1 = await t.post('/run_code', { conversation_id: 'conv-2', code: 'n = 5' });
    expect(r1.status).toBe(200);
    const r2 = await t.post('/run_code', { conversation_id: 'conv-2', code: 'print(n)' });
    expect(r2.body.output).toBe('5\n');
    expect(r2.body.sandbox_id).toBe(r1.body.sandbox_id);
  });

  it('gets info, lists and stops sandboxes', async () => {
    const id = await create();
    const info = await t.post('/get_sandbox_info', { sandbox_id: id });
    expect(info.status).toBe(200);
    expect(info.body.id).toBe(id);
    const list = await t.app.inject({ method: 'GET', url: '/sandboxes' });
    expect(JSON.parse(list.body).sandboxes.map((s: { id: string }) => s.id)).toContain(id);
    expect((await t.post('/stop_sandbox', { sandbox_id: id })).body).toEqual({ status: 'stopped', sandbox_id: id });
    expect((await t.post('/stop_sandbox', { sandbox_id: id })).body).toEqual({ status: 'not_found', sandbox_id: id });
    const after = await t.post('/run_code', { sandbox_id: id, code: 'print(1)' });
    expect(after.status).toBe(404);
    expect(after.body.error.code).toBe('SANDBOX_NOT_FOUND');
    expect(after.body.error.message).toMatch(/was stopped at/);
    expect(after.body.detail).toBe(after.body.error.message);
  });

  it('answers 404 SANDBOX_NOT_FOUND for an unknown id', async () => {
    const r = await t.post('/run_code', { sandbox_id: 'sbx_nope', code: 'print(1)' });
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('SANDBOX_NOT_FOUND');
    expect(r.body.error.message).toMatch(/create_sandbox/);
  });

  it('refuses a create beyond MAX_SANDBOXES with 429 and Retry-After', async () => {
    for (let i = 0; i < 5; i++) await create();
    const r = await t.post('/create_sandbox', {});
    expect(r.status).toBe(429);
    expect(r.body.error.code).toBe('SANDBOX_LIMIT_REACHED');
    expect(r.headers['retry-after']).toBe('5');
  });

  it('refuses a lifetime beyond the configured maximum', async () => {
    const r = await t.post('/create_sandbox', { max_lifetime_seconds: 10 ** 9 });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/SANDBOX_MAX_LIFETIME_S/);
  });
});

describe('running code', () => {
  it('keeps state: x = 41 then print(x + 1) prints 42', async () => {
    const id = await create();
    expect((await t.post('/run_code', { sandbox_id: id, code: 'x = 41' })).body.error).toBeNull();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'print(x + 1)' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({
      output: '42\n',
      stdout: '42\n',
      stderr: '',
      error: null,
      timed_out: false,
      state_preserved: true,
      exit_code: null,
    });
  });

  it('shows a last expression in output and results', async () => {
    const id = await create();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'print("a")\n6 + 36' });
    expect(r.body.output).toBe('a\n42\n');
    expect(r.body.stdout).toBe('a\n');
    expect(r.body.results).toEqual([{ type: 'execute_result', data: { 'text/plain': '42' } }]);
  });

  it('reports a user exception with HTTP 200', async () => {
    const id = await create();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'raise KeyError("k")' });
    expect(r.status).toBe(200);
    expect(r.body.error).toMatchObject({ name: 'KeyError', value: 'k' });
    expect(r.body.output).toContain('KeyError: k');
  });

  it('runs shell languages through run_code with exit code', async () => {
    const id = await create();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'echo hi; exit 2', language: 'bash' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ stdout: 'hi\n', exit_code: 2 });
    expect(r.body.error).toMatchObject({ name: 'CommandFailed', value: 'exit code 2' });
  });

  it('rejects an unknown language listing the accepted ones', async () => {
    const id = await create();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'x', language: 'cobol' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('UNSUPPORTED_LANGUAGE');
    expect(r.body.error.message).toContain('py, python, python3, js, javascript, node, nodejs, bash, sh, shell');
  });

  it('rejects a timeout beyond the maximum', async () => {
    const id = await create();
    const r = await t.post('/run_code', { sandbox_id: id, code: 'x = 1', timeout: 100000 });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/EXEC_MAX_TIMEOUT_S/);
  });

  it('executes commands', async () => {
    const id = await create();
    const r = await t.post('/execute_command', { sandbox_id: id, command: 'echo one && echo two' });
    expect(r.body).toMatchObject({ output: 'one\ntwo\n', exit_code: 0, timed_out: false });
  });
});

describe('request validation', () => {
  it('names a missing field', async () => {
    const r = await t.post('/run_code', { sandbox_id: 'x' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
    expect(r.body.error.message).toContain('code');
  });

  it('asks for sandbox_id or conversation_id', async () => {
    const r = await t.post('/run_code', { code: 'print(1)' });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/sandbox_id.*conversation_id/);
  });

  it('answers malformed JSON with 400, not 500', async () => {
    const res = await t.app.inject({
      method: 'POST',
      url: '/run_code',
      payload: '{"code": "x',
      headers: { 'content-type': 'application/json' },
    });
    expect(res.statusCode).toBe(400);
    expect(JSON.parse(res.body).error.code).toBe('VALIDATION_FAILED');
  });

  it('answers a too-large body with 413', async () => {
    const id = await create();
    const r = await t.post('/write_file', { sandbox_id: id, remote_path: 'a', content: 'x'.repeat(4 * 1024 * 1024) });
    expect(r.status).toBe(413);
    expect(r.body.error.code).toBe('PAYLOAD_TOO_LARGE');
  });

  it('reads a binary body into one buffer, and refuses one past the limit or shorter than announced', async () => {
    const id = await create();
    const data = randomBytes(300_000);
    const ok = await t.app.inject({
      method: 'POST',
      url: `/upload_file?sandbox_id=${id}&remote_filename=raw.bin`,
      payload: data,
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(ok.statusCode).toBe(200);
    const back = await t.service.files.read('anonymous', { sandboxId: id }, 'raw.bin');
    expect(Buffer.compare(back.data, data)).toBe(0);
    const big = await t.app.inject({
      method: 'POST',
      url: `/upload_file?sandbox_id=${id}&remote_filename=big.bin`,
      payload: Buffer.alloc(4 * 1024 * 1024),
      headers: { 'content-type': 'application/octet-stream' },
    });
    expect(big.statusCode).toBe(413);
    expect(JSON.parse(big.body).error.code).toBe('PAYLOAD_TOO_LARGE');
    const short = await t.app.inject({
      method: 'POST',
      url: `/upload_file?sandbox_id=${id}&remote_filename=short.bin`,
      payload: Buffer.alloc(10),
      headers: { 'content-type': 'application/octet-stream', 'content-length': '20' },
    });
    expect(short.statusCode).toBe(400);
  });

  it('answers an unknown route with a JSON 404', async () => {
    const r = await t.post('/nope', {});
    expect(r.status).toBe(404);
    expect(r.body.error.code).toBe('ROUTE_NOT_FOUND');
  });
});

describe('files', () => {
  it('writes base64 and serves identical bytes with attachment headers', async () => {
    const id = await create();
    const data = randomBytes(1024 * 1024);
    const w = await t.post('/write_file', {
      sandbox_id: id,
      remote_path: 'out/data.bin',
      content: data.toString('base64'),
      encoding: 'base64',
    });
    expect(w.body).toEqual({ status: 'success', sandbox_id: id, remote_path: '/workspace/out/data.bin', size: data.length });
    const d = await t.post('/download_file', { sandbox_id: id, remote_path: 'out/data.bin' });
    expect(d.body).toMatchObject({ filename: 'data.bin', size: data.length, mime_type: 'application/octet-stream' });
    expect(d.body.download_url).toMatch(new RegExp(`^http://ciw\\.example:8000/files/${id}/out/data\\.bin\\?exp=\\d+&sig=[\\w-]+$`));
    const url = new URL(d.body.download_url);
    const res = await t.app.inject({ method: 'GET', url: url.pathname + url.search });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-disposition']).toContain('attachment; filename="data.bin"');
    expect(Buffer.compare(res.rawPayload, data)).toBe(0);
  });

  it('accepts path as an alias of remote_path and text content', async () => {
    const id = await create();
    const w = await t.post('/write_file', { sandbox_id: id, path: 'notes/ü.txt', content: 'héllo' });
    expect(w.body.size).toBe(Buffer.byteLength('héllo'));
    const res = await t.app.inject({ method: 'GET', url: `/files/${id}/notes/${encodeURIComponent('ü.txt')}` });
    expect(res.body).toBe('héllo');
    expect(res.headers['content-type']).toBe('text/plain; charset=utf-8');
    expect(res.headers['content-disposition']).toContain("filename*=UTF-8''%C3%BC.txt");
  });

  it('rejects invalid base64 and a missing path', async () => {
    const id = await create();
    expect(
      (await t.post('/write_file', { sandbox_id: id, remote_path: 'a', content: '***', encoding: 'base64' })).body.error.message,
    ).toMatch(/base64/);
    expect((await t.post('/write_file', { sandbox_id: id, content: 'x' })).body.error.message).toMatch(/remote_path/);
  });

  it('refuses paths outside the workspace', async () => {
    const id = await create();
    const r = await t.post('/write_file', { sandbox_id: id, remote_path: '../../etc/x', content: 'x' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('PATH_OUTSIDE_WORKSPACE');
    const g = await t.app.inject({ method: 'GET', url: `/files/${id}/..%2F..%2Fetc%2Fpasswd` });
    expect(g.statusCode).toBe(400);
  });

  it('answers 404 for a missing file and lists directories', async () => {
    const id = await create();
    expect((await t.post('/download_file', { sandbox_id: id, remote_path: 'nope' })).status).toBe(404);
    await t.post('/write_file', { sandbox_id: id, remote_path: 'd/a.txt', content: 'a' });
    const l = await t.post('/list_files', { sandbox_id: id, path: 'd' });
    expect(l.body.entries).toEqual([expect.objectContaining({ name: 'a.txt', path: '/workspace/d/a.txt', type: 'file', size: 1 })]);
  });

  describe('upload_file', () => {
    let origin: Awaited<ReturnType<typeof startServer>>;
    let u: TestApp;
    const payload = randomBytes(5000);
    beforeAll(async () => {
      origin = await startServer({
        '/data.bin': (_req, res) => res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(payload),
        '/huge': (_req, res) => res.writeHead(200, { 'content-length': String(10 * 1024 * 1024) }).end(),
        '/expired': (_req, res) => res.writeHead(403, { 'content-type': 'text/plain' }).end('Signature expired'),
        // Loopback outside the allow-list (127.0.0.1/32): a regression must not send traffic off this machine.
        '/to-elsewhere': (_req, res) => res.writeHead(302, { location: 'http://127.0.0.2:9/latest/meta-data/' }).end(),
        '/stalls': (_req, res) => res.writeHead(200).write('partial'),
        '/chunked-huge': (_req, res) => {
          res.writeHead(200);
          for (let i = 0; i < 20; i++) res.write(Buffer.alloc(100 * 1024));
          res.end();
        },
      });
      u = await startTestApp({ OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32', MAX_FILE_BYTES: '1048576', UPLOAD_TIMEOUT_S: '0.5' });
    });
    afterAll(async () => {
      await u.close();
      await origin.close();
    });

    it('downloads a URL into the sandbox', async () => {
      const id = (await u.post('/create_sandbox', {})).body.sandbox_id;
      const r = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/data.bin`, remote_filename: 'in/data.bin' });
      expect(r.body).toMatchObject({ status: 'success', sandbox_id: id, remote_path: '/workspace/in/data.bin', size: payload.length });
      const res = await u.app.inject({ method: 'GET', url: `/files/${id}/in/data.bin` });
      expect(Buffer.compare(res.rawPayload, payload)).toBe(0);
      const named = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/data.bin` });
      expect(named.body.remote_path).toBe('/workspace/data.bin');
    });

    it('turns an error page into a 4xx, never a file', async () => {
      const id = (await u.post('/create_sandbox', {})).body.sandbox_id;
      const r = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/expired`, remote_filename: 'x' });
      expect(r.status).toBe(422);
      expect(r.body.error.code).toBe('FILE_URL_FETCH_FAILED');
      expect(r.body.error.message).toMatch(/HTTP 403.*expired/);
      const missing = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/missing`, remote_filename: 'x' });
      expect(missing.body.error.message).toMatch(/HTTP 404/);
      expect((await u.post('/download_file', { sandbox_id: id, remote_path: 'x' })).status).toBe(404);
    });

    it('refuses files over the limit, bad URLs and redirects to forbidden addresses', async () => {
      const id = (await u.post('/create_sandbox', {})).body.sandbox_id;
      expect((await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/huge` })).body.error.code).toBe('FILE_TOO_LARGE');
      const rel = await u.post('/upload_file', { sandbox_id: id, file_url: '/files/tools/abc.png' });
      expect(rel.status).toBe(400);
      expect(rel.body.error.message).toMatch(/FILES_URL/);
      expect((await u.post('/upload_file', { sandbox_id: id, file_url: 'file:///etc/passwd' })).body.error.code).toBe('FILE_URL_INVALID');
      const meta = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/to-elsewhere` });
      expect(meta.status).toBe(403);
      expect(meta.body.error.code).toBe('FILE_URL_NOT_ALLOWED');
    });

    it('gives up on a stalled download and on a body that outgrows the limit', async () => {
      const id = (await u.post('/create_sandbox', {})).body.sandbox_id;
      const stalled = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/stalls`, remote_filename: 's' });
      expect(stalled.status).toBe(422);
      expect(stalled.body.error.message).toMatch(/longer than 0.5 s \(UPLOAD_TIMEOUT_S\)/);
      const huge = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/chunked-huge`, remote_filename: 'h' });
      expect(huge.status).toBe(413);
      expect(huge.body.error.code).toBe('FILE_TOO_LARGE');
      expect((await u.post('/list_files', { sandbox_id: id })).body.entries).toEqual([]);
    });

    it('refuses loopback unless allow-listed', async () => {
      const id = await create();
      const r = await t.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/data.bin` });
      expect(r.status).toBe(403);
      expect(r.body.error.message).toMatch(/loopback address; allow it with OUTBOUND_ALLOW_CIDRS/);
      const byName = await t.post('/upload_file', { sandbox_id: id, file_url: `${origin.url.replace('127.0.0.1', 'localhost')}/data.bin` });
      expect(byName.status).toBe(403);
    });
  });
});

describe('authentication and ownership', () => {
  let a: TestApp;
  beforeAll(async () => {
    a = await startTestApp({ API_KEYS: 'key-one,key-two' });
  });
  afterAll(async () => a.close());

  it('refuses requests without a valid key', async () => {
    const none = await a.post('/create_sandbox', {});
    expect(none.status).toBe(401);
    expect(none.body.error.message).toMatch(/Authorization: Bearer/);
    expect((await a.post('/create_sandbox', {}, { authorization: 'Bearer wrong' })).status).toBe(401);
  });

  it("accepts Bearer and X-API-Key, and hides one key's sandboxes from another", async () => {
    const r = await a.post('/create_sandbox', {}, { authorization: 'Bearer key-one' });
    expect(r.status).toBe(200);
    const id = r.body.sandbox_id;
    expect((await a.post('/run_code', { sandbox_id: id, code: 'print(1)' }, { 'x-api-key': 'key-one' })).status).toBe(200);
    const other = await a.post('/run_code', { sandbox_id: id, code: 'print(1)' }, { 'x-api-key': 'key-two' });
    expect(other.status).toBe(404);
    expect((await a.post('/stop_sandbox', { sandbox_id: id }, { 'x-api-key': 'key-two' })).body.status).toBe('not_found');
    const files = await a.app.inject({ method: 'GET', url: `/files/${id}/x`, headers: { 'x-api-key': 'key-two' } });
    expect(files.statusCode).toBe(404);
  });

  it('keeps health and docs public', async () => {
    expect((await a.app.inject({ method: 'GET', url: '/health' })).statusCode).toBe(200);
    expect((await a.app.inject({ method: 'GET', url: '/openapi.json' })).statusCode).toBe(200);
    expect((await a.app.inject({ method: 'GET', url: '/docs/' })).statusCode).toBe(200);
  });
});

describe('expiry', () => {
  it('with pausing off (STATE_DIR=off), stops idle sandboxes and says when they expired', async () => {
    let now = Date.now();
    const e = await startTestApp({ STATE_DIR: 'off' }, () => now);
    try {
      const id = (await e.post('/create_sandbox', { idle_timeout_seconds: 60 })).body.sandbox_id;
      now += 30_000;
      await e.service.reap();
      expect((await e.post('/run_code', { sandbox_id: id, code: 'x = 1' })).status).toBe(200);
      now += 61_000;
      await e.service.reap();
      const r = await e.post('/run_code', { sandbox_id: id, code: 'x = 1' });
      expect(r.status).toBe(404);
      expect(r.body.error.message).toMatch(/expired at .*idle for 60 s/);
    } finally {
      await e.close();
    }
  });
});

describe('OpenAPI', () => {
  it('serves a valid OpenAPI 3 document with every endpoint', async () => {
    const res = await t.app.inject({ method: 'GET', url: '/openapi.json' });
    const doc = JSON.parse(res.body);
    await SwaggerParser.validate(structuredClone(doc));
    for (const p of [
      '/create_sandbox',
      '/run_code',
      '/execute_command',
      '/upload_file',
      '/write_file',
      '/download_file',
      '/stop_sandbox',
      '/pause_sandbox',
      '/resume_sandbox',
      '/fork_sandbox',
      '/get_sandbox_info',
      '/list_files',
      '/sandboxes',
      '/files/{sandbox_id}/{*}',
      '/health',
      '/start_process',
      '/process_output',
      '/list_processes',
      '/send_input',
      '/signal_process',
      '/resize_terminal',
      '/make_dir',
      '/move_file',
      '/remove_file',
      '/file_info',
      '/watch_dir',
      '/watch_events',
      '/unwatch_dir',
      '/create_context',
      '/list_contexts',
      '/restart_context',
      '/remove_context',
    ]) {
      expect(Object.keys(doc.paths)).toContain(p);
    }
    // E2B's routes are E2B's to document (docs/e2b.md), not part of this API's document.
    expect(Object.keys(doc.paths).filter((p) => p.startsWith('/e2b'))).toEqual([]);
    for (const [path, ops] of Object.entries(doc.paths as Record<string, Record<string, { operationId?: string }>>)) {
      for (const op of Object.values(ops)) expect(op.operationId, path).toBeTruthy();
    }
  });
});
