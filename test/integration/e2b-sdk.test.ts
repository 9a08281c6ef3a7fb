/**
 * The unmodified E2B SDKs (e2b and @e2b/code-interpreter from npm, versions pinned in package.json) against
 * this service on 127.0.0.1, configured only by E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Sandbox } from '@e2b/code-interpreter';
import { CommandExitError, Sandbox as BaseSandbox, FileType, FilesystemEventType } from 'e2b';
import { Sandbox as OldSandbox } from 'e2b-2.50';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY_ONE = `e2b_${'1'.repeat(40)}`;
const KEY_TWO = `e2b_${'2'.repeat(40)}`;
let t: TestApp;
let base: string;

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: `${KEY_ONE},${KEY_TWO}`, EXEC_TIMEOUT_S: '30' }));
  base = await t.app.listen({ host: '127.0.0.1', port: 0 });
  process.env.E2B_API_URL = base;
  process.env.E2B_SANDBOX_URL = base;
  process.env.E2B_API_KEY = KEY_ONE;
});

afterAll(async () => {
  await t?.close();
});

describe('the E2B code interpreter SDK', () => {
  it('keeps state, streams stdout, names errors, returns a chart as png, and reads and writes files', async () => {
    const sbx = await Sandbox.create();
    try {
      expect(sbx.sandboxId).toMatch(/^sbx_/);
      await sbx.runCode('x = 41');
      const chunks: string[] = [];
      const run = await sbx.runCode('import sys\nprint("a"); sys.stdout.flush()\nx + 1', { onStdout: (m) => void chunks.push(m.line) });
      expect(run.text).toBe('42');
      expect(run.logs.stdout.join('')).toBe('a\n');
      expect(chunks.join('')).toBe('a\n');
      expect(run.executionCount).toBeGreaterThan(0);

      const failed = await sbx.runCode('1 / 0');
      expect(failed.error?.name).toBe('ZeroDivisionError');

      const chart = await sbx.runCode('import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()');
      const png = chart.results.find((r) => r.png);
      expect(png?.png && Buffer.from(png.png, 'base64').subarray(1, 4).toString()).toBe('PNG');

      await sbx.files.write('/home/user/in.txt', 'hello');
      expect(await sbx.files.read('/home/user/in.txt')).toBe('hello');
      const made = await sbx.runCode('open("/home/user/out.txt", "w").write("from code")');
      expect(made.error).toBeUndefined();
      expect(await sbx.files.read('out.txt')).toBe('from code');
      expect(await sbx.files.exists('/home/user/out.txt')).toBe(true);
      expect(await sbx.files.exists('/home/user/nope.txt')).toBe(false);
    } finally {
      await sbx.kill();
    }
  });

  it('runs independent Python contexts and a JavaScript one, with env vars per call', async () => {
    const sbx = await Sandbox.create();
    try {
      const a = await sbx.createCodeContext();
      const b = await sbx.createCodeContext({ language: 'python' });
      await sbx.runCode('v = "a"', { context: a });
      await sbx.runCode('v = "b"', { context: b });
      expect((await sbx.runCode('v', { context: a })).text).toBe("'a'");
      expect((await sbx.runCode('v', { context: b })).text).toBe("'b'");
      expect((await sbx.runCode('"v" in globals()')).text).toBe('False');
      const js = await sbx.createCodeContext({ language: 'javascript' });
      expect((await sbx.runCode('const n = 20; n + 1', { context: js })).text).toBe('21');
      expect((await sbx.runCode('import os; os.environ["FOO"]', { envs: { FOO: 'bar' } })).text).toBe("'bar'");
      const listed = await sbx.listCodeContexts();
      expect(listed.map((c) => c.id).sort()).toEqual([a.id, b.id, js.id].sort());
      await sbx.restartCodeContext(a);
      expect((await sbx.runCode('"v" in globals()', { context: a })).text).toBe('False');
      await sbx.removeCodeContext(b);
      await expect(sbx.runCode('v', { context: b })).rejects.toThrow();
    } finally {
      await sbx.kill();
    }
  });
});

describe('the E2B core SDK', () => {
  it('runs commands with exit codes, background processes, stdin and a pty', async () => {
    const sbx = await BaseSandbox.create();
    try {
      const ok = await sbx.commands.run('echo hi; pwd');
      expect(ok.exitCode).toBe(0);
      expect(ok.stdout).toBe('hi\n/home/user\n');
      const err = await sbx.commands.run('echo bad >&2; exit 3').catch((e: unknown) => e);
      expect(err).toBeInstanceOf(CommandExitError);
      expect((err as CommandExitError).exitCode).toBe(3);
      expect((err as CommandExitError).stderr).toBe('bad\n');

      const bg = await sbx.commands.run('sleep 60', { background: true });
      expect((await sbx.commands.list()).map((p) => p.pid)).toContain(bg.pid);
      expect(await bg.kill()).toBe(true);
      const killed = await bg.wait().catch((e: unknown) => e);
      expect((killed as CommandExitError).exitCode).toBe(137);

      const cat = await sbx.commands.run('cat', { background: true, stdin: true });
      await sbx.commands.sendStdin(cat.pid, 'through stdin\n');
      await sbx.commands.closeStdin(cat.pid);
      expect((await cat.wait()).stdout).toBe('through stdin\n');

      const out: string[] = [];
      const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void out.push(Buffer.from(d).toString()) });
      await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('tty; exit 4\n'));
      const ended = await pty.wait().catch((e: unknown) => e);
      expect((ended as CommandExitError).exitCode).toBe(4);
      expect(out.join('')).toContain('/dev/pts/');
    } finally {
      await sbx.kill();
    }
  });

  it('lists, renames, removes, makes directories and watches', async () => {
    const sbx = await BaseSandbox.create();
    try {
      expect(await sbx.files.makeDir('/home/user/d')).toBe(true);
      expect(await sbx.files.makeDir('/home/user/d')).toBe(false);
      await sbx.files.write('/home/user/d/a.txt', 'a');
      const listed = await sbx.files.list('/home/user/d');
      expect(listed.map((e) => [e.name, e.type, e.path])).toEqual([['a.txt', FileType.FILE, '/home/user/d/a.txt']]);
      const moved = await sbx.files.rename('/home/user/d/a.txt', '/home/user/d/b.txt');
      expect(moved.path).toBe('/home/user/d/b.txt');
      const info = await sbx.files.getInfo('/home/user/d/b.txt');
      expect(info.size).toBe(1);
      const events: string[] = [];
      const watch = await sbx.files.watchDir('/home/user/d', (e) => void events.push(`${e.type}:${e.name}`));
      await sbx.files.write('/home/user/d/c.txt', 'c');
      await sbx.files.remove('/home/user/d/b.txt');
      for (let i = 0; i < 50 && !events.includes(`${FilesystemEventType.REMOVE}:b.txt`); i++) await new Promise((r) => setTimeout(r, 50));
      await watch.stop();
      expect(events).toContain(`${FilesystemEventType.CREATE}:c.txt`);
      expect(events).toContain(`${FilesystemEventType.REMOVE}:b.txt`);
      expect(await sbx.files.exists('/home/user/d/b.txt')).toBe(false);
    } finally {
      await sbx.kill();
    }
  });

  it('connects from a second client, sets the timeout, lists, pauses and resumes on connect, and kills', async () => {
    const sbx = await Sandbox.create({ metadata: { purpose: 'e2b-test' } });
    await sbx.runCode('kept = 7');
    await sbx.files.write('/home/user/k.txt', 'kept file');
    const second = await Sandbox.connect(sbx.sandboxId);
    expect((await second.runCode('kept')).text).toBe('7');
    await sbx.setTimeout(120_000);
    const info = await sbx.getInfo();
    expect(info.state).toBe('running');
    expect(info.endAt.getTime() - Date.now()).toBeGreaterThan(100_000);
    const mine = await Sandbox.list({ query: { metadata: { purpose: 'e2b-test' } } }).nextItems();
    expect(mine.map((s) => s.sandboxId)).toEqual([sbx.sandboxId]);
    expect(await sbx.pause()).toBe(true);
    expect((await sbx.getInfo()).state).toBe('paused');
    const resumed = await Sandbox.connect(sbx.sandboxId);
    expect((await resumed.runCode('kept')).text).toBe('7');
    expect(await resumed.files.read('/home/user/k.txt')).toBe('kept file');
    expect(await resumed.kill()).toBe(true);
    expect(await Sandbox.kill(sbx.sandboxId)).toBe(false);
  });

  it('another API key can neither connect to, kill nor run code in a sandbox', async () => {
    const sbx = await Sandbox.create();
    try {
      await expect(Sandbox.connect(sbx.sandboxId, { apiKey: KEY_TWO })).rejects.toThrow(/not found/i);
      expect(await Sandbox.kill(sbx.sandboxId, { apiKey: KEY_TWO })).toBe(false);
      const other = await Sandbox.create({ apiKey: KEY_TWO });
      // Its own token does not open this sandbox: the request names this sandbox with the other's token.
      const res = await fetch(`${base}/execute`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'e2b-sandbox-id': sbx.sandboxId, 'x-access-token': (other as any).envdAccessToken },
        body: JSON.stringify({ code: '1' }),
      });
      expect(res.status).toBe(404);
      await other.kill();
    } finally {
      await sbx.kill();
    }
  });

  it('reconnects to a process from a second client, resizes a pty, signs file URLs, gzips, lists by depth and reports health and metrics', async () => {
    const sbx = await BaseSandbox.create();
    try {
      const bg = await sbx.commands.run('for i in 1 2 3; do sleep 0.3; echo tick$i; done', { background: true });
      const second = await BaseSandbox.connect(sbx.sandboxId);
      const seen: string[] = [];
      const again = await second.commands.connect(bg.pid, { onStdout: (d) => void seen.push(d) });
      const done = await again.wait();
      expect(done.exitCode).toBe(0);
      expect(seen.join('')).toMatch(/tick3\n$/);

      const out: string[] = [];
      const pty = await sbx.pty.create({ cols: 80, rows: 24, onData: (d) => void out.push(Buffer.from(d).toString()) });
      await sbx.pty.resize(pty.pid, { cols: 120, rows: 40 });
      await sbx.pty.sendInput(pty.pid, new TextEncoder().encode('stty size; exit\n'));
      await pty.wait();
      expect(out.join('')).toContain('40 120');

      await sbx.files.write('/home/user/g/z.txt', 'zipped', { gzip: true });
      expect(await sbx.files.read('/home/user/g/z.txt', { gzip: true })).toBe('zipped');
      const deep = await sbx.files.list('/home/user', { depth: 2 });
      expect(deep.map((e) => e.path)).toEqual(expect.arrayContaining(['/home/user/g', '/home/user/g/z.txt']));

      const down = await fetch(await sbx.downloadUrl('/home/user/g/z.txt'));
      expect(await down.text()).toBe('zipped');
      const form = new FormData();
      form.append('file', new Blob(['uploaded']), 'u.txt');
      const up = await fetch(await sbx.uploadUrl('/home/user/u.txt'), { method: 'POST', body: form });
      expect(up.status).toBe(200);
      expect(await sbx.files.read('/home/user/u.txt')).toBe('uploaded');
      const forged = new URL(await sbx.downloadUrl('/home/user/g/z.txt'));
      forged.searchParams.set('path', '/home/user/u.txt');
      expect((await fetch(forged)).status).toBe(403);

      expect(await sbx.isRunning()).toBe(true);
      const [m] = await sbx.getMetrics();
      expect(m!.memUsed).toBeGreaterThan(0);
      expect(m!.memTotal).toBeGreaterThan(m!.memUsed);
    } finally {
      await sbx.kill();
    }
  });

  it('works with an older SDK (e2b 2.50, the paths before /v2)', async () => {
    const sbx = await OldSandbox.create();
    try {
      expect((await sbx.commands.run('echo old')).stdout).toBe('old\n');
      await sbx.files.write('/home/user/o.txt', 'o');
      expect(await sbx.files.read('/home/user/o.txt')).toBe('o');
    } finally {
      await sbx.kill();
    }
  });
});
