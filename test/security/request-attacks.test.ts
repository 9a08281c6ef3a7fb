/**
 * Attacks through request bodies and headers, with one API key or none (the memory backend: these never
 * reach a sandbox). Each class is tried in several spellings, sizes and routes; each must get a clear 4xx at
 * once, and no tenant may spend another's share of anything.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postChunked, startTestApp, type TestApp } from '../helpers/app.js';
import { watchStalls, type StallWatch } from '../helpers/stalls.js';
import { FairQueue } from '../../src/service/fair-queue.js';
import { CODE_NODE_OWNER } from '../../src/service/sandbox-service.js';
import { connect, type Socket } from 'node:net';
import { createServer } from 'node:http';

const KEY_A = 'tenant-a-key';
const KEY_B = 'tenant-b-key';
const as = (key: string, extra: Record<string, string> = {}) => ({ authorization: `Bearer ${key}`, ...extra });

let t: TestApp;
let stalls: StallWatch;
beforeAll(async () => {
  t = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}` });
  stalls = watchStalls('request attacks (memory backend)');
});
afterAll(async () => {
  stalls.report();
  await t.close();
});

/**
 * A request the service must refuse (or answer at once), sent with the event-loop watch on. A large body
 * arrives in 64 KiB chunks, as it does over a socket (app.inject would hand it over in one piece).
 */
const send = (url: string, payload: string | Buffer, headers: Record<string, string>) =>
  stalls.refusing(() => postChunked(t.app, url, payload, { ...as(KEY_A), ...headers }));
const json = (url: string, body: unknown, headers: Record<string, string> = {}) => {
  const payload = JSON.stringify(body);
  return send(url, payload, { 'content-type': 'application/json', ...headers });
};

describe('ReDoS: no pattern backtracks over request data', () => {
  // Whitespace runs that a pattern with whitespace on both sides of its padding tried in n² ways.
  const spellings: Array<[string, string]> = [
    ['spaces', ' '],
    ['tabs', '\t'],
    ['newlines', '\n'],
    ['mixed', ' \t\r\n'],
  ];
  const sizes = [100_000, 1_000_000];
  const cases = spellings.flatMap(([name, unit]) =>
    sizes.map((size) => [name, size, `${unit.repeat(Math.ceil(size / unit.length))}!`] as const),
  );

  it.each(cases)(
    'base64 fields and encoding=base64 content: %s × %i then "!" are refused at once',
    async (_name, _size, text) => {
      const attempts = [
        () => json('/write_file', { sandbox_id: 'sbx_none', remote_path: 'a', encoding: 'base64', content: text }),
        () => json('/run_code', { sandbox_id: 'sbx_none', code_base64: text }),
        () => json('/execute_command', { sandbox_id: 'sbx_none', command_base64: text }),
        () => json('/write_file', { sandbox_id: 'sbx_none', remote_path: 'a', content_base64: text }),
        () =>
          send('/run_code', new URLSearchParams({ sandbox_id: 'sbx_none', code_base64: text }).toString(), {
            'content-type': 'application/x-www-form-urlencoded',
          }),
      ];
      for (const attempt of attempts) {
        const r = await attempt();
        expect(r.statusCode).toBe(400);
        expect(JSON.parse(r.body).error.code).toBe('VALIDATION_FAILED');
      }
    },
    30_000,
  );

  it('still takes real base64 with whitespace in it', async () => {
    const id = JSON.parse((await json('/create_sandbox', {})).body).sandbox_id;
    const encoded = Buffer.from('hello base64')
      .toString('base64')
      .replace(/(.{4})/g, '$1 \n');
    const w = await json('/write_file', { sandbox_id: id, remote_path: 'b.txt', encoding: 'base64', content: encoded });
    expect(JSON.parse(w.body).size).toBe(12);
    const r = await json('/run_code', { sandbox_id: id, code_base64: Buffer.from('print(42)').toString('base64url') });
    expect(JSON.parse(r.body).stdout).toBe('42\n');
  });
});

describe('JSON bodies are bounded in shape before anything parses them', () => {
  const deep = (levels: number) => `${'['.repeat(levels)}${']'.repeat(levels)}`;
  const manyObjects = `[${Array(1_500_000).fill('{}').join(',')}]`;
  const manyNumbers = `[${Array(2_000_000).fill('1').join(',')}]`;

  it.each([
    ['100,000 levels of arrays', `{"code": "1", "x": ${deep(100_000)}}`],
    ['100,000 levels of objects', `{"code": "1", "x": ${'{"a":'.repeat(100_000)}1${'}'.repeat(100_000)}}`],
    ['1.5 million objects', `{"code": "1", "x": ${manyObjects}}`],
    ['2 million numbers', `{"code": "1", "x": ${manyNumbers}}`],
  ])(
    'refuses %s with 400, with and without an Idempotency-Key, on every JSON route',
    async (_name, body) => {
      for (const url of ['/run_code', '/create_sandbox', '/write_file', '/mcp']) {
        for (const headers of [{}, { 'idempotency-key': `k-${url}` }] as Array<Record<string, string>>) {
          const r = await send(url, body, {
            'content-type': 'application/json',
            accept: 'application/json, text/event-stream',
            ...headers,
          });
          expect(r.statusCode, url).toBe(400);
          expect(JSON.parse(r.body).error.message).toMatch(/nests deeper|more than 100000 values/);
        }
      }
    },
    30_000,
  );

  it('takes what real clients send: commas and brackets inside strings do not count, 60 levels pass', async () => {
    const code = `print("${'[,{'.repeat(200_000)}")`;
    const r = await json('/create_sandbox', { env: { A: 'x' }, extra: JSON.parse(deep(60)) });
    expect(r.statusCode).not.toBe(400);
    const id = JSON.parse((await json('/create_sandbox', {})).body).sandbox_id;
    const run = await json('/run_code', { sandbox_id: id, code });
    expect(run.statusCode).toBe(200);
  });

  it('refuses a form body of 100,000 fields', async () => {
    const r = await send('/run_code', 'a=1&'.repeat(100_000), { 'content-type': 'application/x-www-form-urlencoded' });
    expect(r.statusCode).toBe(400);
    expect(JSON.parse(r.body).error.message).toMatch(/at most 1000 fields/);
  });
});

describe('inputs that were 5xx are 4xx naming what to fix', () => {
  it.each([5, {}, [], true])('upload_file with file.url = %j', async (url) => {
    for (const field of ['url', 'remote_url']) {
      const r = await json('/upload_file', { sandbox_id: 'sbx_x', file: { [field]: url } });
      expect(r.statusCode).toBe(400);
      expect(JSON.parse(r.body).error.message).toMatch(new RegExp(`file.${field} must be a string`));
    }
  });

  it.each(['multipart/form-data', 'multipart/form-data; boundary=', 'multipart/form-data; charset=utf-8', 'multipart/mixed;boundary'])(
    'a multipart body without a boundary (%s)',
    async (type) => {
      for (const url of ['/upload_file', '/write_file', '/run_code']) {
        const r = await send(url, '--x\r\ncontent-disposition: form-data; name="a"\r\n\r\n1\r\n--x--\r\n', { 'content-type': type });
        expect(r.statusCode, url).toBe(400);
        expect(JSON.parse(r.body).error.message).toMatch(/boundary/);
      }
    },
  );

  it.each(['__proto__', 'constructor', 'toString', 'hasOwnProperty', 'valueOf'])('language %s', async (language) => {
    const r = await json('/run_code', { conversation_id: 'c', code: '1', language });
    expect(r.statusCode).toBe(400);
    expect(JSON.parse(r.body).error.code).toBe('UNSUPPORTED_LANGUAGE');
    const d = await t.app.inject({
      method: 'POST',
      url: '/v1/sandbox/run',
      payload: { code: '1', language },
      headers: { 'x-api-key': KEY_A },
    });
    expect(d.statusCode).toBe(400);
    expect(JSON.parse(d.body).message).toMatch(/unsupported language/);
  });
});

describe("idempotency: memory is bounded per API key, and no key pushes out another's entries", () => {
  it("a tenant sending 10,050 fresh keys does not make another tenant's retry run twice", async () => {
    const id = (await t.post('/create_sandbox', {}, as(KEY_B))).body.sandbox_id;
    const first = await t.post('/run_code', { sandbox_id: id, code: 'print(1)' }, as(KEY_B, { 'idempotency-key': 'b-original' }));
    expect(first.status).toBe(200);
    const idA = (await t.post('/create_sandbox', {}, as(KEY_A))).body.sandbox_id;
    for (let i = 0; i < 10_050; i++) {
      const r = await t.post('/run_code', { sandbox_id: idA, code: '1' }, as(KEY_A, { 'idempotency-key': `a-${i}` }));
      expect(r.status).toBe(200);
    }
    const retry = await t.post('/run_code', { sandbox_id: id, code: 'print(1)' }, as(KEY_B, { 'idempotency-key': 'b-original' }));
    expect(retry.headers['idempotent-replayed']).toBe('true');
  }, 60_000);
});

describe('idempotency: kept answers are bounded in bytes', () => {
  let b: TestApp;
  beforeAll(async () => {
    b = await startTestApp({ IDEMPOTENCY_MAX_BYTES_PER_KEY: String(1024 * 1024), IDEMPOTENCY_MAX_ANSWER_BYTES: String(512 * 1024) });
  });
  afterAll(async () => b.close());
  const big = (bytes: number) => `print("${'x'.repeat(bytes)}")`;

  it("forgets the oldest answers once a key's answers pass IDEMPOTENCY_MAX_BYTES_PER_KEY", async () => {
    const id = (await b.post('/create_sandbox', {})).body.sandbox_id;
    for (let i = 0; i < 12; i++) {
      const r = await b.post('/run_code', { sandbox_id: id, code: big(60_000) }, { 'idempotency-key': `big-${i}` });
      expect(r.status).toBe(200);
    }
    const oldest = await b.post('/run_code', { sandbox_id: id, code: big(60_000) }, { 'idempotency-key': 'big-0' });
    expect(oldest.headers['idempotent-replayed']).toBeUndefined();
    const newest = await b.post('/run_code', { sandbox_id: id, code: big(60_000) }, { 'idempotency-key': 'big-11' });
    expect(newest.headers['idempotent-replayed']).toBe('true');
  });

  it('does not keep an answer larger than IDEMPOTENCY_MAX_ANSWER_BYTES, and does not run its retry again (409)', async () => {
    const id = (await b.post('/create_sandbox', {})).body.sandbox_id;
    const first = await b.post('/run_code', { sandbox_id: id, code: big(300_000) }, { 'idempotency-key': 'huge' });
    expect(first.status).toBe(200);
    const retry = await b.post('/run_code', { sandbox_id: id, code: big(300_000) }, { 'idempotency-key': 'huge' });
    expect(retry.status).toBe(409);
    expect(retry.body.error.code).toBe('IDEMPOTENT_ANSWER_NOT_KEPT');
  });

  it('fingerprints a multipart file by its bytes: another file of the same size is a different call, run, not replayed', async () => {
    const id = (await b.post('/create_sandbox', {})).body.sandbox_id;
    const form = (content: string) => {
      const boundary = 'XyZ';
      return {
        payload:
          `--${boundary}\r\ncontent-disposition: form-data; name="sandbox_id"\r\n\r\n${id}\r\n` +
          `--${boundary}\r\ncontent-disposition: form-data; name="file"; filename="f.txt"\r\ncontent-type: text/plain\r\n\r\n${content}\r\n--${boundary}--\r\n`,
        headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'idempotency-key': 'mp' },
      };
    };
    expect((await b.app.inject({ method: 'POST', url: '/upload_file', ...form('aaaa') })).statusCode).toBe(200);
    const other = await b.app.inject({ method: 'POST', url: '/upload_file', ...form('bbbb') });
    expect(other.statusCode).toBe(200);
    expect(other.headers['idempotent-replayed']).toBeUndefined();
    expect((await b.app.inject({ method: 'POST', url: '/upload_file', ...form('bbbb') })).headers['idempotent-replayed']).toBe('true');
  });
});

describe('/health', () => {
  it('tells the live-sandbox count only to a caller with a valid key', async () => {
    const anonymous = JSON.parse((await t.app.inject({ method: 'GET', url: '/health' })).body);
    expect(anonymous.status).toBe('ok');
    expect(anonymous).not.toHaveProperty('live_sandboxes');
    const wrong = JSON.parse((await t.app.inject({ method: 'GET', url: '/health', headers: as('not-a-key') })).body);
    expect(wrong).not.toHaveProperty('live_sandboxes');
    const keyed = JSON.parse((await t.app.inject({ method: 'GET', url: '/health', headers: as(KEY_A) })).body);
    expect(typeof keyed.live_sandboxes).toBe('number');
  });
});

describe('quotas: one key cannot take every sandbox', () => {
  let q: TestApp;
  beforeAll(async () => {
    q = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_SANDBOXES: '6', DIFY_SANDBOX_RESERVED: '2' });
  });
  afterAll(async () => q.close());

  it('with MAX_SANDBOXES=6, key A gets its share, key B still creates and runs, the Code node still runs', async () => {
    const made: string[] = [];
    let refused: { status: number; body: any } | null = null;
    for (let i = 0; i < 6 && !refused; i++) {
      const r = await q.post('/create_sandbox', {}, as(KEY_A));
      if (r.status === 200) made.push(r.body.sandbox_id);
      else refused = r;
    }
    expect(made.length).toBeLessThan(6);
    expect(refused!.status).toBe(429);
    expect(refused!.body.error.message).toMatch(/MAX_SANDBOXES_PER_KEY/);
    expect((await q.post('/create_sandbox', {}, as(KEY_B))).status).toBe(200);
    expect((await q.post('/run_code', { conversation_id: 'b-chat', code: 'print(2)' }, as(KEY_B))).body.stdout).toBe('2\n');
    const node = await q.app.inject({
      method: 'POST',
      url: '/v1/sandbox/run',
      payload: { language: 'python3', code: 'print(1)' },
      headers: { 'x-api-key': KEY_A },
    });
    expect(node.statusCode).toBe(200);
    expect(JSON.parse(node.body).code).toBe(0);
    // Key B at its own limit now, and the rest kept for the Code node: neither key takes those.
    const more = await q.post('/create_sandbox', {}, as(KEY_B));
    expect(more.status).toBe(429);
  });

  it("the Code node cannot take every sandbox either: its share is DIFY_SANDBOX_RESERVED more than a key's", async () => {
    const e = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_SANDBOXES: '10', DIFY_SANDBOX_RESERVED: '2' });
    try {
      const made = [];
      for (let i = 0; i < 6; i++) made.push(await e.service.create(CODE_NODE_OWNER, {}));
      await expect(e.service.create(CODE_NODE_OWNER, {})).rejects.toMatchObject({ code: 'SANDBOX_LIMIT_REACHED' });
      expect((await e.post('/create_sandbox', {}, as(KEY_A))).status).toBe(200);
    } finally {
      await e.close();
    }
  });

  it('honours an explicit MAX_SANDBOXES_PER_KEY', async () => {
    const e = await startTestApp({ MAX_SANDBOXES: '10', MAX_SANDBOXES_PER_KEY: '3' });
    try {
      for (let i = 0; i < 3; i++) expect((await e.post('/create_sandbox', {})).status).toBe(200);
      const r = await e.post('/create_sandbox', {});
      expect(r.status).toBe(429);
      expect(r.headers['retry-after']).toBe('5');
    } finally {
      await e.close();
    }
  });
});

describe('fair queueing of sandbox starts', () => {
  it("serves owners in turn: one owner's burst delays another's single start by at most one start", async () => {
    const queue = new FairQueue(1, 100);
    const order: string[] = [];
    const job = (name: string) => () =>
      new Promise<void>((r) =>
        setTimeout(() => {
          order.push(name);
          r();
        }, 1),
      );
    const all = [...Array.from({ length: 10 }, (_, i) => queue.run('a', job(`a${i}`))), queue.run('b', job('b0'))];
    await Promise.all(all);
    expect(order.indexOf('b0')).toBeLessThanOrEqual(2);
  });

  it('refuses an owner with too many starts waiting (429), not the others', async () => {
    const queue = new FairQueue(1, 2);
    let release!: () => void;
    const held = queue.run('a', () => new Promise<void>((r) => (release = r)));
    const waiting = [queue.run('a', async () => 'a1'), queue.run('a', async () => 'a2')];
    await expect(queue.run('a', async () => 'a3')).rejects.toMatchObject({ code: 'SANDBOX_LIMIT_REACHED' });
    const other = queue.run('b', async () => 'b1');
    release();
    await held;
    expect(await Promise.all([...waiting, other])).toEqual(['a1', 'a2', 'b1']);
  });
});

describe('request bodies in flight are bounded per API key', () => {
  it('a key that opens many slow uploads gets 429 past MAX_BODY_BYTES_PER_KEY; another key is not affected', async () => {
    const e = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_FILE_BYTES: '1024', MAX_BODY_BYTES_PER_KEY: String(1024 * 1024) });
    await e.app.listen({ port: 0, host: '127.0.0.1' });
    const { port } = e.app.server.address() as { port: number };
    const open = (key: string) =>
      new Promise<string>((resolve) => {
        const socket = connect(port, '127.0.0.1');
        let text = '';
        socket.on('data', (d) => {
          text += d;
          if (text.includes('\r\n\r\n')) resolve(text.split('\r\n')[0]);
        });
        socket.on('error', () => resolve(text));
        socket.write(
          `POST /write_file HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${key}\r\nContent-Type: application/json\r\nContent-Length: 700000\r\n\r\n{"content": "`,
        );
        setTimeout(() => resolve(`${text}(still open)`), 1500).unref();
        sockets.push(socket);
      });
    const sockets: Socket[] = [];
    try {
      const first = open(KEY_A);
      await new Promise((r) => setTimeout(r, 100));
      expect(await open(KEY_A)).toMatch(/^HTTP\/1\.1 429/);
      expect(await open(KEY_B)).toBe('(still open)');
      expect(await first).toBe('(still open)');
    } finally {
      for (const s of sockets) s.destroy();
      await e.close();
    }
  });
});

describe('file_url downloads are bounded per API key', () => {
  it('a key may have only a few downloads going at once (each holds its file until written); others are not affected', async () => {
    const origin = createServer((_req, res) => res.writeHead(200).write('partial')); // never ends
    await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
    const url = `http://127.0.0.1:${(origin.address() as { port: number }).port}/stalls`;
    const e = await startTestApp({ API_KEYS: `${KEY_A},${KEY_B}`, OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32', UPLOAD_TIMEOUT_S: '3' });
    try {
      const a = (await e.post('/create_sandbox', {}, as(KEY_A))).body.sandbox_id;
      const b = (await e.post('/create_sandbox', {}, as(KEY_B))).body.sandbox_id;
      const going = Array.from({ length: 4 }, () => e.post('/upload_file', { sandbox_id: a, file_url: url }, as(KEY_A)));
      await new Promise((r) => setTimeout(r, 200));
      const refused = await e.post('/upload_file', { sandbox_id: a, file_url: url }, as(KEY_A));
      expect(refused.status).toBe(429);
      expect(refused.body.error.code).toBe('CALL_LIMIT_REACHED');
      const other = e.post('/upload_file', { sandbox_id: b, file_url: url }, as(KEY_B));
      for (const r of [...(await Promise.all(going)), await other]) expect(r.body.error.code).toBe('FILE_URL_FETCH_FAILED'); // the stall's timeout
    } finally {
      await e.close();
      origin.closeAllConnections();
      origin.close();
    }
  }, 20_000);
});

describe('the pause, resume and fork routes refuse what the others refuse', () => {
  const ROUTES = ['/pause_sandbox', '/resume_sandbox', '/fork_sandbox'];

  it.each([
    ['a NUL', 'sbx_\u0000'],
    ['a lone surrogate', 'sbx_\ud800'],
  ])('answer %s in sandbox_id or conversation_id with a 4xx, never a 5xx', async (_name, bad) => {
    for (const url of ROUTES) {
      for (const body of [{ sandbox_id: bad }, { conversation_id: bad }]) {
        const r = await json(url, body);
        expect(r.statusCode, `${url} ${JSON.stringify(body)}`).toBeGreaterThanOrEqual(400);
        expect(r.statusCode, `${url} ${JSON.stringify(body)}`).toBeLessThan(500);
      }
    }
  });

  it("answer another key's sandbox with the 404 of a sandbox that does not exist, and leave it as it was", async () => {
    const id = (await t.post('/create_sandbox', {}, as(KEY_A))).body.sandbox_id;
    for (const url of ROUTES) {
      const r = await t.post(url, { sandbox_id: id }, as(KEY_B));
      expect(r.status, url).toBe(404);
      expect(r.body.error.code, url).toBe('SANDBOX_NOT_FOUND');
    }
    expect((await t.post('/get_sandbox_info', { sandbox_id: id }, as(KEY_A))).body.status).toBe('running');
  });

  it('refuse deeply nested JSON (400) and a 100 MB body (413, at 64 KiB: they only name a sandbox) before parsing it', async () => {
    for (const url of ROUTES) {
      const deep = await send(url, `{"sandbox_id": "x", "y": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`, {
        'content-type': 'application/json',
      });
      expect(deep.statusCode, url).toBe(400);
      const big = await send(url, Buffer.alloc(100 * 1024 * 1024, 0x20), { 'content-type': 'application/json' });
      expect(big.statusCode, url).toBe(413);
      expect(JSON.parse(big.body).error.message, url).toMatch(/larger than 65536 bytes, the most this route takes/);
    }
  }, 60_000);
});
