/**
 * Durability on the local backend, with real sandboxes and the real server process: SIGTERM pauses every
 * sandbox and a restarted service continues its conversations; an idle sandbox pauses and a call resumes
 * it; a "power loss" after a pause loses nothing; a damaged stored state gives a usable sandbox that says so.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { backendSandbox, localEnv } from '../helpers/local.js';
import { startServerProcess } from '../helpers/server-process.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { pidsInUidRange } from '../../src/backends/local/proc.js';

const asRoot = process.getuid?.() === 0;
const children: ChildProcess[] = [];
const apps: TestApp[] = [];
afterEach(async () => {
  for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

const headers = { authorization: 'Bearer k', 'content-type': 'application/json' };

async function serve(env: Record<string, string>) {
  const server = startServerProcess(env);
  children.push(server.child);
  const url = await server.listening();
  const post = async (path: string, body: unknown) => {
    const res = await fetch(`${url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
    return { status: res.status, body: (await res.json()) as any };
  };
  return { child: server.child, post };
}

const text = (r: { body: any }) => `${r.body.output}${r.body.error ? `${r.body.error.name}: ${r.body.error.value}` : ''}`;

describe('restarts', () => {
  it.runIf(asRoot)(
    'kill -9 of the service: its sandboxes keep running, and the next service process takes them over with their live state, a generator included',
    async () => {
      const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1', SUPERVISOR_IDLE_MS: '300' });
      const first = await serve(env);
      const setup = await first.post('/run_code', {
        conversation_id: 'live',
        code: "x = 41\ng = (i * i for i in range(10))\nnext(g)\nnext(g)\nfh = open('log.txt', 'w')\nfh.write('started\\n')\nfh.flush()",
      });
      expect(setup.body.error).toBeNull();
      const id = setup.body.sandbox_id;
      const idle = (await first.post('/create_sandbox', {})).body.sandbox_id; // never used: no kernel yet
      await new Promise((r) => setTimeout(r, 800)); // the supervisors hibernate (ciw-idle) meanwhile
      const base = Number(env.SANDBOX_UID_BASE);
      const count = Number(env.SANDBOX_UID_COUNT);
      const before = pidsInUidRange(base, count).length;
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      expect(pidsInUidRange(base, count).length).toBe(before); // nothing of the sandboxes died with it

      const second = await serve(env);
      const r = await second.post('/run_code', {
        conversation_id: 'live',
        code: "fh.write('again\\n'); fh.flush()\nprint(x + 1, next(g), open('log.txt').read().split())",
      });
      expect(r.body.sandbox_id).toBe(id);
      expect(text(r)).toBe("42 4 ['started', 'again']\n");
      expect(r.body).toMatchObject({ state_preserved: true, notice: null });
      expect(text(await second.post('/execute_command', { sandbox_id: id, command: 'cat log.txt | wc -l' }))).toBe('2\n');
      expect(text(await second.post('/run_code', { sandbox_id: idle, code: 'print("fresh")' }))).toBe('fresh\n');
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
      expect(pidsInUidRange(base, count)).toEqual([]);
    },
  );

  it.runIf(asRoot)('kill -9 of the service: the next service process lists the checkpoints and rolls back to one', async () => {
    const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1', SUPERVISOR_IDLE_MS: '300', CHECKPOINT_WAIT_MS: '0' });
    const first = await serve(env);
    const id = (await first.post('/run_code', { conversation_id: 'undo', code: 'rows = [1, 2, 3]' })).body.sandbox_id;
    await first.post('/run_code', { sandbox_id: id, code: 'rows.clear()' });
    await first.post('/checkpoints', { sandbox_id: id }); // both kept before the service dies
    await new Promise((r) => setTimeout(r, 800)); // the supervisor hibernates meanwhile
    first.child.kill('SIGKILL');
    await once(first.child, 'exit');

    const second = await serve(env);
    const list = await second.post('/checkpoints', { sandbox_id: id });
    expect(list.status, JSON.stringify(list.body)).toBe(200);
    expect(list.body.checkpoints.map((c: any) => [c.after.code, c.alive])).toEqual([
      ['rows = [1, 2, 3]', true],
      ['rows.clear()', true],
    ]);
    const undo = await second.post('/rollback', { sandbox_id: id });
    expect(undo.status, JSON.stringify(undo.body)).toBe(200);
    expect(text(await second.post('/run_code', { sandbox_id: id, code: 'print(rows)' }))).toBe('[1, 2, 3]\n');
  });

  it.runIf(asRoot)(
    'sandboxes whose service process died and was not started again end after SANDBOX_ORPHAN_TIMEOUT_S, awake or hibernated',
    async () => {
      const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1', SUPERVISOR_IDLE_MS: '300', SANDBOX_ORPHAN_TIMEOUT_S: '2' });
      const first = await serve(env);
      await first.post('/run_code', { conversation_id: 'py', code: 'x = 1' }); // its supervisor hibernates
      await first.post('/run_code', { conversation_id: 'js', code: 'let y = 1', language: 'javascript' }); // stays awake
      await new Promise((r) => setTimeout(r, 800));
      const base = Number(env.SANDBOX_UID_BASE);
      const count = Number(env.SANDBOX_UID_COUNT);
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      await new Promise((r) => setTimeout(r, 1000));
      expect(pidsInUidRange(base, count).length).toBeGreaterThan(0); // still waiting for a new service
      const until = Date.now() + 8000;
      while (pidsInUidRange(base, count).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 200));
      expect(pidsInUidRange(base, count)).toEqual([]);
    },
  );

  it.runIf(asRoot)(
    'SIGTERM pauses every sandbox and leaves no process; the restarted service continues the conversation and names what it could not keep',
    async () => {
      const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1' });
      const first = await serve(env);
      const setup = await first.post('/run_code', {
        conversation_id: 'chat',
        code: "import math\nx = 7\ndef area(r): return math.pi * r * r * x\ng = (i for i in range(3))\nopen('keep.txt', 'w').write('kept')\nprint('ok')",
      });
      expect(text(setup)).toBe('ok\n');
      const id = setup.body.sandbox_id;
      await first.post('/run_code', { conversation_id: 'chat', code: 'let total = 40; const tags = ["a"]', language: 'javascript' });
      const base = Number(env.SANDBOX_UID_BASE);
      const count = Number(env.SANDBOX_UID_COUNT);
      expect(pidsInUidRange(base, count).length).toBeGreaterThan(0);
      first.child.kill('SIGTERM');
      const [code] = await once(first.child, 'exit');
      expect(code).toBe(0);
      expect(pidsInUidRange(base, count)).toEqual([]);

      const second = await serve(env);
      const info = await second.post('/get_sandbox_info', { conversation_id: 'chat' });
      expect(info.body).toMatchObject({ sandbox_id: id, status: 'paused' });
      const r = await second.post('/run_code', { conversation_id: 'chat', code: "print(x, round(area(1), 2), open('keep.txt').read())" });
      expect(r.body.sandbox_id).toBe(id);
      expect(text(r)).toBe('7 21.99 kept\n');
      expect(r.body.state_preserved).toBe(false);
      expect(r.body.notice).toMatch(/resumed from its pause at .* when the service shut down/);
      expect(r.body.notice).toMatch(/not restored: g \(Python: TypeError: cannot pickle 'generator' object\)/);
      const js = await second.post('/run_code', { conversation_id: 'chat', code: 'total + 2 + tags.length', language: 'javascript' });
      expect(js.body.results[0].data['text/plain']).toBe('43');
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    },
  );

  it.runIf(asRoot)(
    'power loss after a pause (service and every sandbox process killed) loses nothing of the paused sandbox; a never-paused one is reported lost',
    async () => {
      const env = localEnv({ PORT: '0', API_KEY: 'k', HOST: '127.0.0.1' });
      const first = await serve(env);
      const paused = (await first.post('/run_code', { conversation_id: 'kept', code: "y = [1, 2, 3]\nopen('data.csv', 'w').write('a,b')" }))
        .body.sandbox_id;
      const running = (await first.post('/run_code', { conversation_id: 'other', code: 'z = 1' })).body.sandbox_id;
      expect((await first.post('/pause_sandbox', { sandbox_id: paused })).body.status).toBe('paused');
      first.child.kill('SIGKILL');
      await once(first.child, 'exit');
      const base = Number(env.SANDBOX_UID_BASE);
      for (const pid of pidsInUidRange(base, Number(env.SANDBOX_UID_COUNT))) process.kill(pid, 'SIGKILL');

      const second = await serve(env);
      const r = await second.post('/run_code', { sandbox_id: paused, code: "print(sum(y), open('data.csv').read())" });
      expect(text(r)).toBe('6 a,b\n');
      expect(r.body.state_preserved).toBe(true);
      const lost = await second.post('/run_code', { sandbox_id: running, code: 'z' });
      expect(lost.status).toBe(404);
      expect(lost.body.error.message).toMatch(/lost: the service stopped unexpectedly/);
      const fresh = await second.post('/run_code', { conversation_id: 'other', code: 'z' });
      expect(fresh.body).toMatchObject({ previous_sandbox_id: running, state_preserved: false });
      second.child.kill('SIGTERM');
      await once(second.child, 'exit');
    },
  );
});

describe('idle pause', () => {
  it('pauses an idle sandbox (no process left) and the next call resumes it with files byte for byte, modes, symlinks and variables', async () => {
    let now = Date.now();
    const t = await startTestApp(localEnv({ SANDBOX_IDLE_TIMEOUT_S: '60' }), () => now);
    apps.push(t);
    const id = (
      await t.post('/run_code', {
        conversation_id: 'idle',
        code: "import os\nos.makedirs('d', exist_ok=True)\nopen('d/bin', 'wb').write(bytes(range(256)))\nos.chmod('d/bin', 0o751)\nos.symlink('/etc/hostname', 'd/link')\nos.symlink('bin', 'd/rel')\nn = {'k': [1, 2]}",
      })
    ).body.sandbox_id;
    const sandbox = backendSandbox(t.service, id);
    expect(sandbox.pids().length).toBeGreaterThan(0);
    now += 61_000;
    await t.service.reap();
    expect(t.service.size).toBe(0);
    expect(sandbox.pids()).toEqual([]);
    const r = await t.post('/run_code', {
      sandbox_id: id,
      code: "import os, stat\nprint(open('d/bin', 'rb').read() == bytes(range(256)), oct(stat.S_IMODE(os.stat('d/bin').st_mode)), os.readlink('d/link'), os.readlink('d/rel'), n)",
    });
    expect(text(r)).toBe("True 0o751 /etc/hostname bin {'k': [1, 2]}\n");
    expect(r.body).toMatchObject({ sandbox_id: id, state_preserved: true });
    expect(r.body.notice).toMatch(/after it was idle/);
  });

  it('a damaged stored state gives a clear notice and a fresh, working sandbox under the same id', async () => {
    const t = await startTestApp(localEnv());
    apps.push(t);
    const id = (await t.post('/run_code', { conversation_id: 'c', code: 'q = 1' })).body.sandbox_id;
    await t.post('/pause_sandbox', { sandbox_id: id });
    const dir = join(t.config.STATE_DIR, id);
    expect(readdirSync(dir)).toContain('state.tar');
    writeFileSync(join(dir, 'state.tar'), Buffer.alloc(4096, 7));
    const r = await t.post('/run_code', { sandbox_id: id, code: 'q' });
    expect(r.status).toBe(200);
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.notice).toMatch(/could not be restored .*damaged.*: this is an empty sandbox under the same id/);
    expect(text(await t.post('/run_code', { sandbox_id: id, code: 'print(6 * 7)' }))).toBe('42\n');
  });

  it('forks a live sandbox: the fork has its files and variables, and the two diverge', async () => {
    const t = await startTestApp(localEnv());
    apps.push(t);
    const id = (
      await t.post('/run_code', {
        conversation_id: 'f',
        code: "import pandas as pd\ndf = pd.DataFrame({'v': [1, 2]})\nopen('a.txt', 'w').write('one')",
      })
    ).body.sandbox_id;
    const f = await t.post('/fork_sandbox', { sandbox_id: id });
    expect(f.body).toMatchObject({ forked_from: id, status: 'paused', not_saved: [] });
    expect(f.body.saved).toEqual(expect.arrayContaining(['df', 'pd']));
    const fork = f.body.sandbox_id;
    expect(
      text(
        await t.post('/run_code', {
          sandbox_id: fork,
          code: "df['v'] *= 10\nopen('a.txt', 'w').write('two')\nprint(df.v.sum(), open('a.txt').read())",
        }),
      ),
    ).toBe('30 two\n');
    expect(text(await t.post('/run_code', { sandbox_id: id, code: "print(df.v.sum(), open('a.txt').read())" }))).toBe('3 one\n');
  });

  it('deletes a paused sandbox after PAUSED_RETENTION_S (its stored state gone), and says so', async () => {
    let now = Date.now();
    const t = await startTestApp(localEnv({ PAUSED_RETENTION_S: '600' }), () => now);
    apps.push(t);
    const id = (await t.post('/run_code', { conversation_id: 'r', code: 'kept = 1' })).body.sandbox_id;
    await t.post('/pause_sandbox', { sandbox_id: id });
    const dir = join(t.config.STATE_DIR, id);
    expect(readdirSync(dir)).toContain('state.tar');
    now += 601_000;
    await t.service.reap();
    expect(readdirSync(dir)).not.toContain('state.tar');
    const r = await t.post('/run_code', { sandbox_id: id, code: 'kept' });
    expect(r.status).toBe(404);
    expect(r.body.error.message).toMatch(/deleted at .*PAUSED_RETENTION_S=600/);
  });

  it('another API key can neither resume, fork, pause nor learn of a paused sandbox', async () => {
    const t = await startTestApp(localEnv({ API_KEYS: 'key-one,key-two' }));
    apps.push(t);
    const one = { authorization: 'Bearer key-one' };
    const two = { authorization: 'Bearer key-two' };
    const id = (await t.post('/create_sandbox', {}, one)).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'secret = "zebra-crossing"' }, one);
    expect((await t.post('/pause_sandbox', { sandbox_id: id }, one)).body.status).toBe('paused');
    for (const path of ['/resume_sandbox', '/fork_sandbox', '/pause_sandbox', '/run_code', '/get_sandbox_info']) {
      const r = await t.post(path, { sandbox_id: id, code: 'print(secret)' }, two);
      expect(r.status, path).toBe(404);
      expect(JSON.stringify(r.body), path).not.toMatch(/paused|zebra/);
    }
    const listed = await t.app.inject({ method: 'GET', url: '/sandboxes', headers: two });
    expect(JSON.parse(listed.body).sandboxes).toEqual([]);
    expect((await t.post('/get_sandbox_info', { sandbox_id: id }, one)).body.status).toBe('paused');
    expect(text(await t.post('/run_code', { sandbox_id: id, code: 'print(secret)' }, one))).toBe('zebra-crossing\n');
  });
});
