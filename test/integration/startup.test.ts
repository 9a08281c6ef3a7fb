/** Start-up behaviour: the real server process, and a local backend that cannot use bubblewrap. */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { makeLocalBackend } from '../helpers/local.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

function startServer(env: Record<string, string>): { child: ChildProcess; output: () => string } {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return { child, output: () => out };
}

async function waitFor(pred: () => boolean, ms: number): Promise<void> {
  const end = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('server process', () => {
  it('refuses to listen beyond loopback without an API key', async () => {
    const { child, output } = startServer({ HOST: '0.0.0.0', PORT: '0', SANDBOX_BACKEND: 'memory' });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/refusing to listen on 0\.0\.0\.0 without an API key/);
  });

  it('serves, and on SIGTERM stops its sandboxes and exits 0', async () => {
    const { child, output } = startServer({ PORT: '0', SANDBOX_BACKEND: 'memory', API_KEY: 'k' , HOST: '127.0.0.1' });
    await waitFor(() => /Server listening at/.test(output()), 20_000);
    const url = /Server listening at (http:\/\/[\d.:]+)/.exec(output())![1];
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
    const created = await fetch(`${url}/create_sandbox`, { method: 'POST', headers: { authorization: 'Bearer k' } });
    expect(created.status).toBe(200);
    expect(output()).not.toContain('Bearer k');
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(output()).toMatch(/stopped/);
  });
});

describe('local backend without bubblewrap', () => {
  it('reports the problem and refuses to run code', async () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const backend = makeLocalBackend();
      const status = await backend.init();
      expect(status.ready).toBe(false);
      expect(status.problem).toMatch(/bubblewrap.*not installed.*ALLOW_UNSANDBOXED/);
      await expect(backend.create({ id: 'x', env: {} })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      await backend.close();
    } finally {
      process.env.PATH = path;
    }
  });

  it('runs code unisolated only when the operator opts in, and says so', async () => {
    const path = process.env.PATH;
    process.env.PATH = '/nonexistent';
    try {
      const backend = makeLocalBackend({ allowUnsandboxed: true });
      const status = await backend.init();
      expect(status.ready).toBe(true);
      expect(status.isolation).toMatch(/^NONE/);
      const s = await backend.create({ id: 'unsandboxed', env: {} });
      expect((await s.runCode({ code: 'v = 2\nprint(v * 21)', timeoutMs: 5000 })).stdout).toBe('42\n');
      await backend.destroy(s);
      await backend.close();
    } finally {
      process.env.PATH = path;
    }
  });
});
