/**
 * The E2B front end under attack, as every other route is: other keys' and forged tokens' sandboxes are 404s,
 * bad input is a 4xx (never a 5xx), bodies are bounded before they are read, paths stay in the workspace, and
 * output limits hold on /execute and process.Process/Start alike.
 */
import { createHash } from 'node:crypto';
import { connect } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY_A = `e2b_${'a'.repeat(40)}`;
const KEY_B = `e2b_${'b'.repeat(40)}`;
let t: TestApp;
let sbx: { sandboxID: string; envdAccessToken: string };
let other: { sandboxID: string; envdAccessToken: string };

const create = async (key: string) => {
  const r = await t.app.inject({ method: 'POST', url: '/v2/sandboxes', headers: { 'x-api-key': key }, payload: { templateID: 'base' } });
  expect(r.statusCode).toBe(201);
  return JSON.parse(r.body);
};
const envd = (s = sbx, token = s.envdAccessToken) => ({
  'e2b-sandbox-id': s.sandboxID,
  'e2b-sandbox-port': '49983',
  'x-access-token': token,
});
const envelope = (message: unknown) => {
  const json = Buffer.from(JSON.stringify(message));
  const head = Buffer.from([0, 0, 0, 0, 0]);
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
};

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_OUTPUT_BYTES: '100000' }));
  sbx = await create(KEY_A);
  other = await create(KEY_B);
});
afterAll(async () => {
  await t?.close();
});

describe('E2B routes', () => {
  it("answer another key's sandbox, a forged token or none with a 404, on every plane", async () => {
    const calls: Array<[string, string, Record<string, string>, unknown?]> = [
      ['GET', `/files?path=/home/user/x`, {}],
      ['POST', '/execute', { 'content-type': 'application/json' }, { code: '1' }],
      ['GET', '/contexts', {}],
      ['POST', '/process.Process/List', { 'content-type': 'application/json' }, {}],
      ['POST', '/filesystem.Filesystem/Stat', { 'content-type': 'application/json' }, { path: '/home/user' }],
      ['GET', '/health', {}],
    ];
    for (const [method, url, headers, payload] of calls) {
      for (const auth of [envd(sbx, other.envdAccessToken), envd(sbx, 'x'.repeat(64)), { 'e2b-sandbox-id': sbx.sandboxID }]) {
        const r = await t.app.inject({
          method: method as 'GET',
          url,
          headers: { ...headers, ...auth },
          ...(payload ? { payload: payload as object } : {}),
        });
        expect(r.statusCode, `${method} ${url}`).toBe(404);
        expect(r.body, url).not.toMatch(/home\/user|workspace/);
      }
    }
    for (const [method, url] of [
      ['GET', `/sandboxes/${sbx.sandboxID}`],
      ['DELETE', `/sandboxes/${sbx.sandboxID}`],
      ['POST', `/sandboxes/${sbx.sandboxID}/timeout`],
      ['POST', `/sandboxes/${sbx.sandboxID}/pause`],
      ['POST', `/v2/sandboxes/${sbx.sandboxID}/connect`],
      ['GET', `/sandboxes/${sbx.sandboxID}/metrics`],
    ] as const) {
      const r = await t.app.inject({ method, url, headers: { 'x-api-key': KEY_B }, payload: { timeout: 10 } });
      expect(r.statusCode, `${method} ${url}`).toBe(404);
      expect(JSON.parse(r.body)).toEqual({ code: 404, message: expect.any(String) });
    }
    const listed = await t.app.inject({ method: 'GET', url: '/v2/sandboxes', headers: { 'x-api-key': KEY_B } });
    expect(JSON.parse(listed.body).map((s: { sandboxID: string }) => s.sandboxID)).toEqual([other.sandboxID]);
    const noKey = await t.app.inject({ method: 'POST', url: '/v2/sandboxes', payload: {} });
    expect(noKey.statusCode).toBe(401);
    expect((await t.app.inject({ method: 'GET', url: `/sandboxes/${sbx.sandboxID}`, headers: { 'x-api-key': KEY_A } })).statusCode).toBe(
      200,
    );
  });

  it('refuse NUL and lone surrogates with a 4xx wherever a path, command, variable or label goes', async () => {
    const nul = 'a\u0000b';
    const lone = 'a\ud800b';
    for (const [bad, inUrl] of [
      [nul, 'a%00b'],
      [lone, 'a%ED%A0%80b'],
    ]) {
      const requests = [
        { method: 'GET', url: `/files?path=${inUrl}`, headers: envd() },
        { method: 'POST', url: `/filesystem.Filesystem/Stat`, headers: envd(), payload: { path: bad } },
        { method: 'POST', url: `/filesystem.Filesystem/MakeDir`, headers: envd(), payload: { path: bad } },
        { method: 'POST', url: `/filesystem.Filesystem/Move`, headers: envd(), payload: { source: 'x', destination: bad } },
        { method: 'POST', url: `/execute`, headers: envd(), payload: { code: '1', env_vars: { A: bad } } },
        { method: 'POST', url: `/contexts`, headers: envd(), payload: { cwd: bad } },
        { method: 'POST', url: '/v2/sandboxes', headers: { 'x-api-key': KEY_A }, payload: { metadata: { k: bad } } },
        { method: 'POST', url: '/v2/sandboxes', headers: { 'x-api-key': KEY_A }, payload: { envVars: { K: bad } } },
      ];
      for (const r of requests) {
        const res = await t.app.inject({ ...(r as object), headers: { 'content-type': 'application/json', ...r.headers } } as never);
        expect(res.statusCode, `${r.url} ${JSON.stringify(r.payload)}`).toBeGreaterThanOrEqual(400);
        expect(res.statusCode, `${r.url} ${JSON.stringify(r.payload)}`).toBeLessThan(500);
      }
      for (const process of [{ cmd: bad }, { cmd: 'ls', args: [bad] }, { cmd: 'ls', envs: { A: bad } }, { cmd: 'ls', cwd: bad }]) {
        const res = await t.app.inject({
          method: 'POST',
          url: '/process.Process/Start',
          headers: { ...envd(), 'content-type': 'application/connect+json' },
          payload: envelope({ process }),
        });
        expect(res.statusCode, JSON.stringify(process)).toBeGreaterThanOrEqual(400);
        expect(res.statusCode, JSON.stringify(process)).toBeLessThan(500);
      }
    }
  });

  it('refuse a 100 MB body at the route’s limit, and a stranger’s before reading it', async () => {
    const huge = Buffer.alloc(100 * 1024 * 1024, 0x20);
    for (const [url, type, headers] of [
      ['/v2/sandboxes', 'application/json', { 'x-api-key': KEY_A }],
      ['/process.Process/Start', 'application/connect+json', envd()],
      ['/process.Process/SendInput', 'application/json', envd()],
      ['/execute', 'application/json', envd()],
    ] as const) {
      const r = await t.app.inject({ method: 'POST', url, headers: { ...headers, 'content-type': type }, payload: huge });
      expect(r.statusCode, url).toBe(413);
    }
    const stranger = await t.app.inject({
      method: 'POST',
      url: '/files?path=/home/user/big',
      headers: { ...envd(sbx, 'forged'), 'content-type': 'application/octet-stream' },
      payload: huge,
    });
    expect(stranger.statusCode).toBe(404);
    expect(stranger.headers.connection).toBe('close');
    const deep = await t.app.inject({
      method: 'POST',
      url: '/filesystem.Filesystem/Stat',
      headers: { ...envd(), 'content-type': 'application/json' },
      payload: `{"path": "/home/user", "x": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`,
    });
    expect(deep.statusCode).toBe(400);
  }, 60_000);

  it('keep every path in the workspace, and never follow a planted symlink out of it', async () => {
    const h = { ...envd(), 'content-type': 'application/json' };
    expect((await t.app.inject({ method: 'GET', url: '/files?path=/etc/passwd', headers: envd() })).statusCode).toBe(400);
    expect(
      (await t.app.inject({ method: 'POST', url: '/filesystem.Filesystem/ListDir', headers: h, payload: { path: '/' } })).statusCode,
    ).toBe(400);
    const write = await t.app.inject({
      method: 'POST',
      url: '/files?path=/home/user/../../etc/x',
      headers: { ...envd(), 'content-type': 'application/octet-stream' },
      payload: 'x',
    });
    expect(write.statusCode).toBe(400);
    const plant = await t.app.inject({
      method: 'POST',
      url: '/execute',
      headers: h,
      payload: { code: 'import os; os.symlink("/etc/passwd", "/home/user/pw")' },
    });
    expect(plant.statusCode).toBe(200);
    const read = await t.app.inject({ method: 'GET', url: '/files?path=/home/user/pw', headers: envd() });
    expect(read.statusCode).toBe(400);
    expect(read.body).not.toMatch(/root:x:0/);
    const stat = await t.app.inject({ method: 'POST', url: '/filesystem.Filesystem/Stat', headers: h, payload: { path: '/home/user/pw' } });
    expect(JSON.parse(stat.body).entry).toMatchObject({ type: 'FILE_TYPE_SYMLINK', symlinkTarget: '/etc/passwd' });
  });

  it('hold /execute and Start to the output limit', async () => {
    const flood = await t.app.inject({
      method: 'POST',
      url: '/execute',
      headers: { ...envd(), 'content-type': 'application/json' },
      payload: { code: 'print("x" * 5_000_000)' },
    });
    const lines = flood.body
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.find((l) => l.type === 'error')?.name).toBe('OutputLimitExceeded');
    expect(flood.body.length).toBeLessThan(400_000);
    const start = await t.app.inject({
      method: 'POST',
      url: '/process.Process/Start',
      headers: { ...envd(), 'content-type': 'application/connect+json' },
      payload: envelope({ process: { cmd: '/bin/bash', args: ['-c', 'head -c 5000000 /dev/zero'] } }),
    });
    expect(start.rawPayload.length).toBeLessThan(400_000);
    expect(start.rawPayload.toString()).toMatch(/100000-byte limit/);
  });

  it('hold a client that never reads a Start stream to what its process may say, and keep answering others', async () => {
    const base = await t.app.listen({ host: '127.0.0.1', port: 0 });
    const body = envelope({ process: { cmd: '/bin/bash', args: ['-c', 'head -c 5000000 /dev/zero; echo done >&2'] } });
    const socket = connect(Number(new URL(base).port), '127.0.0.1');
    socket.pause(); // it never reads, until the end of the test
    const head = Object.entries({ ...envd(), 'content-type': 'application/connect+json', 'content-length': String(body.length) })
      .map(([k, v]) => `${k}: ${v}`)
      .join('\r\n');
    socket.write(`POST /process.Process/Start HTTP/1.1\r\nhost: 127.0.0.1\r\n${head}\r\n\r\n`);
    socket.write(body);
    // Meanwhile another key's sandbox is served as usual.
    const served = await t.app.inject({
      method: 'POST',
      url: '/execute',
      headers: { ...envd(other), 'content-type': 'application/json' },
      payload: { code: 'print(7)' },
    });
    expect(served.body).toContain('"text":"7\\n"');
    // What the stream holds is bounded by the process's output limit (100000 bytes, base64 in envelopes).
    const received: Buffer[] = [];
    socket.on('data', (d) => received.push(d));
    socket.resume();
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      socket.on('data', () => Buffer.concat(received).includes('exitCode') && done());
      setTimeout(done, 10_000);
    });
    socket.destroy();
    const all = Buffer.concat(received);
    expect(all.length).toBeLessThan(400_000);
    expect(all.toString()).toMatch(/100000-byte limit/);
  });

  it('check signed file URLs: a wrong or expired signature is refused, a valid one serves the file', async () => {
    await t.app.inject({
      method: 'POST',
      url: '/files?path=/home/user/s.txt',
      headers: { ...envd(), 'content-type': 'application/octet-stream' },
      payload: 'signed',
    });
    // As the SDK signs (sandbox/signature.ts), URL-encoded as URLSearchParams does.
    const sign = (path: string, op: string, exp?: number) =>
      encodeURIComponent(
        'v1_' +
          createHash('sha256')
            .update(`${path}:${op}::${sbx.envdAccessToken}${exp !== undefined ? `:${exp}` : ''}`)
            .digest('base64')
            .replace(/=+$/, ''),
      );
    const path = '/home/user/s.txt';
    const ok = await t.app.inject({ method: 'GET', url: `/files?path=${encodeURIComponent(path)}&signature=${sign(path, 'read')}` });
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toBe('signed');
    const wrongOp = await t.app.inject({ method: 'GET', url: `/files?path=${encodeURIComponent(path)}&signature=${sign(path, 'write')}` });
    expect(wrongOp.statusCode).toBe(403);
    const past = Math.floor(Date.now() / 1000) - 10;
    const expired = await t.app.inject({
      method: 'GET',
      url: `/files?path=${encodeURIComponent(path)}&signature=${sign(path, 'read', past)}&signature_expiration=${past}`,
    });
    expect(expired.statusCode).toBe(403);
    const otherPath = await t.app.inject({ method: 'GET', url: `/files?path=/home/user/other&signature=${sign(path, 'read')}` });
    expect(otherPath.statusCode).toBe(403);
  });
});
