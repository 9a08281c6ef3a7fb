/** Start-up behaviour: the real server process, and a local backend that cannot use bubblewrap. */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtempSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { makeLocalBackend } from '../helpers/local.js';
import { startServerProcess } from '../helpers/server-process.js';

const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null) c.kill('SIGKILL');
});

function startServer(env: Record<string, string>) {
  const server = startServerProcess(env);
  children.push(server.child);
  return server;
}

describe('server process', () => {
  it('refuses to listen beyond loopback without an API key', async () => {
    const { child, output } = startServer({ HOST: '0.0.0.0', PORT: '0', SANDBOX_BACKEND: 'memory', STATE_DIR: 'off' });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/refusing to listen on 0\.0\.0\.0 without an API key/);
  });

  it('serves, and on SIGTERM pauses its sandboxes and exits 0', async () => {
    const stateDir = mkdtempSync(join(tmpdir(), 'ciw-state-'));
    const { child, output, listening } = startServer({
      PORT: '0',
      SANDBOX_BACKEND: 'memory',
      API_KEY: 'k',
      HOST: '127.0.0.1',
      STATE_DIR: stateDir,
    });
    const url = await listening();
    const health = await fetch(`${url}/health`);
    expect(health.status).toBe(200);
    const created = await fetch(`${url}/create_sandbox`, { method: 'POST', headers: { authorization: 'Bearer k' } });
    expect(created.status).toBe(200);
    expect(output()).not.toContain('Bearer k');
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(output()).toMatch(/sandbox sbx_\w+ paused \(shutdown/);
    expect(readdirSync(stateDir)).toHaveLength(1);
  });

  it('refuses to start when STATE_DIR cannot be created, saying how to fix it', async () => {
    const { child, output } = startServer({
      PORT: '0',
      SANDBOX_BACKEND: 'memory',
      HOST: '127.0.0.1',
      STATE_DIR: '/etc/hostname/ciw-state',
    });
    const [code] = await once(child, 'exit');
    expect(code).toBe(2);
    expect(output()).toMatch(/STATE_DIR \/etc\/hostname\/ciw-state cannot be used .*STATE_DIR=off/);
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
      await s.destroy();
      await backend.close();
    } finally {
      process.env.PATH = path;
    }
  });
});
