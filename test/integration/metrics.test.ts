/**
 * GET /metrics, scraped as Prometheus does, moves as calls succeed, fail and hit limits; answers carry what the
 * call used.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY = 'metrics-key';
const auth = { authorization: `Bearer ${KEY}` };
let t: TestApp;

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, MAX_OUTPUT_BYTES: '10000' }));
});
afterAll(async () => {
  await t?.close();
});

/** The value of one series in the exposition text (0 when it has not appeared yet). */
async function value(name: string, labels: Record<string, string> = {}): Promise<number> {
  const res = await t.app.inject({ method: 'GET', url: '/metrics', headers: auth });
  expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
  const want = Object.entries(labels)
    .map(([k, v]) => `${k}="${v}"`)
    .join(',');
  for (const line of res.body.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^(\w+)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (m && m[1] === name && (m[2] ?? '') === want) return Number(m[3]);
  }
  return 0;
}

describe('/metrics', () => {
  it('counts calls by outcome — ok, error, timeout, a limit, a refused request — with their latency and the sandboxes', async () => {
    const id = (await t.post('/create_sandbox', {}, auth)).body.sandbox_id;
    const calls = (outcome: string) => value('ciw_calls_total', { operation: 'runCode', outcome });
    const before = {
      ok: await calls('ok'),
      error: await calls('error'),
      timeout: await calls('timeout'),
      output: await calls('output_limit'),
      rejected: await calls('rejected'),
    };
    await t.post('/run_code', { sandbox_id: id, code: 'print(1)' }, auth);
    await t.post('/run_code', { sandbox_id: id, code: '1/0' }, auth);
    await t.post('/run_code', { sandbox_id: id, code: 'while True: pass', timeout: 0.3 }, auth);
    await t.post('/run_code', { sandbox_id: id, code: 'print("x" * 50000)' }, auth);
    await t.post('/run_code', { sandbox_id: 'sbx_nope', code: '1' }, auth);
    expect(await calls('ok')).toBe(before.ok + 1);
    expect(await calls('error')).toBe(before.error + 1);
    expect(await calls('timeout')).toBe(before.timeout + 1);
    expect(await calls('output_limit')).toBe(before.output + 1);
    expect(await calls('rejected')).toBe(before.rejected + 1);
    expect(await value('ciw_call_duration_seconds_count', { operation: 'runCode' })).toBeGreaterThanOrEqual(5);
    expect(await value('ciw_sandboxes', { state: 'live' })).toBeGreaterThanOrEqual(1);
    expect(await value('ciw_request_bytes_total')).toBeGreaterThan(0);
    expect(await value('ciw_response_bytes_total')).toBeGreaterThan(0);
  });

  it('counts interpreter restarts, and needs the API key', async () => {
    const id = (await t.post('/create_sandbox', {}, auth)).body.sandbox_id;
    const before = await value('ciw_kernel_restarts_total');
    const r = await t.post('/run_code', { sandbox_id: id, code: 'import os; os._exit(3)' }, auth);
    expect(r.body.state_preserved).toBe(false);
    expect(await value('ciw_kernel_restarts_total')).toBe(before + 1);
    expect((await t.app.inject({ method: 'GET', url: '/metrics' })).statusCode).toBe(401);
  });
});

describe('usage in answers', () => {
  it('says how much CPU the call used and how much memory the sandbox holds', async () => {
    const id = (await t.post('/create_sandbox', {}, auth)).body.sandbox_id;
    const busy = await t.post('/run_code', { sandbox_id: id, code: 'sum(i * i for i in range(3_000_000))' }, auth);
    expect(busy.body.usage.cpu_ms).toBeGreaterThan(50);
    expect(busy.body.usage.memory_bytes).toBeGreaterThan(1_000_000);
    const idle = await t.post('/execute_command', { sandbox_id: id, command: 'true' }, auth);
    expect(idle.body.usage.cpu_ms).toBeLessThan(busy.body.usage.cpu_ms);
    expect(idle.body.usage).toHaveProperty('memory_peak_bytes');
  });
});
