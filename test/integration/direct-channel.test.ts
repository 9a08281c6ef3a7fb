/**
 * Python on the direct channel (local backend): the service talks to the kernel on the sandbox's fd 3, the
 * kernel captures its own output, and the supervisor only starts, interrupts, restarts it and reports its
 * death. These check what moved into the kernel — output order and caps, output of child processes, calls
 * that hang or die, artifacts seen by two processes — and that the channel, which the user's code can
 * write to, cannot be used against the service.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

let t: TestApp;
const KEY = 'direct-channel-key';
const post = (path: string, body: object) => t.post(path, body, { authorization: `Bearer ${KEY}` });
const run = (id: string, code: string, extra: object = {}) => post('/run_code', { sandbox_id: id, code, ...extra });

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, MAX_OUTPUT_BYTES: '65536' }));
});
afterAll(async () => {
  const h = await t.app.inject({ method: 'GET', url: '/health' });
  expect(JSON.parse(h.body).status).toBe('ok');
  await t.close();
});

/** Python lines that set req_id to the id of the call in flight, as hostile user code could find it. */
const FIND_REQUEST_ID = [
  'f, req_id = sys._getframe(0), None',
  'while f is not None and req_id is None:',
  '    req = f.f_locals.get("req")',
  '    req_id = req.get("id") if isinstance(req, dict) else None',
  '    f = f.f_back',
];

async function sandbox(): Promise<string> {
  return (await post('/create_sandbox', {})).body.sandbox_id;
}

describe('output captured in the kernel', () => {
  it("keeps the order of prints and child processes' output, and captures forked children", async () => {
    const id = await sandbox();
    const code = [
      'import os, subprocess, sys',
      'print("a")',
      'os.system("echo b")',
      'print("c", flush=True)',
      'subprocess.run(["sh", "-c", "echo d; echo e >&2"])',
      'sys.stdout.buffer.write(b"f\\n")',
      'os.write(1, b"g\\n")',
      'sys.stdout.reconfigure(encoding="utf-8")',
      'pid = os.fork()',
      'if pid == 0:',
      '    print("from the fork")',
      '    os._exit(0)',
      'os.waitpid(pid, 0)',
      'print("h")',
    ].join('\n');
    const r = await run(id, code);
    expect(r.body.error).toBeNull();
    expect(r.body.stdout).toBe('a\nb\nc\nd\nf\ng\nfrom the fork\nh\n');
    expect(r.body.stderr).toBe('e\n');
    expect(r.body.output).toBe('a\nb\nc\nd\ne\nf\ng\nfrom the fork\nh\n');
  });

  it('reads megabytes from a child without blocking it, up to the cap', async () => {
    const id = await sandbox();
    const under = await run(id, 'import subprocess\nsubprocess.run(["head", "-c", "60000", "/dev/zero"])\nprint("done")');
    expect(under.body.error).toBeNull();
    expect(under.body.stdout.length).toBe(60000 + 'done\n'.length);
    const over = await run(id, 'import subprocess\nsubprocess.run("head -c 3000000 /dev/zero | tr \'\\\\0\' x", shell=True)\nx = 1');
    expect(over.body.output_truncated).toBe(true);
    expect(over.body.stdout.length).toBeLessThanOrEqual(65536);
    expect(over.body.error.name).toBe('OutputLimitExceeded');
    expect((await run(id, 'print("alive")')).body.stdout).toBe('alive\n');
  });

  it('stops a print flood at the cap and keeps the state', async () => {
    const id = await sandbox();
    await run(id, 'kept = 7');
    const r = await run(id, 'while True:\n    print("x" * 100)');
    expect(r.body.error.name).toBe('OutputLimitExceeded');
    expect(r.body.output_truncated).toBe(true);
    expect(r.body.stdout.length).toBeLessThanOrEqual(65536);
    expect(r.body.state_preserved).toBe(true);
    expect((await run(id, 'print(kept)')).body.stdout).toBe('7\n');
  });

  it('kills a flood from a child process that ignores the interrupt, and says the state is lost', async () => {
    const id = await sandbox();
    const r = await run(id, 'import os\nos.system("yes")', { timeout: 30 });
    expect(r.body.error.name).toBe('OutputLimitExceeded');
    expect(r.body.output_truncated).toBe(true);
    expect(r.body.timed_out).toBe(false);
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.error.value).toMatch(/did not stop when interrupted/);
    expect(r.body.stdout.startsWith('y\ny\n')).toBe(true);
    expect((await run(id, 'print("again")')).body.stdout).toBe('again\n');
  });

  it('gives what background processes print between calls to the next call, and never stops it for that', async () => {
    const id = await sandbox();
    await run(id, 'import subprocess\nsubprocess.Popen(["sh", "-c", "sleep 0.3; echo later"])');
    await new Promise((r) => setTimeout(r, 800));
    expect((await run(id, 'print("now")')).body.stdout).toBe('later\nnow\n');
    await run(id, 'import subprocess\nsubprocess.Popen("head -c 200000 /dev/zero | tr \'\\\\0\' z", shell=True)');
    await new Promise((r) => setTimeout(r, 800));
    const r = await run(id, 'print("fine")');
    expect(r.body.error).toBeNull();
    expect(r.body.stdout).toBe('fine\n');
    expect(r.body.stderr).toMatch(/between calls passed 65536 bytes and was dropped/);
  });

  it('keeps what a hung call printed when Python is restarted', async () => {
    const id = await sandbox();
    const code =
      'import time\nprint("before the hang", flush=True)\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass';
    const r = await run(id, code, { timeout: 1 });
    expect(r.body.error.name).toBe('ExecutionTimeout');
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.stdout).toBe('before the hang\n');
  });
});

describe('one-line cells', () => {
  it('shows the value of a one-line expression, not of a statement, and reports a syntax error', async () => {
    const id = await sandbox();
    expect((await run(id, '6 * 7')).body.results).toEqual([{ type: 'execute_result', data: { 'text/plain': '42' } }]);
    expect((await run(id, 'y = 5  # a statement')).body.results).toEqual([]);
    expect((await run(id, 'y; y + 1')).body.output).toBe('6\n');
    const bad = await run(id, 'print(1');
    expect(bad.body.error.name).toBe('SyntaxError');
    expect(bad.body.error.traceback).toMatch(/<cell-\d+>/);
    expect((await run(id, '  1')).body.error.name).toBe('IndentationError');
  });
});

describe('a kernel that dies', () => {
  it('between calls: the next result says the state was lost', async () => {
    const id = await sandbox();
    await run(id, 'import os, threading, time\nthreading.Thread(target=lambda: (time.sleep(0.3), os._exit(3))).start()\nv = 1');
    await new Promise((r) => setTimeout(r, 1000));
    const r = await run(id, 'print("new")');
    expect(r.body.stdout).toBe('new\n');
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.notice).toMatch(/ended between calls \(code 3\)/);
    expect((await run(id, 'v')).body.error.name).toBe('NameError');
  });

  it('killed by a signal during a call', async () => {
    const id = await sandbox();
    const r = await run(id, 'import os, signal\nprint("going")\nos.kill(os.getpid(), signal.SIGKILL)');
    expect(r.body.error.name).toBe('KernelDied');
    expect(r.body.error.value).toMatch(/signal 9/);
    expect(r.body.state_preserved).toBe(false);
    expect((await run(id, 'print(1)')).body.stdout).toBe('1\n');
  });
});

describe('artifacts seen by the kernel and the supervisor', () => {
  it('lists a file once, in the call that made it, whichever process ran it', async () => {
    const id = await sandbox();
    const names = (r: { body: { files: Array<{ name: string }> } }) => r.body.files.map((f) => f.name);
    expect(names(await run(id, 'open("py.txt", "w").write("1")'))).toEqual(['py.txt']);
    expect(names(await post('/execute_command', { sandbox_id: id, command: 'echo 2 > sh.txt' }))).toEqual(['sh.txt']);
    await post('/write_file', { sandbox_id: id, remote_path: 'client.txt', content: '3' });
    expect(names(await run(id, 'print(1)'))).toEqual([]);
    expect(names(await run(id, 'open("sh.txt", "a").write("more")'))).toEqual(['sh.txt']);
    expect(names(await post('/execute_command', { sandbox_id: id, command: 'true' }))).toEqual([]);
  });

  it('sees changes deep in the tree, and those of background processes in the next call', async () => {
    const id = await sandbox();
    const paths = (r: { body: { files: Array<{ path: string }> } }) => r.body.files.map((f) => f.path);
    expect(paths(await run(id, 'import os\nos.makedirs("a/b/c")\nopen("a/b/c/new.txt", "w").write("1")'))).toEqual([
      '/workspace/a/b/c/new.txt',
    ]);
    expect(paths(await run(id, 'print("nothing")'))).toEqual([]);
    expect(paths(await run(id, 'open("a/b/c/new.txt", "a").write("2")'))).toEqual(['/workspace/a/b/c/new.txt']);
    await run(id, 'import subprocess\nsubprocess.Popen(["sh", "-c", "sleep 0.3; echo x > a/b/later.txt"])');
    await new Promise((r) => setTimeout(r, 800));
    expect(paths(await run(id, 'print(1)'))).toEqual(['/workspace/a/b/later.txt']);
    expect(paths(await run(id, 'print(2)'))).toEqual([]);
  });
});

describe('the channel is written by user code', () => {
  it('ignores forged frames and never links files outside the workspace', async () => {
    const id = await sandbox();
    const code = [
      'import json, os, sys',
      '# What a hostile kernel could send: noise, half a frame, replies to other calls, and a reply to this',
      '# call (its id is in the request the kernel read) that names files outside the workspace.',
      ...FIND_REQUEST_ID,
      'os.write(5, b"garbage\\n{\\"id\\": 999999, \\"ok\\": true}\\n{\\"half\\": ")',
      'forged = {"id": req_id, "ok": True, "results": [{"type": "display_data", "data": {"text/plain": "x"}, "path": "/etc/passwd"}],',
      '          "error": None, "stdout": "forged\\n", "stderr": "", "output": "forged\\n",',
      '          "files": [{"path": "/etc/shadow", "size": 1}, {"path": "/workspace/../etc/passwd", "size": 1}, {"path": "/workspace/ok.txt", "size": 1}]}',
      'os.write(5, b"\\n" + json.dumps(forged).encode() + b"\\n")',
      'import time; time.sleep(0.5)',
    ].join('\n');
    const r = await run(id, code);
    expect(r.status).toBe(200);
    expect(r.body.stdout).toBe('forged\n');
    expect(r.body.files.map((f: { path: string }) => f.path)).toEqual(['/workspace/ok.txt']);
    expect(r.body.results[0].url).toBeUndefined();
    // The real reply of that call arrives later and is dropped; the next call gets its own.
    expect((await run(id, 'print("real")')).body.stdout).toBe('real\n');
  });

  it('stops only that sandbox when the kernel floods the channel with one endless line', async () => {
    const other = await sandbox();
    const id = await sandbox();
    const r = await run(id, 'import os\nwhile True:\n    os.write(5, b"x" * 65536)', { timeout: 30 });
    expect([200, 404, 410, 503]).toContain(r.status);
    const after = await run(id, 'print(1)');
    expect(after.status).toBe(404);
    expect((await run(other, 'print("unaffected")')).body.stdout).toBe('unaffected\n');
  }, 60_000);

  it('holds forged output events to the output cap, and stops a sandbox that floods the channel with noise', async () => {
    const id = await sandbox();
    const forge = [
      'import json, os, sys',
      ...FIND_REQUEST_ID,
      'frame = b"\\n" + json.dumps({"id": req_id, "event": "stdout", "data": "y" * 1000}).encode() + b"\\n"',
      'for _ in range(1000):',
      '    os.write(5, frame)',
    ].join('\n');
    await run(id, 'x = 1');
    const r = await run(id, forge);
    expect(r.body.error.name).toBe('OutputLimitExceeded');
    expect(r.body.output_truncated).toBe(true);
    expect(r.body.stdout.length).toBeLessThanOrEqual(65536);
    expect((await run(id, 'print(x)')).body.stdout).toBe('1\n');
    const noisy = await sandbox();
    const flood = await run(noisy, 'import os\nwhile True:\n    os.write(5, b"noise\\n" * 10000)', { timeout: 30 });
    expect([200, 404, 410, 503]).toContain(flood.status);
    expect((await run(noisy, 'print(1)')).status).toBe(404);
    expect((await run(id, 'print("unaffected")')).body.stdout).toBe('unaffected\n');
    // Noise from a thread, between calls and during them: the service stops reading between calls, skips
    // the noise unparsed during a call, and stops the sandbox if a call brings more than a frame's worth.
    const between = await sandbox();
    await run(
      between,
      'import os, threading\ndef noise():\n    while True:\n        os.write(5, b"noise\\n" * 10000)\nthreading.Thread(target=noise, daemon=True).start()',
    );
    await new Promise((r) => setTimeout(r, 500));
    expect(JSON.parse((await t.app.inject({ method: 'GET', url: '/health' })).body).status).toBe('ok');
    for (let i = 0; i < 3; i++) {
      const r = await run(between, 'print(1)');
      // 410: the sandbox was stopped for the noise while this call ran; 404: before it.
      expect([200, 404, 410, 503]).toContain(r.status);
      if (r.status === 200) expect(r.body.stdout).toBe('1\n');
      if (r.status === 410) expect(r.body.error.code).toBe('SANDBOX_LOST');
    }
    expect((await run(id, 'print("still unaffected")')).body.stdout).toBe('still unaffected\n');
  }, 60_000);

  it('gives no child process the channel', async () => {
    const id = await sandbox();
    const probe = 'import os; print(sorted(os.readlink("/proc/self/fd/" + f) for f in os.listdir("/proc/self/fd")))';
    const r = await run(
      id,
      `import subprocess, sys\nsubprocess.run([sys.executable, "-c", ${JSON.stringify(probe)}])\nos.system("ls -l /proc/$$/fd")`.replace(
        'os.system',
        'import os\nos.system',
      ),
    );
    expect(r.body.error).toBeNull();
    expect(r.body.stdout).toMatch(/pipe:/);
    expect(r.body.stdout).not.toMatch(/socket:/);
  });
});
