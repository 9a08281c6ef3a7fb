/**
 * Idle supervisors (local backend): after SUPERVISOR_IDLE_MS without a request the supervisor exec()s
 * ciw-idle — same pid, same descriptors, the Python kernel still its child — and ciw-idle execs it again
 * when the next request comes. These check that nothing is lost across that: Python state, files and
 * artifacts, timeouts and restarts, the kernel's death while nobody watches, a first call right after, a
 * JavaScript kernel; and that orphans are reaped by the supervisor as the sandbox's pid 1.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { backendSandbox, localEnv } from '../helpers/local.js';

let t: TestApp;
const IDLE_MS = 300;
const post = (path: string, body: object) => t.post(path, body);
const run = (id: string, code: string, extra: object = {}) => post('/run_code', { sandbox_id: id, code, ...extra });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startTestApp(localEnv({ SUPERVISOR_IDLE_MS: String(IDLE_MS), INTERRUPT_GRACE_MS: '500' }));
});
afterAll(async () => t.close());

async function sandbox(): Promise<string> {
  return (await post('/create_sandbox', {})).body.sandbox_id;
}

/** The command lines of a sandbox's processes, and their states (R, S, Z…), from the host's /proc. */
function processes(id: string): { cmd: string; state: string; comm: string }[] {
  const out: { cmd: string; state: string; comm: string }[] = [];
  for (const pid of backendSandbox(t.service, id).pids()) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      out.push({
        cmd: readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '),
        comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
        state: stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3),
      });
    } catch {
      // ended meanwhile
    }
  }
  return out;
}
const hibernating = (id: string) => processes(id).some((p) => p.cmd.startsWith('/opt/ciw/ciw-idle '));

/** Waits until the sandbox's supervisor has become ciw-idle (bounded). */
async function untilHibernating(id: string): Promise<void> {
  for (let i = 0; i < 100 && !hibernating(id); i++) await sleep(50);
  expect(hibernating(id), JSON.stringify(processes(id))).toBe(true);
}

describe('a hibernating supervisor', () => {
  it('keeps Python state, answers Python without waking, and wakes for shell and files', async () => {
    const id = await sandbox();
    await run(id, 'x = 41');
    await untilHibernating(id);
    expect((await run(id, 'print(x + 1)')).body.output).toBe('42\n');
    expect(hibernating(id)).toBe(true); // Python went straight to the kernel
    // ciw-idle, pid 1, holds the service's channel: not reachable through /proc, not killable from inside.
    const probe = await run(
      id,
      'import os, signal\ntry:\n    os.open("/proc/1/fd/1", os.O_WRONLY)\nexcept OSError as e:\n    print(type(e).__name__)\nos.kill(1, signal.SIGKILL)\nos.kill(1, signal.SIGSTOP)\nprint(open("/proc/1/cmdline").read().split("\\0")[0])',
    );
    expect(probe.body.output).toBe('PermissionError\n/opt/ciw/ciw-idle\n');
    expect(hibernating(id)).toBe(true);
    const sh = await post('/execute_command', { sandbox_id: id, command: 'echo awake > note.txt; cat note.txt' });
    expect(sh.body.stdout).toBe('awake\n');
    expect(sh.body.files.map((f: { path: string }) => f.path)).toEqual(['/workspace/note.txt']);
    expect(hibernating(id)).toBe(false);
    await untilHibernating(id);
    expect((await post('/write_file', { sandbox_id: id, remote_path: 'a/b.txt', content: 'bytes' })).status).toBe(200);
    await untilHibernating(id);
    const d = await post('/download_file', { sandbox_id: id, remote_path: 'a/b.txt' });
    const res = await t.app.inject({ method: 'GET', url: new URL(d.body.download_url).pathname + new URL(d.body.download_url).search });
    expect(res.body).toBe('bytes');
    expect((await run(id, 'print(open("a/b.txt").read(), x)')).body.output).toBe('bytes 41\n');
  });

  it('runs a first call that comes after it hibernated, with no kernel yet', async () => {
    const id = await sandbox();
    await untilHibernating(id);
    const r = await run(id, 'print("first")');
    expect(r.body.output).toBe('first\n');
    expect(r.body.error).toBeNull();
  });

  it('wakes to interrupt a call at its timeout, and to restart Python that ignores the interrupt', async () => {
    const id = await sandbox();
    await run(id, 'kept = "yes"');
    await untilHibernating(id);
    const slow = await run(id, 'while True:\n    pass', { timeout: 1 });
    expect(slow.body.error.name).toBe('ExecutionTimeout');
    expect(slow.body.state_preserved).toBe(true);
    await untilHibernating(id);
    const stubborn = await run(id, 'import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\nwhile True:\n    time.sleep(0.05)', {
      timeout: 1,
    });
    expect(stubborn.body.error.name).toBe('ExecutionTimeout');
    expect(stubborn.body.state_preserved).toBe(false);
    const fresh = await run(id, 'print("fresh")');
    expect(fresh.body.output).toBe('fresh\n');
    expect((await run(id, 'kept')).body.error.name).toBe('NameError');
  });

  it("reports Python's death while it hibernates", async () => {
    const id = await sandbox();
    await run(id, 'import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(1.2), os._exit(3))).start()\nv = 1');
    await untilHibernating(id);
    await sleep(1500);
    // The kernel is gone, and reaped; the checkpoint kept after the call stays (a rollback can bring it back).
    const left = processes(id).filter((p) => p.cmd.startsWith('/usr/bin/python3') || p.state === 'Z');
    expect(left.map((p) => [p.comm, p.state])).toEqual([['ciw-checkpoint', 'S']]);
    const r = await run(id, 'print("new")');
    expect(r.body.stdout).toBe('new\n');
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.notice).toMatch(/ended between calls \(code 3\)/);
  });

  it('stays awake while a JavaScript kernel holds state', async () => {
    const id = await sandbox();
    const js = await post('/run_code', { sandbox_id: id, language: 'javascript', code: 'var kept = 7' });
    if (js.body.error?.name === 'UnsupportedLanguage') return; // no Node.js under /usr on this host
    await sleep(IDLE_MS * 3);
    expect(hibernating(id)).toBe(false);
    expect((await post('/run_code', { sandbox_id: id, language: 'javascript', code: 'console.log(kept)' })).body.stdout).toBe('7\n');
  });

  it('leaves no zombie: orphans of shell commands are reaped by the supervisor, pid 1, or by ciw-idle', async () => {
    const id = await sandbox();
    const zombies = async () =>
      (await post('/execute_command', { sandbox_id: id, command: 'ps -eo stat=,pid=,comm=' })).body.stdout
        .split('\n')
        .filter((l: string) => l.startsWith('Z'));
    // The orphans end while the command still runs; the supervisor collects them before it answers.
    await post('/execute_command', { sandbox_id: id, command: 'for i in 1 2 3 4 5; do (true &); done; sleep 0.2' });
    expect(await zombies()).toEqual([]);
    // These end while it hibernates.
    await post('/execute_command', { sandbox_id: id, command: '(sleep 0.5 &); true' });
    await untilHibernating(id);
    await sleep(700);
    expect(await zombies()).toEqual([]);
  });
});
