/** Every body and header shape Dify's HTTP Request node sends, over the in-memory backend. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startServer } from '../helpers/http-server.js';
import { DIFY_HEADERS, difyMultipart } from '../helpers/dify.js';

const KEY = 'dify-key';
let t: TestApp;
let origin: Awaited<ReturnType<typeof startServer>>;
const blob = randomBytes(3000);

beforeAll(async () => {
  origin = await startServer({
    '/files/abc/file-preview?timestamp=1&nonce=n&sign=s': (_q, s) => s.writeHead(200, { 'content-type': 'text/csv' }).end(blob),
  });
  t = await startTestApp({
    API_KEY: KEY,
    OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32',
    DIFY_FILES_URL_REWRITE: `https://dify.example.com=${origin.url}`,
  });
});
afterAll(async () => {
  await t.close();
  await origin.close();
});

const bearer = { authorization: `Bearer ${KEY}`, ...DIFY_HEADERS };
const inject = (url: string, payload: string | Buffer, contentType: string, headers: Record<string, string> = bearer) =>
  t.app.inject({ method: 'POST', url, payload, headers: { ...headers, 'content-type': contentType } });
const json = (r: { body: string }) => JSON.parse(r.body);

describe('bodies Dify can send', () => {
  it('raw text: the code as the body, other fields in the query string', async () => {
    const code = 'x = "quote\\" and backslash \\\\d"\nprint(x)';
    const r = await inject('/run_code?conversation_id=conv-raw&timeout=30', code, 'text/plain');
    expect(r.statusCode).toBe(200);
    expect(json(r).sandbox_id).toMatch(/^sbx_/);
    const again = await inject('/run_code?conversation_id=conv-raw', 'print(x)', 'text/plain');
    expect(json(again).sandbox_id).toBe(json(r).sandbox_id);
  });

  it('raw text for commands and file content', async () => {
    const c = await inject('/execute_command?conversation_id=conv-raw2', 'echo "hi there"', 'text/plain');
    expect(json(c).stdout).toBe('hi there\n');
    const w = await inject(
      '/write_file?conversation_id=conv-raw2&remote_path=notes.txt',
      'line with "quotes"\nand \\backslash',
      'text/plain; charset=utf-8',
    );
    expect(json(w).size).toBe(Buffer.byteLength('line with "quotes"\nand \\backslash'));
  });

  it('x-www-form-urlencoded, numbers as strings', async () => {
    const body = new URLSearchParams({
      conversation_id: 'conv-form',
      code: 'y = 20\ny + 22',
      timeout: '15',
      language: 'python',
    }).toString();
    const r = await inject('/run_code', body, 'application/x-www-form-urlencoded');
    expect(r.statusCode).toBe(200);
    expect(json(r).results[0].data['text/plain']).toBe('42');
  });

  it("form-data with Dify's empty placeholder part", async () => {
    const { payload, contentType } = difyMultipart({ conversation_id: 'conv-mp', command: 'echo from-form' });
    const r = await inject('/execute_command', payload, contentType);
    expect(r.statusCode).toBe(200);
    expect(json(r).stdout).toBe('from-form\n');
  });

  it("form-data with a file variable: the part's name is used when no path is given", async () => {
    const data = randomBytes(2048);
    const { payload, contentType } = difyMultipart({ conversation_id: 'conv-file' }, [
      { name: 'file', filename: 'sales.xlsx', type: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet', data },
    ]);
    const r = await inject('/upload_file', payload, contentType);
    expect(r.statusCode).toBe(200);
    expect(json(r)).toMatchObject({ status: 'success', remote_path: '/workspace/sales.xlsx', size: 2048 });
    const back = await t.app.inject({ method: 'GET', url: `/files/${json(r).sandbox_id}/sales.xlsx`, headers: bearer });
    expect(Buffer.compare(back.rawPayload, data)).toBe(0);
    const two = difyMultipart({ conversation_id: 'conv-file', remote_path: 'in' }, [
      { name: 'file', filename: 'a.txt', type: 'text/plain', data: Buffer.from('A') },
      { name: 'file', filename: 'b.txt', type: 'text/plain', data: Buffer.from('BB') },
    ]);
    const r2 = await inject('/upload_file', two.payload, two.contentType);
    expect(json(r2).files).toEqual([
      { remote_path: '/workspace/in/a.txt', size: 1 },
      { remote_path: '/workspace/in/b.txt', size: 2 },
    ]);
  });

  it('a binary body, the path in the query', async () => {
    const data = randomBytes(1000);
    const r = await inject('/upload_file?conversation_id=conv-bin&remote_filename=raw.bin', data, 'application/octet-stream');
    expect(json(r)).toMatchObject({ remote_path: '/workspace/raw.bin', size: 1000 });
  });

  it('base64 code, for bodies that must not contain quotes at all', async () => {
    const code = 'print("a \\"quoted\\" \\\\ line")';
    const r = await t.post('/run_code', { conversation_id: 'conv-b64', code_base64: Buffer.from(code).toString('base64') }, bearer);
    expect(r.status).toBe(200);
    expect(r.body.error).toBeNull();
    expect((await t.post('/run_code', { conversation_id: 'conv-b64', code_base64: '%%%' }, bearer)).status).toBe(400);
  });

  it('X-Api-Key works as well as Bearer, and conversation_id works for info and stop', async () => {
    const headers = { 'x-api-key': KEY, ...DIFY_HEADERS };
    const info = await t.post('/get_sandbox_info', { conversation_id: 'conv-info' }, headers);
    expect(info.status).toBe(200);
    expect(info.body.conversation_id).toBe('conv-info');
    const stop = await t.post('/stop_sandbox', { conversation_id: 'conv-info' }, headers);
    expect(stop.body).toEqual({ status: 'stopped', sandbox_id: info.body.id });
    expect((await t.post('/stop_sandbox', { conversation_id: 'conv-info' }, headers)).body.status).toBe('not_found');
  });
});

describe('Dify file URLs', () => {
  it('takes a Dify file object (or its JSON text), rewriting the public FILES_URL prefix to an internal one', async () => {
    const file = {
      dify_model_identity: '__dify__file__',
      type: 'document',
      transfer_method: 'local_file',
      filename: 'report.csv',
      url: 'https://dify.example.com/files/abc/file-preview?timestamp=1&nonce=n&sign=s',
    };
    const r = await t.post('/upload_file', { conversation_id: 'conv-url', file }, bearer);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ remote_path: '/workspace/report.csv', size: blob.length });
    const { payload, contentType } = difyMultipart({
      conversation_id: 'conv-url',
      file: JSON.stringify({ ...file, url: '', remote_url: file.url }),
      remote_filename: 'again.csv',
    });
    const r2 = await inject('/upload_file', payload, contentType);
    expect(json(r2)).toMatchObject({ remote_path: '/workspace/again.csv' });
  });

  it('says what to change in Dify when the URL is empty or relative', async () => {
    const empty = await t.post('/upload_file', { conversation_id: 'conv-url', file: { url: '', filename: 'x' } }, bearer);
    expect(empty.status).toBe(400);
    expect(empty.body.error.message).toMatch(/FILES_URL/);
    const relative = await t.post('/upload_file', { conversation_id: 'conv-url', file_url: '/files/abc/file-preview?timestamp=1' }, bearer);
    expect(relative.body.error.message).toMatch(/relative.*FILES_URL/);
    const nothing = await t.post('/upload_file', { conversation_id: 'conv-url' }, bearer);
    expect(nothing.body.error.message).toMatch(/file_url, a Dify file object/);
  });
});

describe('retries never run code twice', () => {
  it('replays the first answer for a repeated Idempotency-Key', async () => {
    await t.post('/run_code', { conversation_id: 'conv-idem', code: 'n = 0' }, bearer);
    const headers = { ...bearer, 'idempotency-key': 'run-7f3a' };
    const first = await t.post('/run_code', { conversation_id: 'conv-idem', code: 'n = n + 1\nprint(n)' }, headers);
    const second = await t.post('/run_code', { conversation_id: 'conv-idem', code: 'n = n + 1\nprint(n)' }, headers);
    expect(second.body).toEqual(first.body);
    expect(second.headers['idempotent-replayed']).toBe('true');
    expect((await t.post('/run_code', { conversation_id: 'conv-idem', code: 'print(n)' }, bearer)).body.stdout).toBe('1\n');
  });

  it('runs each iteration of a Loop node sending the documented key {{#sys.workflow_run_id#}}-run with its own code', async () => {
    // Dify renders the same key on every iteration; each iteration's code differs (its item is in it).
    await t.post('/run_code', { conversation_id: 'conv-loop', code: 'seen = []' }, bearer);
    const headers = { ...bearer, 'idempotency-key': '5d1e2c7a-4b7e-4a39-9a8e-0c1f7d9b3e21-run' };
    for (const item of ['a', 'b', 'c']) {
      const r = await t.post('/run_code', { conversation_id: 'conv-loop', code: `seen.append("${item}")\nprint(seen)` }, headers);
      expect(r.status).toBe(200);
      expect(r.headers['idempotent-replayed']).toBeUndefined();
    }
    // Dify's retry of the last iteration (same key, same body) is replayed, not run again.
    const retry = await t.post('/run_code', { conversation_id: 'conv-loop', code: 'seen.append("c")\nprint(seen)' }, headers);
    expect(retry.headers['idempotent-replayed']).toBe('true');
  });

  it('keeps user-code failures at 200 so Dify does not retry them', async () => {
    const r = await t.post('/run_code', { conversation_id: 'conv-err', code: 'raise ValueError("bad")' }, bearer);
    expect(r.status).toBe(200);
    expect(r.body.error.name).toBe('ValueError');
  });
});

describe('custom tool import', () => {
  it('serves a Dify-ready OpenAPI document: public server, operationIds, descriptions, flat scalar parameters', async () => {
    const app = await startTestApp({ API_KEY: KEY, PUBLIC_BASE_URL: 'https://ciw.example.com' });
    try {
      const res = await app.app.inject({ method: 'GET', url: '/dify/openapi.json' });
      const doc = JSON.parse(res.body);
      const SwaggerParser = (await import('@apidevtools/swagger-parser')).default;
      await SwaggerParser.validate(structuredClone(doc));
      expect(doc.servers[0].url).toBe('https://ciw.example.com');
      const ops = Object.values(
        doc.paths as Record<
          string,
          {
            post: {
              operationId: string;
              description: string;
              requestBody: {
                content: { 'application/json': { schema: { properties: Record<string, { type: string; description: string }> } } };
              };
            };
          }
        >,
      ).map((p) => p.post);
      expect(ops.length).toBeGreaterThanOrEqual(9);
      expect(ops.length).toBeLessThanOrEqual(100);
      for (const op of ops) {
        expect(op.operationId).toBeTruthy();
        expect(op.description.length).toBeGreaterThan(20);
        for (const [name, prop] of Object.entries(op.requestBody.content['application/json'].schema.properties)) {
          expect(['string', 'number', 'integer', 'boolean'], `${op.operationId}.${name}`).toContain(prop.type);
          expect(prop.description, `${op.operationId}.${name}`).toBeTruthy();
        }
      }
      const run = ops.find((o) => o.operationId === 'runCode')!;
      expect(Object.keys(run.requestBody.content['application/json'].schema.properties)).toEqual(
        expect.arrayContaining(['sandbox_id', 'conversation_id', 'code', 'language', 'timeout']),
      );
      expect(run.description).toMatch(/60 s/);
      const full = JSON.parse((await app.app.inject({ method: 'GET', url: '/openapi.json' })).body);
      expect(full.servers[0].url).toBe('https://ciw.example.com');
    } finally {
      await app.close();
    }
  });
});
