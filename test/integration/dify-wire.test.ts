/**
 * What Dify really sends (rebuilt from Dify's source, docs/dify.md and ../shared/reference/dify.md), as raw
 * bytes on a socket — not a friendlier version — and what it can take back: each row of issue 17's table.
 */
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';
import { loadConfig } from '../../src/config.js';

const KEY = 'dify-wire-key';
let t: TestApp;
let port: number;

beforeAll(async () => {
  t = await startTestApp(
    localEnv({
      API_KEY: KEY,
      MAX_SANDBOXES: '6',
      DIFY_SANDBOX_WORKERS: '2',
      DIFY_SANDBOX_MAX_QUEUED: '3',
      TOOL_SERVER_URL: 'http://code-interpreter:8000',
    }),
  );
  port = Number(new URL(await t.app.listen({ host: '127.0.0.1', port: 0 })).port);
});
afterAll(async () => {
  await t?.close();
});

/** Sends these exact bytes and reads the whole answer (the connection closes after it). */
function raw(request: Buffer): Promise<{ status: number; headers: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    socket.on('data', (d) => chunks.push(d));
    socket.on('error', reject);
    socket.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split).toString();
      let body = all.subarray(split + 4);
      if (/transfer-encoding: chunked/i.test(head)) {
        const parts: Buffer[] = [];
        for (let at = 0; ;) {
          const eol = body.indexOf('\r\n', at);
          const size = parseInt(body.subarray(at, eol).toString(), 16);
          if (!size) break;
          parts.push(body.subarray(eol + 2, eol + 2 + size));
          at = eol + 2 + size + 2;
        }
        body = Buffer.concat(parts);
      }
      resolve({ status: Number(head.split(' ')[1]), headers: head, body });
    });
    socket.write(request);
  });
}

/** An httpx request as Dify's HTTP node (through ssrf_proxy.make_request) sends it. */
function httpx(method: string, path: string, headers: Record<string, string>, body: Buffer): Buffer {
  const lines = [
    `${method} ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Accept: */*',
    'Accept-Encoding: gzip, deflate',
    'Connection: close',
    'User-Agent: python-httpx/0.27.2',
    ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`),
    `Content-Length: ${body.length}`,
  ];
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`), body]);
}

const difyHeaders = { Authorization: `Bearer ${KEY}`, 'X-Dify-Workflow-Call-Depth': '0' };

describe("Dify's HTTP node", () => {
  it('sends a binary body with no Content-Type at all: the file is written', async () => {
    const id = (await t.post('/create_sandbox', {}, { authorization: `Bearer ${KEY}` })).body.sandbox_id;
    const bytes = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0, 1, 2, 255]);
    const r = await raw(httpx('POST', `/write_file?sandbox_id=${id}&remote_path=upload.png`, difyHeaders, bytes));
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toMatchObject({ status: 'success', remote_path: '/workspace/upload.png', size: 8 });
  });

  it('takes at most 1 MiB of text back: printing 900 KB answers under it, with the whole output in a linked file', async () => {
    const body = Buffer.from('print("x" * 900_000)');
    const r = await raw(httpx('POST', `/run_code?conversation_id=big-print`, { ...difyHeaders, 'Content-Type': 'text/plain' }, body));
    expect(r.status).toBe(200);
    expect(r.body.length).toBeLessThan(1024 * 1024);
    const answer = JSON.parse(r.body.toString());
    expect(answer.output_truncated).toBe(true);
    expect(answer.stdout).toMatch(/more bytes; the whole output is in \/workspace\/outputs\/output-/);
    const saved = answer.files.find((f: { path: string }) => f.path.includes('/outputs/output-'));
    const whole = await fetch(saved.url);
    expect((await whole.text()).length).toBe(900_001);
  });
});

describe("Dify's Code node (/v1/sandbox/run)", () => {
  const run = (body: string) =>
    raw(httpx('POST', '/v1/sandbox/run', { 'X-Api-Key': KEY, 'Content-Type': 'application/json' }, Buffer.from(body)));
  const runner = (code: string) => JSON.stringify({ language: 'python3', code, preload: '', enable_network: true });

  it('queues runs past its workers as dify-sandbox does, and refuses only past the queue', async () => {
    // Two workers and three places in the queue: five at once all run; the sixth and more may be refused.
    const five = await Promise.all(Array.from({ length: 5 }, (_, i) => run(runner(`import time; time.sleep(0.3); print(${i})`))));
    for (const [i, r] of five.entries()) {
      expect(r.status).toBe(200);
      expect(JSON.parse(r.body.toString()).data.stdout).toBe(`${i}\n`);
    }
    const many = await Promise.all(Array.from({ length: 9 }, () => run(runner('import time; time.sleep(0.3)'))));
    const refused = many.filter((r) => r.status === 503);
    expect(refused.length).toBeGreaterThan(0);
    for (const r of refused) expect(JSON.parse(r.body.toString())).toEqual({ code: -503, message: 'Too many requests' });
    expect(many.filter((r) => r.status === 200).length).toBeGreaterThanOrEqual(5);
  });

  it('keeps its own sandboxes: conversations that take every other sandbox do not crowd it out', async () => {
    // MAX_SANDBOXES 6, of which DIFY_SANDBOX_RESERVED (4) are the Code node's: keys get 2 (two tests above made them).
    const ids: string[] = [];
    let refusal: { status: number; body: { error: { code: string } } } | null = null;
    for (let i = 0; i < 6 && !refusal; i++) {
      const r = await t.post('/create_sandbox', {}, { authorization: `Bearer ${KEY}` });
      if (r.status === 200) ids.push(r.body.sandbox_id);
      else refusal = r;
    }
    expect(refusal?.body.error.code).toBe('SANDBOX_LIMIT_REACHED');
    const listed = await t.app.inject({ method: 'GET', url: '/sandboxes', headers: { authorization: `Bearer ${KEY}` } });
    expect(JSON.parse(listed.body).sandboxes).toHaveLength(2);
    const r = await run(runner('print("still runs")'));
    expect(JSON.parse(r.body.toString()).data.stdout).toBe('still runs\n');
    for (const id of ids) await t.post('/stop_sandbox', { sandbox_id: id }, { authorization: `Bearer ${KEY}` });
  });

  it('answers a body it cannot bind with 200 {code: -400}, as dify-sandbox does', async () => {
    for (const body of ['{"language": "python3"', '{"language": "python3"}', '{"code": "print(1)"}', '[]']) {
      const r = await run(body);
      expect(r.status, body).toBe(200);
      const answer = JSON.parse(r.body.toString());
      expect(answer.code, body).toBe(-400);
      expect(answer.message, body).toEqual(expect.any(String));
    }
  });
});

describe('defaults, MCP and the tool document', () => {
  it('answers a call that runs too long before Dify stops waiting (60 s), so its retry never runs it twice', () => {
    const c = loadConfig({});
    expect(c.EXEC_TIMEOUT_S + c.INTERRUPT_GRACE_MS / 1000).toBeLessThan(55);
    expect(c.DIFY_SANDBOX_TIMEOUT_S).toBeLessThan(60);
  });

  it('serves MCP at /mcp/ too, and answers OAuth discovery with 404, not 401', async () => {
    const init = JSON.stringify({
      jsonrpc: '2.0',
      id: 0,
      method: 'initialize',
      params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'Dify', version: '1.9.0' } },
    });
    const mcp = await raw(
      httpx(
        'POST',
        '/mcp/',
        { ...difyHeaders, 'Content-Type': 'application/json', Accept: 'application/json, text/event-stream' },
        Buffer.from(init),
      ),
    );
    expect(mcp.status).toBe(200);
    expect(mcp.body.toString()).toContain('"serverInfo"');
    for (const path of [
      '/.well-known/oauth-protected-resource',
      '/.well-known/oauth-protected-resource/mcp',
      '/.well-known/oauth-authorization-server',
    ]) {
      const probe = await raw(httpx('GET', path, {}, Buffer.alloc(0)));
      expect(probe.status, path).toBe(404);
    }
  });

  it("names the in-network address as the tool document's server, which Dify's api container calls", async () => {
    const doc = await raw(httpx('GET', '/dify/openapi.json', {}, Buffer.alloc(0)));
    expect(JSON.parse(doc.body.toString()).servers[0].url).toBe('http://code-interpreter:8000');
  });
});
