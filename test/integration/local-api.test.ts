/**
 * The API on the real local backend: real bubblewrap sandboxes running the real agent, driven through
 * app.inject(). These are the acceptance checks and the sandbox boundary checks.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { connect } from 'node:net';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startServer } from '../helpers/http-server.js';
import { backendSandbox, localEnv } from '../helpers/local.js';

let t: TestApp;
const KEY = 'integration-secret-key-123';
const auth = { authorization: `Bearer ${KEY}` };
const post = (path: string, body: object) => t.post(path, body, auth);

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, MAX_OUTPUT_BYTES: '65536' }));
});
afterAll(async () => t.close());

async function sandbox(): Promise<string> {
  const r = await post('/create_sandbox', {});
  expect(r.status).toBe(200);
  return r.body.sandbox_id;
}

const sandboxOf = (id: string) => backendSandbox(t.service, id);

describe('stateful Python', () => {
  it('x = 41 then print(x + 1) prints 42; imports and functions persist', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, code: 'x = 41\nimport json\ndef double(v):\n    return v * 2' });
    const r = await post('/run_code', { sandbox_id: id, code: 'print(x + 1)' });
    expect(r.status).toBe(200);
    expect(r.body.output).toBe('42\n');
    const r2 = await post('/run_code', { sandbox_id: id, code: 'print(json.dumps({"d": double(x)}))' });
    expect(r2.body.stdout).toBe('{"d": 82}\n');
  });

  it('captures stdout and stderr separately, and output from child processes', async () => {
    const id = await sandbox();
    const r = await post('/run_code', {
      sandbox_id: id,
      code: 'import sys, os\nprint("out")\nprint("err", file=sys.stderr)\nos.system("echo from-child")',
    });
    expect(r.body.stdout).toBe('out\nfrom-child\n');
    expect(r.body.stderr).toBe('err\n');
    expect(r.body.output).toContain('err\n');
  });

  it("returns the last expression's value", async () => {
    const id = await sandbox();
    const r = await post('/run_code', { sandbox_id: id, code: 'a = [1, 2]\na + [3]' });
    expect(r.body.results).toEqual([{ type: 'execute_result', data: { 'text/plain': '[1, 2, 3]' } }]);
    expect(r.body.output).toBe('[1, 2, 3]\n');
    const none = await post('/run_code', { sandbox_id: id, code: 'None' });
    expect(none.body.results).toEqual([]);
  });

  it("reports exceptions with the user's own lines only", async () => {
    const id = await sandbox();
    const r = await post('/run_code', { sandbox_id: id, code: 'def f(d):\n    return d["missing"]\n\nf({})' });
    expect(r.status).toBe(200);
    expect(r.body.error.name).toBe('KeyError');
    expect(r.body.error.value).toBe("'missing'");
    expect(r.body.error.traceback).toMatch(/line 4, in <module>[\s\S]*line 2, in f\n\s+return d\["missing"\]/);
    expect(r.body.error.traceback).not.toMatch(/agent\.py|ast\.py/);
    const syntax = await post('/run_code', { sandbox_id: id, code: 'def broken(:\n    pass' });
    expect(syntax.body.error.name).toBe('SyntaxError');
    expect(syntax.body.error.traceback).not.toMatch(/agent\.py|ast\.py/);
    const exit = await post('/run_code', { sandbox_id: id, code: 'import sys; sys.exit(3)' });
    expect(exit.body.error.name).toBe('SystemExit');
    expect(exit.body.state_preserved).toBe(true);
  });

  it('truncates a flood of output and says so', async () => {
    const id = await sandbox();
    const r = await post('/run_code', { sandbox_id: id, code: 'for i in range(200000): print("x" * 50)' });
    expect(r.body.output_truncated).toBe(true);
    expect(r.body.stdout.length).toBeLessThanOrEqual(65536);
    expect((await post('/run_code', { sandbox_id: id, code: 'print("still here")' })).body.output).toBe('still here\n');
  });
});

describe('concurrency', () => {
  it('runs two calls into one sandbox one after the other, never interleaved', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, code: 'events = []' });
    const slow = post('/run_code', {
      sandbox_id: id,
      code: 'import time\nevents.append("slow-start")\ntime.sleep(0.5)\nevents.append("slow-end")',
    });
    await new Promise((r) => setTimeout(r, 50));
    const fast = post('/execute_command', { sandbox_id: id, command: 'echo fast' });
    const quick = post('/run_code', { sandbox_id: id, code: 'events.append("quick")' });
    await Promise.all([slow, fast, quick]);
    const r = await post('/run_code', { sandbox_id: id, code: 'events' });
    expect(r.body.results[0].data['text/plain']).toBe("['slow-start', 'slow-end', 'quick']");
  });

  it('runs calls into different sandboxes in parallel', async () => {
    const [a, b] = await Promise.all([sandbox(), sandbox()]);
    const code = 'import time\nstart = time.time()\ntime.sleep(1)\nprint(start, time.time())';
    const results = await Promise.all([a, b].map((id) => post('/run_code', { sandbox_id: id, code })));
    const [[startA, endA], [startB, endB]] = results.map((r) => r.body.stdout.split(' ').map(Number));
    // Run one after the other, the two intervals could not overlap.
    expect(startB < endA && startA < endB).toBe(true);
  });

  it('runs every process of a sandbox as batch work, which a wake-up never lets preempt the service', async () => {
    const id = await sandbox();
    const py = await post('/run_code', { sandbox_id: id, code: 'import os\nos.sched_getscheduler(0) == os.SCHED_BATCH' });
    expect(py.body.results[0].data['text/plain']).toBe('True');
    const sh = await post('/execute_command', { sandbox_id: id, command: 'chrt -p $$' });
    expect(sh.body.stdout).toMatch(/SCHED_BATCH/);
  });
});

describe('timeouts', () => {
  it('while True: pass with a 2 s timeout returns within 7 s, and the sandbox keeps its state', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, code: 'kept = "yes"' });
    const started = Date.now();
    const r = await post('/run_code', { sandbox_id: id, code: 'while True: pass', timeout: 2 });
    const elapsed = Date.now() - started;
    expect(r.status).toBe(200);
    expect(elapsed).toBeLessThan(7000);
    expect(r.body.timed_out).toBe(true);
    expect(r.body.error.name).toBe('ExecutionTimeout');
    expect(r.body.state_preserved).toBe(true);
    const next = await post('/run_code', { sandbox_id: id, code: 'print(kept)' });
    expect(next.body.output).toBe('yes\n');
  });

  it('restarts Python that ignores the interrupt and says the state is lost', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, code: 'lost = 1' });
    const code = 'import time\nwhile True:\n    try:\n        time.sleep(0.05)\n    except KeyboardInterrupt:\n        pass';
    const r = await post('/run_code', { sandbox_id: id, code, timeout: 1 });
    expect(r.body.timed_out).toBe(true);
    expect(r.body.state_preserved).toBe(false);
    expect(r.body.error.value).toMatch(/restarted/);
    const next = await post('/run_code', { sandbox_id: id, code: 'print("ok")\nlost' });
    expect(next.body.stdout).toBe('ok\n');
    expect(next.body.error.name).toBe('NameError');
  });

  it("kills a timed-out command's whole process tree", async () => {
    const id = await sandbox();
    const r = await post('/execute_command', { sandbox_id: id, command: '(sleep 300; echo never) & sleep 300 | cat', timeout: 1 });
    expect(r.body).toMatchObject({ timed_out: true, exit_code: 124 });
    const ps = await post('/execute_command', { sandbox_id: id, command: 'ps -eo comm= | sort | uniq -c' });
    expect(ps.body.stdout).not.toMatch(/sleep/);
  });

  it('restarts Python when user code kills it', async () => {
    const id = await sandbox();
    const r = await post('/run_code', { sandbox_id: id, code: 'import os; os._exit(9)' });
    expect(r.status).toBe(200);
    expect(r.body.error.name).toBe('KernelDied');
    expect(r.body.state_preserved).toBe(false);
    expect((await post('/run_code', { sandbox_id: id, code: 'print(2)' })).body.output).toBe('2\n');
  });
});

describe('shell', () => {
  it('supports pipes, &&, redirects, exit codes, and shares files with Python', async () => {
    const id = await sandbox();
    const r = await post('/execute_command', {
      sandbox_id: id,
      command: 'pwd && printf "b\\na\\nc\\n" | sort > sorted.txt && wc -l < sorted.txt',
    });
    expect(r.body).toMatchObject({ stdout: '/workspace\n3\n', exit_code: 0, timed_out: false });
    const py = await post('/run_code', { sandbox_id: id, code: 'print(open("sorted.txt").read().split())' });
    expect(py.body.stdout).toBe("['a', 'b', 'c']\n");
    await post('/run_code', { sandbox_id: id, code: 'open("from_py.txt", "w").write("hi")' });
    expect((await post('/execute_command', { sandbox_id: id, command: 'cat from_py.txt' })).body.stdout).toBe('hi');
    const fail = await post('/execute_command', { sandbox_id: id, command: 'echo oops >&2; false' });
    expect(fail.status).toBe(200);
    expect(fail.body).toMatchObject({ stderr: 'oops\n', exit_code: 1 });
    expect((await post('/execute_command', { sandbox_id: id, command: 'no-such-tool' })).body.exit_code).toBe(127);
    expect((await post('/execute_command', { sandbox_id: id, command: 'kill -9 $$' })).body.exit_code).toBe(137);
  });

  it('honours cwd and env, and refuses a missing cwd', async () => {
    const id = await sandbox();
    await post('/execute_command', { sandbox_id: id, command: 'mkdir -p sub' });
    const r = await post('/execute_command', { sandbox_id: id, command: 'pwd; echo $GREETING', cwd: 'sub', env: { GREETING: 'hello' } });
    expect(r.body.stdout).toBe('/workspace/sub\nhello\n');
    const bad = await post('/execute_command', { sandbox_id: id, command: 'pwd', cwd: 'nope' });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('BAD_CWD');
  });

  it('returns promptly when a command leaves a background process', async () => {
    const id = await sandbox();
    const started = Date.now();
    const r = await post('/execute_command', { sandbox_id: id, command: 'sleep 60 > /dev/null 2>&1 & echo started', timeout: 30 });
    expect(r.body.stdout).toBe('started\n');
    expect(Date.now() - started).toBeLessThan(10_000);
  });
});

describe('files', () => {
  it('a 1 MiB random binary written as base64 comes back byte-identical from GET /files', async () => {
    const id = await sandbox();
    const data = randomBytes(1024 * 1024);
    const w = await post('/write_file', {
      sandbox_id: id,
      remote_path: 'bin/data.bin',
      content: data.toString('base64'),
      encoding: 'base64',
    });
    expect(w.body).toMatchObject({ status: 'success', remote_path: '/workspace/bin/data.bin', size: data.length });
    const d = await post('/download_file', { sandbox_id: id, remote_path: '/workspace/bin/data.bin' });
    expect(d.body.size).toBe(data.length);
    const res = await t.app.inject({ method: 'GET', url: new URL(d.body.download_url).pathname, headers: auth });
    expect(res.statusCode).toBe(200);
    expect(Buffer.compare(res.rawPayload, data)).toBe(0);
    const sha = await post('/run_code', {
      sandbox_id: id,
      code: 'import hashlib\nhashlib.sha256(open("bin/data.bin","rb").read()).hexdigest()',
    });
    const { createHash } = await import('node:crypto');
    expect(sha.body.results[0].data['text/plain']).toBe(`'${createHash('sha256').update(data).digest('hex')}'`);
  });

  it('streams a download as it leaves the sandbox; a client that goes away half-way harms nothing', async () => {
    const id = await sandbox();
    await post('/execute_command', { sandbox_id: id, command: 'head -c 20000000 /dev/urandom > big.bin; : > empty.txt' });
    const empty = await t.app.inject({ method: 'GET', url: `/files/${id}/empty.txt`, headers: auth });
    expect(empty.statusCode).toBe(200);
    expect(empty.headers['content-length']).toBe('0');
    expect(empty.rawPayload.length).toBe(0);
    const address = await t.app.listen({ port: 0, host: '127.0.0.1' });
    try {
      const { port } = new URL(address);
      // Ask for 20 MB, read the headers, hang up.
      await new Promise<void>((resolve, reject) => {
        const socket = connect(Number(port), '127.0.0.1', () =>
          socket.write(`GET /files/${id}/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${KEY}\r\n\r\n`),
        );
        socket.once('data', (head) => {
          expect(head.toString('latin1')).toMatch(/^HTTP\/1\.1 200[\s\S]*content-length: 20000000/i);
          socket.destroy();
          resolve();
        });
        socket.once('error', reject);
      });
      // The sandbox finished sending it all anyway: it answers, and a full download is whole.
      expect((await post('/execute_command', { sandbox_id: id, command: 'echo still here' })).body.stdout).toBe('still here\n');
      const whole = await fetch(`${address}/files/${id}/big.bin`, { headers: auth });
      const bytes = Buffer.from(await whole.arrayBuffer());
      const sha = (await post('/execute_command', { sandbox_id: id, command: 'sha256sum big.bin' })).body.stdout.split(' ')[0];
      const { createHash } = await import('node:crypto');
      expect(bytes.length).toBe(20_000_000);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(sha);
    } finally {
      // Stop listening without closing the app, which the other tests go on using through inject().
      t.app.server.closeAllConnections();
      await new Promise((resolve) => t.app.server.close(resolve));
    }
  });

  it('never follows a symlink planted by user code out of the workspace', async () => {
    const id = await sandbox();
    await post('/execute_command', { sandbox_id: id, command: 'ln -s /etc/passwd pw && ln -s / rootlink && ln -s /tmp tmplink' });
    for (const path of ['pw', 'rootlink/etc/passwd', '/workspace/rootlink/etc/hostname']) {
      const g = await t.app.inject({ method: 'GET', url: `/files/${id}/${path}`, headers: auth });
      expect(g.statusCode, path).toBe(400);
      expect(JSON.parse(g.body).error.code).toBe('PATH_OUTSIDE_WORKSPACE');
    }
    const w = await post('/write_file', { sandbox_id: id, remote_path: 'tmplink/evil.sh', content: 'x' });
    expect(w.body.error.code).toBe('PATH_OUTSIDE_WORKSPACE');
    const w2 = await post('/write_file', { sandbox_id: id, remote_path: 'pw', content: 'x' });
    expect(w2.body.error.code).toBe('PATH_OUTSIDE_WORKSPACE');
    const l = await post('/list_files', { sandbox_id: id, path: 'rootlink' });
    expect(l.body.error.code).toBe('PATH_OUTSIDE_WORKSPACE');
    const listing = await post('/list_files', { sandbox_id: id });
    expect(listing.body.entries.find((e: { name: string }) => e.name === 'pw').type).toBe('symlink');
  });

  it('refuses a FIFO planted in the workspace at once, for reading and for writing', async () => {
    const id = await sandbox();
    await post('/execute_command', { sandbox_id: id, command: 'mkfifo trap' });
    const g = await t.app.inject({ method: 'GET', url: `/files/${id}/trap`, headers: auth });
    expect(g.statusCode).toBe(400);
    expect(JSON.parse(g.body).error.code).toBe('NOT_A_REGULAR_FILE');
    const w = await post('/write_file', { sandbox_id: id, remote_path: 'trap', content: 'x' });
    expect(w.status).toBe(400);
    expect(w.body.error.code).toBe('NOT_A_REGULAR_FILE');
    expect((await post('/execute_command', { sandbox_id: id, command: 'echo fine' })).body.stdout).toBe('fine\n');
  });

  it('uploads from a URL into the sandbox', async () => {
    const origin = await startServer({ '/report.csv': (_q, s) => s.writeHead(200, { 'content-type': 'text/csv' }).end('a,b\n1,2\n') });
    const u = await startTestApp(localEnv({ OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32' }));
    try {
      const id = (await u.post('/create_sandbox', {})).body.sandbox_id;
      const r = await u.post('/upload_file', { sandbox_id: id, file_url: `${origin.url}/report.csv`, remote_filename: 'data/report.csv' });
      expect(r.body).toMatchObject({ status: 'success', remote_path: '/workspace/data/report.csv', size: 8 });
      const py = await u.post('/run_code', { sandbox_id: id, code: 'import csv\nlist(csv.reader(open("data/report.csv")))' });
      expect(py.body.results[0].data['text/plain']).toBe("[['a', 'b'], ['1', '2']]");
    } finally {
      await u.close();
      await origin.close();
    }
  });

  it('enforces the workspace quota with a clear error', async () => {
    const q = await startTestApp(localEnv({ SANDBOX_DISK_BYTES: String(4 * 1024 * 1024) }));
    try {
      const id = (await q.post('/create_sandbox', {})).body.sandbox_id;
      const r = await q.post('/execute_command', { sandbox_id: id, command: 'head -c 5000000 /dev/zero > big' });
      expect(r.body.exit_code).not.toBe(0);
      expect(r.body.stderr).toMatch(/No space left/);
      await q.post('/execute_command', { sandbox_id: id, command: 'rm big' });
      const w = await q.post('/write_file', {
        sandbox_id: id,
        remote_path: 'big2',
        content: Buffer.alloc(5_000_000).toString('base64'),
        encoding: 'base64',
      });
      expect(w.status).toBe(413);
      expect(w.body.error.code).toBe('DISK_QUOTA_EXCEEDED');
      expect((await q.post('/run_code', { sandbox_id: id, code: 'print("usable")' })).body.output).toBe('usable\n');
      // The agent read the rest of the failed file's bytes: its next requests are understood.
      await q.post('/execute_command', { sandbox_id: id, command: 'rm big2' });
      expect((await q.post('/write_file', { sandbox_id: id, remote_path: 'ok.txt', content: 'fine' })).status).toBe(200);
      expect((await q.post('/execute_command', { sandbox_id: id, command: 'cat ok.txt' })).body.stdout).toBe('fine');
    } finally {
      await q.close();
    }
  });
});

describe('boundary', () => {
  it("runs as a non-root host uid and hides host files, processes and the service's environment", async () => {
    const id = await sandbox();
    for (const pid of sandboxOf(id).pids()) {
      const uid = Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
      expect(uid).not.toBe(0);
    }
    const code = [
      'import os, glob',
      'def readable(p):',
      '    try:',
      '        return open(p, "rb").read()',
      '    except OSError:',
      '        return b""  # the agent is not dumpable: its environ is closed to user code',
      'env_blobs = [readable(p) for p in glob.glob("/proc/[0-9]*/environ")]',
      `print(any(b"${KEY}" in b for b in env_blobs), "${KEY}" in str(dict(os.environ)))`,
      // /home holds only E2B's name for the workspace (/home/user → /workspace), nothing of the host's /home.
      'print(os.path.exists("/root"), os.listdir("/home") != ["user"] or os.path.realpath("/home/user") != "/workspace", os.path.exists("/etc/shadow"))',
      'print(len([p for p in os.listdir("/proc") if p.isdigit()]) < 10)',
    ].join('\n');
    const r = await post('/run_code', { sandbox_id: id, code });
    expect(r.body.error).toBeNull();
    expect(r.body.stdout).toBe('False False\nFalse False False\nTrue\n');
  });

  it("has no network: not the service's own port on 127.0.0.1, not the metadata address", async () => {
    const server = await startServer({ '/': (_q, s) => s.end('host service') });
    try {
      const id = await sandbox();
      const port = new URL(server.url).port;
      const code = [
        'import socket',
        'def attempt(host, port):',
        '    try:',
        '        socket.create_connection((host, port), timeout=2).close()',
        '        return "connected"',
        '    except OSError as e:',
        '        return type(e).__name__',
        `print(attempt("127.0.0.1", ${port}))`,
        'print(attempt("169.254.169.254", 80))',
        'print(sorted(n for _, n in socket.if_nameindex()))',
      ].join('\n');
      const r = await post('/run_code', { sandbox_id: id, code });
      expect(r.body.error).toBeNull();
      const [local, metadata, ifaces] = r.body.stdout.trim().split('\n');
      expect(local).toBe('ConnectionRefusedError');
      expect(metadata).not.toBe('connected');
      expect(ifaces).toBe("['lo']");
    } finally {
      await server.close();
    }
  });

  it('stopping a sandbox leaves no process behind, background ones included', async () => {
    const id = await sandbox();
    await post('/execute_command', { sandbox_id: id, command: 'nohup sleep 600 > /dev/null 2>&1 & setsid sleep 600 > /dev/null 2>&1 &' });
    const handle = sandboxOf(id);
    const before = handle.pids();
    // As root every sandbox has its own host uid, so all of its processes are visible by uid.
    expect(before.length).toBeGreaterThanOrEqual(process.getuid?.() === 0 ? 4 : 1);
    expect((await post('/stop_sandbox', { sandbox_id: id })).body.status).toBe('stopped');
    expect(handle.pids()).toEqual([]);
    for (const pid of before) expect(() => process.kill(pid, 0)).toThrow();
  });

  it('a sandbox past its lifetime is reaped with all its processes, and later calls say it expired', async () => {
    let now = Date.now();
    const e = await startTestApp(localEnv(), () => now);
    try {
      const id = (await e.post('/create_sandbox', { max_lifetime_seconds: 60 })).body.sandbox_id;
      await e.post('/execute_command', { sandbox_id: id, command: 'nohup sleep 600 >/dev/null 2>&1 &' });
      const handle = backendSandbox(e.service, id);
      expect(handle.pids().length).toBeGreaterThan(0);
      now += 61_000;
      await e.service.reap();
      expect(handle.pids()).toEqual([]);
      const r = await e.post('/run_code', { sandbox_id: id, code: 'print(1)' });
      expect(r.status).toBe(404);
      expect(r.body.error.message).toMatch(/expired at .*maximum lifetime of 60 s/);
    } finally {
      await e.close();
    }
  });

  it('kill -9 -1 inside hurts nobody outside; the sandbox outlives it (its supervisor is pid 1) and says Python was lost', async () => {
    const a = await sandbox();
    const b = await sandbox();
    await post('/run_code', { sandbox_id: a, code: 'x = 1' });
    await post('/run_code', { sandbox_id: b, code: 'survivor = True' });
    const r = await post('/execute_command', { sandbox_id: a, command: 'kill -9 -1' });
    expect(r.status).toBe(200);
    // Python was killed too: the next call says so (KernelDied, if the kill was still landing when it was
    // sent), and a new Python answers.
    let after = await post('/run_code', { sandbox_id: a, code: 'print("alive")' });
    expect(after.body.state_preserved).toBe(false);
    if (after.body.error?.name === 'KernelDied') after = await post('/run_code', { sandbox_id: a, code: 'print("alive")' });
    expect(after.body.output).toBe('alive\n');
    expect((await post('/run_code', { sandbox_id: a, code: 'x' })).body.error.name).toBe('NameError');
    expect((await post('/run_code', { sandbox_id: b, code: 'print(survivor)' })).body.output).toBe('True\n');
    expect(process.kill(process.pid, 0)).toBe(true);
  });
});
