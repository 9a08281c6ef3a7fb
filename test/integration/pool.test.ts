/** The warm pool: sandboxes started ahead, with modules preloaded, each handed out once, refilled. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp(localEnv({ POOL_SIZE: '2', POOL_PRELOAD: 'tabulate,no_such_module_x' }));
});
afterAll(async () => t.close());

async function poolReady(n: number) {
  for (let i = 0; i < 200; i++) {
    const h = JSON.parse((await t.app.inject({ method: 'GET', url: '/health' })).body);
    if (h.pool.ready >= n) return h.pool;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('the pool did not fill');
}

const preloaded = 'import sys\nprint("tabulate" in sys.modules)';

describe('warm pool', () => {
  it('hands out preloaded sandboxes, each once, and refills', async () => {
    expect(await poolReady(2)).toEqual({ target: 2, ready: 2, preload: ['tabulate', 'no_such_module_x'] });
    const a = (await t.post('/create_sandbox', {})).body.sandbox_id;
    const b = (await t.post('/create_sandbox', {})).body.sandbox_id;
    expect(a).not.toBe(b);
    const ra = await t.post('/run_code', { sandbox_id: a, code: `${preloaded}\nmine = "a"` });
    expect(ra.body.stdout).toBe('True\n');
    const rb = await t.post('/run_code', { sandbox_id: b, code: `${preloaded}\nprint("mine" in globals())` });
    expect(rb.body.stdout).toBe('True\nFalse\n');
    await poolReady(2);
  });

  it('does not hand pooled sandboxes to creates that ask for something else', async () => {
    await poolReady(2);
    const id = (await t.post('/create_sandbox', { env: { FOO: 'bar' } })).body.sandbox_id;
    const r = await t.post('/run_code', { sandbox_id: id, code: `${preloaded}\nimport os\nprint(os.environ["FOO"])` });
    expect(r.body.stdout).toBe('False\nbar\n');
    const h = JSON.parse((await t.app.inject({ method: 'GET', url: '/health' })).body);
    expect(h.pool.ready).toBe(2);
  });
});
