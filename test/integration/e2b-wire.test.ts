/**
 * E2B's wire as the Python SDKs (e2b, e2b-code-interpreter) speak it, replayed from their source (PyPI is out
 * of reach here): the requests they send, and the fields and statuses their generated models require — a
 * missing `clientID` or `timestamp` is a KeyError there, an unexpected status an exception.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY = `e2b_${'a'.repeat(40)}`;
let t: TestApp;
let base: string;
const api = { 'x-api-key': KEY, 'content-type': 'application/json', 'user-agent': 'e2b-python-sdk/2.9.0' };

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: KEY }));
  base = await t.app.listen({ host: '127.0.0.1', port: 0 });
});
afterAll(async () => {
  await t?.close();
});

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

/** The Python SDK's create (post_sandboxes, NewSandbox.to_dict()): 201 and a Sandbox with its required keys. */
async function createLikePython(): Promise<{ sandboxID: string; envdAccessToken: string; trafficAccessToken?: string }> {
  const res = await fetch(`${base}/sandboxes`, {
    method: 'POST',
    headers: api,
    body: JSON.stringify({
      templateID: 'code-interpreter-v1',
      autoPause: false,
      metadata: { user: 'py' },
      timeout: 300,
      envVars: { GREETING: 'hello' },
      secure: true,
      allow_internet_access: true,
    }),
  });
  expect(res.status).toBe(201);
  const body = await res.json();
  for (const k of ['templateID', 'sandboxID', 'clientID', 'envdVersion']) expect(typeof body[k], k).toBe('string');
  expect(body.envdVersion).toMatch(/^\d+\.\d+\.\d+$/);
  return body;
}

describe('the Python SDK wire', () => {
  it('creates, describes, lists and measures with every field its models require', async () => {
    const sbx = await createLikePython();
    const detail = await (await fetch(`${base}/sandboxes/${sbx.sandboxID}`, { headers: api })).json();
    for (const k of ['templateID', 'sandboxID', 'clientID', 'envdVersion', 'state']) expect(typeof detail[k], k).toBe('string');
    for (const k of ['cpuCount', 'memoryMB', 'diskSizeMB']) expect(typeof detail[k], k).toBe('number');
    expect(detail.startedAt).toMatch(ISO);
    expect(detail.endAt).toMatch(ISO);
    expect(['running', 'paused']).toContain(detail.state);
    expect(detail.metadata).toEqual({ user: 'py' });
    const listed = await fetch(`${base}/v2/sandboxes?metadata=${encodeURIComponent('user=py')}&state=running&limit=10`, { headers: api });
    expect(listed.status).toBe(200);
    const items = await listed.json();
    expect(items.map((s: { sandboxID: string }) => s.sandboxID)).toEqual([sbx.sandboxID]);
    for (const k of [
      'templateID',
      'sandboxID',
      'clientID',
      'startedAt',
      'endAt',
      'cpuCount',
      'memoryMB',
      'diskSizeMB',
      'state',
      'envdVersion',
    ]) {
      expect(items[0][k], k).toBeDefined();
    }
    const metrics = await (await fetch(`${base}/sandboxes/${sbx.sandboxID}/metrics`, { headers: api })).json();
    for (const k of ['timestampUnix', 'cpuCount', 'cpuUsedPct', 'memUsed', 'memTotal', 'memCache', 'diskUsed', 'diskTotal']) {
      expect(typeof metrics[0][k], k).toBe('number');
    }
    expect(metrics[0].timestamp).toMatch(ISO);
    expect(metrics[0].memUsed, JSON.stringify(metrics)).toBeGreaterThan(0);
    const missing = await fetch(`${base}/sandboxes/sbx_000000000000000000000000`, { headers: api });
    expect(missing.status).toBe(404);
    const error = await missing.json();
    expect(error).toEqual({ code: 404, message: expect.any(String) });
    expect((await fetch(`${base}/sandboxes/${sbx.sandboxID}`, { method: 'DELETE', headers: api })).status).toBe(204);
  });

  it('runs code as e2b-code-interpreter sends it (nulls included) and answers NDJSON lines with timestamps', async () => {
    const sbx = await createLikePython();
    const headers = {
      'content-type': 'application/json',
      'e2b-sandbox-id': sbx.sandboxID,
      'e2b-sandbox-port': '49999',
      'x-access-token': sbx.envdAccessToken,
      ...(sbx.trafficAccessToken ? { 'e2b-traffic-access-token': sbx.trafficAccessToken } : {}),
    };
    const res = await fetch(`${base}/execute`, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        code: 'import os\nprint(os.environ["GREETING"])\n{"a": 1}',
        context_id: null,
        language: null,
        env_vars: null,
      }),
    });
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text.endsWith('\n')).toBe(true);
    const lines = text
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l));
    expect(lines.every((l) => typeof l.type === 'string')).toBe(true);
    const out = lines.find((l) => l.type === 'stdout');
    expect(out).toEqual({ type: 'stdout', text: 'hello\n', timestamp: expect.any(Number) });
    const result = lines.find((l) => l.type === 'result');
    expect(result).toMatchObject({ is_main_result: true, text: "{'a': 1}" });
    expect(lines.at(-1)).toEqual({ type: 'end_of_execution' });
    expect(lines.some((l) => l.type === 'number_of_executions' && typeof l.execution_count === 'number')).toBe(true);

    const ctx = await fetch(`${base}/contexts`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ language: 'python', cwd: '/home/user' }),
    });
    expect(await ctx.json()).toEqual({ id: expect.any(String), language: 'python', cwd: '/home/user' });
    const both = await fetch(`${base}/execute`, {
      method: 'POST',
      headers,
      body: JSON.stringify({ code: '1', context_id: 'x', language: 'python' }),
    });
    expect(both.status).toBe(400);
    const unknown = await fetch(`${base}/execute`, { method: 'POST', headers, body: JSON.stringify({ code: '1', context_id: 'nope' }) });
    expect(unknown.status).toBe(404);
    await fetch(`${base}/sandboxes/${sbx.sandboxID}`, { method: 'DELETE', headers: api });
  });

  it('answers envd Connect calls in JSON with the shapes connectrpc expects, and its errors by code', async () => {
    const sbx = await createLikePython();
    const headers = {
      'e2b-sandbox-id': sbx.sandboxID,
      'e2b-sandbox-port': '49983',
      'x-access-token': sbx.envdAccessToken,
      'connect-protocol-version': '1',
    };
    const unary = (method: string, body: unknown) =>
      fetch(`${base}/${method}`, {
        method: 'POST',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
    const stat = await unary('filesystem.Filesystem/Stat', { path: '/home/user' });
    expect(await stat.json()).toMatchObject({ entry: { name: 'workspace', type: 'FILE_TYPE_DIRECTORY', path: '/home/user' } });
    const missing = await unary('filesystem.Filesystem/Stat', { path: '/home/user/none' });
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ code: 'not_found', message: expect.any(String) });
    expect((await unary('process.Process/List', {})).status).toBe(200);
    // The polled watcher (CreateWatcher / GetWatcherEvents / RemoveWatcher), as the Python SDK's watch_dir uses it.
    const { watcherId } = await (await unary('filesystem.Filesystem/CreateWatcher', { path: '/home/user', recursive: false })).json();
    expect(watcherId).toEqual(expect.any(String));
    await unary('filesystem.Filesystem/MakeDir', { path: '/home/user/made' });
    let events: Array<{ name: string; type: string }> = [];
    for (let i = 0; i < 40 && events.length === 0; i++) {
      events = (await (await unary('filesystem.Filesystem/GetWatcherEvents', { watcherId })).json()).events;
      if (events.length === 0) await new Promise((r) => setTimeout(r, 25));
    }
    expect(events).toEqual([{ name: 'made', type: 'EVENT_TYPE_CREATE' }]);
    expect((await unary('filesystem.Filesystem/RemoveWatcher', { watcherId })).status).toBe(200);
    expect((await unary('filesystem.Filesystem/GetWatcherEvents', { watcherId })).status).toBe(404);
    // A streaming call: one request envelope in, envelopes out, the last with flag 2.
    const message = Buffer.from(JSON.stringify({ process: { cmd: '/bin/bash', args: ['-l', '-c', 'echo hi; exit 3'] }, stdin: false }));
    const envelope = Buffer.concat([Buffer.from([0, 0, 0, 0, 0]), message]);
    envelope.writeUInt32BE(message.length, 1);
    const res = await fetch(`${base}/process.Process/Start`, {
      method: 'POST',
      headers: { ...headers, 'content-type': 'application/connect+json' },
      body: envelope,
    });
    expect(res.headers.get('content-type')).toBe('application/connect+json');
    const bytes = Buffer.from(await res.arrayBuffer());
    const frames: Array<{ flags: number; body: any }> = [];
    for (let at = 0; at < bytes.length;) {
      const length = bytes.readUInt32BE(at + 1);
      frames.push({ flags: bytes[at]!, body: JSON.parse(bytes.subarray(at + 5, at + 5 + length).toString()) });
      at += 5 + length;
    }
    expect(frames[0]!.body.event.start.pid).toEqual(expect.any(Number));
    const data = frames.filter((f) => f.body.event?.data).map((f) => Buffer.from(f.body.event.data.stdout, 'base64').toString());
    expect(data.join('')).toBe('hi\n');
    expect(frames.at(-2)!.body.event.end).toMatchObject({ exitCode: 3, exited: true, status: 'exit status 3' });
    expect(frames.at(-1)).toEqual({ flags: 2, body: {} });
    await fetch(`${base}/sandboxes/${sbx.sandboxID}`, { method: 'DELETE', headers: api });
  });
});
