/** Rich results, charts, artifacts with signed URLs, markdown, JavaScript and streaming on the real local backend. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY = 'rich-key';
const auth = { authorization: `Bearer ${KEY}` };
let t: TestApp;
let now = Date.now();
let extraDir: string;
const post = (path: string, body: object) => t.post(path, body, auth);
const PNG = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** GET a URL the service handed out, through inject, without any API key. */
const fetchUrl = (url: string) => {
  const u = new URL(url);
  return t.app.inject({ method: 'GET', url: u.pathname + u.search });
};

beforeAll(async () => {
  extraDir = mkdtempSync(join(tmpdir(), 'ciw-extra-'));
  writeFileSync(join(extraDir, 'ciw_extra_module.py'), 'ANSWER = 42\n');
  chmodSync(extraDir, 0o755); // sandboxes run under other uids: the directory must be readable by all
  t = await startTestApp(
    localEnv({
      API_KEY: KEY,
      PUBLIC_BASE_URL: 'http://ciw.test:8000',
      FILE_URL_TTL_S: '600',
      SANDBOX_EXTRA_PYTHONPATH: extraDir,
    }),
    () => now,
  );
});
afterAll(async () => t.close());

const sandbox = async () => (await post('/create_sandbox', {})).body.sandbox_id as string;

describe('a DataFrame and a chart from one call', () => {
  it('returns the table as HTML and markdown, the chart as a PNG artifact with a key-less URL, and markdown with both', async () => {
    const id = await sandbox();
    const code = [
      'import pandas as pd',
      'import matplotlib.pyplot as plt',
      'df = pd.DataFrame({"city": ["Oslo", "Lima"], "temp": [4, 19]})',
      'df.plot.bar(x="city", y="temp")',
      'df',
    ].join('\n');
    const r = await post('/run_code', { sandbox_id: id, code, timeout: 60 });
    expect(r.status).toBe(200);
    expect(r.body.error).toBeNull();
    const table = r.body.results.find((x: { type: string }) => x.type === 'execute_result');
    expect(table.data['text/html']).toMatch(/<table[\s\S]*Oslo[\s\S]*Lima/);
    expect(table.data['text/markdown']).toMatch(/\|\s*city\s*\|\s*temp\s*\|[\s\S]*Oslo/);
    const chart = r.body.results.find((x: { type: string }) => x.type === 'display_data');
    expect(chart.path).toMatch(/^\/workspace\/outputs\/cell1-1\.png$/);
    expect(chart.data['image/png']).toBeUndefined();
    expect(chart.url).toMatch(/^http:\/\/ciw\.test:8000\/files\/sbx_\w+\/outputs\/cell1-1\.png\?exp=\d+&sig=/);
    expect(r.body.files).toEqual([
      expect.objectContaining({ path: '/workspace/outputs/cell1-1.png', name: 'cell1-1.png', mime_type: 'image/png' }),
    ]);
    const png = await fetchUrl(r.body.files[0].url);
    expect(png.statusCode).toBe(200);
    expect(png.headers['content-type']).toBe('image/png');
    expect(png.rawPayload.subarray(0, 8)).toEqual(PNG);
    expect(png.rawPayload.length).toBe(r.body.files[0].size);
    expect(r.body.markdown).toContain('| city');
    expect(r.body.markdown).toContain(`![cell1-1.png](${chart.url})`);
  });

  it('captures plt.show() figures in order, and display() values, without warnings', async () => {
    const id = await sandbox();
    const code = [
      'import matplotlib.pyplot as plt',
      'plt.plot([1, 2]); plt.show()',
      'display("between", {"k": 1})',
      'plt.plot([2, 1]); plt.show()',
    ].join('\n');
    const r = await post('/run_code', { sandbox_id: id, code });
    expect(r.body.stderr).toBe('');
    expect(r.body.results.map((x: { path?: string; data: Record<string, string> }) => x.path ?? x.data['text/plain'])).toEqual([
      '/workspace/outputs/cell1-1.png',
      "'between'",
      "{'k': 1}",
      '/workspace/outputs/cell1-2.png',
    ]);
  });

  it('inlines images on request', async () => {
    const id = await sandbox();
    const r = await post('/run_code', { sandbox_id: id, code: 'import matplotlib.pyplot as plt\nplt.plot([1, 3])', inline_images: true });
    const figure = r.body.results.find((x: { type: string }) => x.type === 'display_data');
    const image = Buffer.from(figure.data['image/png'], 'base64');
    expect(image.subarray(0, 8)).toEqual(PNG);
  });
});

describe('artifacts and signed URLs', () => {
  it('lists files a call created or changed, not unchanged, hidden or uploaded ones', async () => {
    const id = await sandbox();
    await post('/write_file', { sandbox_id: id, remote_path: 'input.csv', content: 'a\n1\n' });
    const first = await post('/execute_command', {
      sandbox_id: id,
      command: 'mkdir -p out .cache && echo x > out/a.txt && echo y > .cache/skip && cp input.csv out/b.csv',
    });
    expect(first.body.files.map((f: { path: string }) => f.path)).toEqual(['/workspace/out/a.txt', '/workspace/out/b.csv']);
    const second = await post('/run_code', { sandbox_id: id, code: 'open("out/a.txt", "a").write("more")' });
    expect(second.body.files.map((f: { path: string }) => f.path)).toEqual(['/workspace/out/a.txt']);
    expect(second.body.markdown).toContain('[a.txt](');
    const none = await post('/run_code', { sandbox_id: id, code: 'x = 1' });
    expect(none.body.files).toEqual([]);
  });

  it('refuses bad, foreign and expired signatures with 403, and key-less requests without one with 401', async () => {
    const id = await sandbox();
    await post('/write_file', { sandbox_id: id, remote_path: 'a.txt', content: 'A' });
    await post('/write_file', { sandbox_id: id, remote_path: 'b.txt', content: 'B' });
    const d = await post('/download_file', { sandbox_id: id, remote_path: 'a.txt' });
    const ok = await fetchUrl(d.body.download_url);
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toBe('A');
    const u = new URL(d.body.download_url);
    const forged = await t.app.inject({ method: 'GET', url: `/files/${id}/b.txt${u.search}` });
    expect(forged.statusCode).toBe(403);
    expect(JSON.parse(forged.body).error.code).toBe('URL_SIGNATURE_INVALID');
    const tampered = await t.app.inject({
      method: 'GET',
      url: `${u.pathname}?exp=${Number(u.searchParams.get('exp')) + 1000}&sig=${u.searchParams.get('sig')}`,
    });
    expect(tampered.statusCode).toBe(403);
    expect((await t.app.inject({ method: 'GET', url: u.pathname })).statusCode).toBe(401);
    now += 601_000;
    const expired = await fetchUrl(d.body.download_url);
    expect(expired.statusCode).toBe(403);
    expect(JSON.parse(expired.body).error.message).toMatch(/expired/);
    now -= 601_000;
  });

  it('answers download_file with the bytes themselves when asked', async () => {
    const id = await sandbox();
    await post('/write_file', { sandbox_id: id, remote_path: 'report.json', content: '{"ok": true}' });
    const r = await t.app.inject({
      method: 'POST',
      url: '/download_file',
      headers: auth,
      payload: { sandbox_id: id, remote_path: 'report.json', as_file: true },
    });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/json');
    expect(r.headers['content-disposition']).toContain('attachment; filename="report.json"');
    expect(r.body).toBe('{"ok": true}');
  });
});

describe('JavaScript', () => {
  it('keeps variables between calls, captures console output and returns the last value', async () => {
    const id = await sandbox();
    const a = await post('/run_code', { sandbox_id: id, language: 'js', code: 'let count = 41; const greet = (n) => `hi ${n}`;' });
    expect(a.body.error).toBeNull();
    const b = await post('/run_code', { sandbox_id: id, language: 'javascript', code: 'console.log(greet("js")); count + 1' });
    expect(b.body).toMatchObject({ language: 'javascript', stdout: 'hi js\n', output: 'hi js\n42\n' });
    expect(b.body.results).toEqual([{ type: 'execute_result', data: { 'text/plain': '42' } }]);
    const awaited = await post('/run_code', { sandbox_id: id, language: 'node', code: 'Promise.resolve(count * 2)' });
    expect(awaited.body.results[0].data['text/plain']).toBe('82');
  });

  it('says so when the JavaScript process ended between calls, and runs the next call in a new one', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, language: 'js', code: 'globalThis.kept = 1' });
    // [l]: the pattern must not match this shell's own command line. Waits until the kernel is gone: a process
    // on its way out no longer shows its command line to pgrep, so also until no node is left but a zombie.
    await post('/execute_command', {
      sandbox_id: id,
      command:
        "pkill -f 'ciw_js_kerne[l]'; while pgrep -f 'ciw_js_kerne[l]' >/dev/null || ps -C node -o stat= | grep -qv Z; do sleep 0.05; done",
    });
    const r = await post('/run_code', { sandbox_id: id, language: 'js', code: 'typeof kept' });
    expect(r.body.error, JSON.stringify(r.body.error)).toBeNull();
    expect(r.body.results[0].data['text/plain']).toBe("'undefined'");
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.notice).toMatch(/JavaScript process ended between calls \(signal 15\)/);
    expect((await post('/run_code', { sandbox_id: id, language: 'js', code: '1 + 1' })).body.state_preserved).toBe(true);
  });

  it("reports errors with the user's stack, and interrupts an endless loop keeping the state", async () => {
    const id = await sandbox();
    const e = await post('/run_code', { sandbox_id: id, language: 'js', code: 'globalThis.kept = "yes";\nnull.boom' });
    expect(e.body.error.name).toBe('TypeError');
    expect(e.body.error.traceback).toContain('<cell-1>:2');
    expect(e.body.error.traceback).not.toMatch(/ciw_js_kernel|node:internal/);
    const loop = await post('/run_code', { sandbox_id: id, language: 'js', code: 'while (true) {}', timeout: 1 });
    expect(loop.body.timed_out).toBe(true);
    expect(loop.body.state_preserved).toBe(true);
    expect((await post('/run_code', { sandbox_id: id, language: 'js', code: 'kept' })).body.results[0].data['text/plain']).toBe("'yes'");
  });
});

describe('the Python environment', () => {
  it("has the data stack and what Dify templates import, plus the operator's extra packages", async () => {
    const id = await sandbox();
    const r = await post('/run_code', {
      sandbox_id: id,
      code: 'import numpy, pandas, matplotlib, jinja2, requests, httpx\nimport ciw_extra_module\nciw_extra_module.ANSWER',
    });
    expect(r.body.error).toBeNull();
    expect(r.body.results[0].data['text/plain']).toBe('42');
  });
});

describe('streaming', () => {
  let base: string;
  beforeAll(async () => {
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    base = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
  });

  /** Reads a streamed answer, noting when each chunk arrived. */
  async function read(path: string, body: object, headers: Record<string, string> = {}) {
    const res = await fetch(`${base}${path}`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    });
    const chunks: Array<{ at: number; text: string }> = [];
    const decoder = new TextDecoder();
    for await (const chunk of res.body!) chunks.push({ at: Date.now(), text: decoder.decode(chunk as Uint8Array, { stream: true }) });
    return { res, chunks, text: chunks.map((c) => c.text).join('') };
  }

  it('delivers the first line of a call that prints, sleeps 2 s and prints again before the call ends (NDJSON)', async () => {
    const id = await sandbox();
    const { res, chunks, text } = await read('/run_code', {
      sandbox_id: id,
      code: 'import time\nprint("first", flush=True)\ntime.sleep(2)\nprint("second")\n"done"',
      stream: true,
    });
    expect(res.headers.get('content-type')).toMatch(/application\/x-ndjson/);
    const events = text
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(events.map((e) => e.type)).toEqual(['stdout', 'stdout', 'result', 'end']);
    expect(events[0].data).toBe('first\n');
    const end = events.at(-1).response;
    expect(end).toMatchObject({ stdout: 'first\nsecond\n', output: "first\nsecond\n'done'\n", error: null });
    const firstAt = chunks.find((c) => c.text.includes('"first\\n"'))!;
    const endAt = chunks.find((c) => c.text.includes('"type":"end"'))!;
    expect(firstAt.text).not.toContain('"type":"end"');
    expect(endAt.at - firstAt.at).toBeGreaterThanOrEqual(1000);
  });

  it('speaks server-sent events for execute_command, and streams errors of the request as plain 4xx', async () => {
    const id = await sandbox();
    const { res, text } = await read(
      '/execute_command',
      { sandbox_id: id, command: 'echo out; echo err >&2; exit 3' },
      { accept: 'text/event-stream' },
    );
    expect(res.headers.get('content-type')).toMatch(/text\/event-stream/);
    expect(text).toContain('event: stdout\ndata: {"data":"out\\n"}\n\n');
    expect(text).toContain('event: stderr\ndata: {"data":"err\\n"}\n\n');
    const end = /event: end\ndata: (.*)\n\n/.exec(text)!;
    expect(JSON.parse(end[1]).response).toMatchObject({ exit_code: 3, stdout: 'out\n' });
    const missing = await fetch(`${base}/run_code`, {
      method: 'POST',
      headers: { ...auth, 'content-type': 'application/json' },
      body: JSON.stringify({ sandbox_id: 'sbx_nope', code: '1', stream: true }),
    });
    expect(missing.status).toBe(404);
  });
});
