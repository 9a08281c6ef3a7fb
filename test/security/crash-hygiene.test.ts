/** What a crashed or killed earlier run leaves behind is cleaned before serving; SIGTERM leaves nothing. */
import { afterEach, describe, expect, it } from 'vitest';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { once } from 'node:events';
import { localEnv, localOptions } from '../helpers/local.js';
import { startServerProcess } from '../helpers/server-process.js';
import { createLocalBackend } from '../../src/backends/local/local-backend.js';
import { pidsInUidRange } from '../../src/backends/local/proc.js';

const asRoot = process.getuid?.() === 0;
const children: ChildProcess[] = [];
afterEach(() => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
});

function deadPid(): number {
  const r = spawnSync('true');
  return r.pid!;
}

describe('start-up after a crash', () => {
  it.runIf(asRoot)('kills processes left under sandbox uids and removes stale sockets and workspaces', async () => {
    const o = localOptions();
    mkdirSync(join(o.rootDir, 'net'), { recursive: true });
    mkdirSync(join(o.rootDir, 'unsandboxed', 'sbx_old'), { recursive: true });
    writeFileSync(join(o.rootDir, 'net', 'stale.sock'), '');
    writeFileSync(join(o.rootDir, 'owner.pid'), `${deadPid()}\n`);
    const orphan = spawn('sleep', ['600'], { uid: o.uidBase + 3, gid: o.uidBase + 3, stdio: 'ignore' });
    children.push(orphan);
    await once(orphan, 'spawn');
    expect(pidsInUidRange(o.uidBase, o.uidCount)).toContain(orphan.pid);

    const orphanExit = once(orphan, 'exit');
    const backend = createLocalBackend(o);
    const status = await backend.init();
    expect(status.ready, status.problem).toBe(true);
    await orphanExit;
    expect(pidsInUidRange(o.uidBase, o.uidCount)).toEqual([]);
    expect(existsSync(join(o.rootDir, 'net', 'stale.sock'))).toBe(false);
    expect(existsSync(join(o.rootDir, 'unsandboxed', 'sbx_old'))).toBe(false);
    await backend.close();
    expect(existsSync(join(o.rootDir, 'owner.pid'))).toBe(false);
  });

  it('refuses a runtime directory that a live service owns', async () => {
    const o = localOptions();
    mkdirSync(o.rootDir, { recursive: true });
    writeFileSync(join(o.rootDir, 'owner.pid'), `${process.ppid}\n`);
    const backend = createLocalBackend(o);
    const status = await backend.init();
    expect(status.ready).toBe(false);
    expect(status.problem).toMatch(/in use by another running service.*SANDBOX_ROOT/);
    await backend.close();
  });
});

describe('SIGTERM', () => {
  it.runIf(asRoot)('stops every sandbox and leaves no process behind', async () => {
    const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1' });
    const server = startServerProcess(env);
    const { child } = server;
    children.push(child);
    const url = await server.listening();
    const headers = { authorization: 'Bearer k', 'content-type': 'application/json' };
    for (let i = 0; i < 3; i++) {
      const id = (await (await fetch(`${url}/create_sandbox`, { method: 'POST', headers, body: '{}' })).json()).sandbox_id;
      await fetch(`${url}/execute_command`, {
        method: 'POST',
        headers,
        body: JSON.stringify({ sandbox_id: id, command: 'nohup sleep 600 >/dev/null 2>&1 &' }),
      });
    }
    const base = Number(env.SANDBOX_UID_BASE);
    const count = Number(env.SANDBOX_UID_COUNT);
    expect(pidsInUidRange(base, count).length).toBeGreaterThanOrEqual(9);
    child.kill('SIGTERM');
    const [code] = await once(child, 'exit');
    expect(code).toBe(0);
    expect(pidsInUidRange(base, count)).toEqual([]);
  });
});
