/**
 * Resource limits, enforced by the kernel, each named in the response. The headline case runs a fork bomb,
 * a 10 GiB allocation, a disk fill and an endless print loop in four sandboxes at once, and checks that
 * /health and a fifth sandbox answer normally meanwhile.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

let t: TestApp;
beforeAll(async () => {
  t = await startTestApp(
    localEnv({
      SANDBOX_MEMORY_BYTES: String(256 * 1024 * 1024),
      SANDBOX_MAX_PROCESSES: '64',
      SANDBOX_DISK_BYTES: String(32 * 1024 * 1024),
      MAX_OUTPUT_BYTES: String(256 * 1024),
      EXEC_CPU_LIMIT_S: '2',
    }),
  );
});
afterAll(async () => t.close());

const create = async () => (await t.post('/create_sandbox', {})).body.sandbox_id as string;

describe('limits', () => {
  it('reports what is enforced', async () => {
    const h = await t.app.inject({ method: 'GET', url: '/health' });
    expect(JSON.parse(h.body).isolation).toMatch(/limits: (cgroup v[12]|no cgroups)/);
  });

  it('contains a fork bomb, a 10 GiB allocation, a disk fill and a print flood at once, naming each limit', async () => {
    const [bomb, mem, disk, flood, bystander] = await Promise.all([create(), create(), create(), create(), create()]);
    await t.post('/run_code', { sandbox_id: bystander, code: 'ready = True' });
    const attacks = Promise.all([
      // Timed out, so its whole session is killed; a bomb left running in the background would keep the
      // sandbox at its process limit until stopped (and every call would say ProcessLimitExceeded).
      t.post('/execute_command', { sandbox_id: bomb, command: 'bomb() { bomb | bomb & }; bomb; sleep 10', timeout: 4 }),
      t.post('/run_code', { sandbox_id: mem, code: 'hog = b"x" * (10 * 1024 ** 3)' }),
      t.post('/run_code', {
        sandbox_id: disk,
        code: 'with open("fill.bin", "wb") as f:\n    while True:\n        f.write(b"\\0" * 1048576)',
      }),
      t.post('/run_code', { sandbox_id: flood, code: 'while True:\n    print("flood " * 20)', timeout: 20 }),
    ]);
    // While the attacks run, the service and another sandbox answer.
    const health = await t.app.inject({ method: 'GET', url: '/health' });
    expect(health.statusCode).toBe(200);
    const side = await t.post('/run_code', { sandbox_id: bystander, code: 'print(1)' });
    expect(side.body.output).toBe('1\n');
    const [b, m, d, f] = await attacks;
    for (const r of [b, m, d, f]) expect(r.status).toBe(200);
    expect(b.body.error.name).toBe('ProcessLimitExceeded');
    expect(m.body.error.name).toBe('MemoryLimitExceeded');
    expect(d.body.error.name).toBe('DiskQuotaExceeded');
    expect(f.body.error.name).toBe('OutputLimitExceeded');
    expect(f.body.output_truncated).toBe(true);
    expect(f.body.timed_out).toBe(false);
    // Every sandbox is still usable afterwards (or was restarted and says so).
    for (const id of [bomb, mem, disk, flood, bystander]) {
      const after = await t.post('/run_code', { sandbox_id: id, code: 'print("alive")' });
      expect(after.body.output, id).toBe('alive\n');
    }
    expect((await t.post('/run_code', { sandbox_id: bystander, code: 'print(ready)' })).body.output).toBe('True\n');
  });

  it('gives a clean MemoryLimitExceeded for one huge allocation and keeps the state', async () => {
    const id = await create();
    await t.post('/run_code', { sandbox_id: id, code: 'kept = 7' });
    const r = await t.post('/run_code', { sandbox_id: id, code: 'big = bytearray(10 * 1024 ** 3)' });
    expect(r.body.error.name).toBe('MemoryLimitExceeded');
    expect((await t.post('/run_code', { sandbox_id: id, code: 'print(kept)' })).body.output).toBe('7\n');
  });

  it('names the memory limit when the kernel OOM-kills processes that together pass it', async () => {
    const id = await create();
    // Each process stays under the per-process RLIMIT_DATA; together they pass the sandbox's memory.
    const hold = 'python3 -c "import time; x = b\\"y\\" * (150 * 1024 * 1024); time.sleep(5)"';
    const r = await t.post('/execute_command', { sandbox_id: id, command: `${hold} & ${hold} & ${hold} & wait`, timeout: 20 });
    expect(r.body.error.name).toBe('MemoryLimitExceeded');
    expect((await t.post('/run_code', { sandbox_id: id, code: 'print("alive")' })).body.output).toBe('alive\n');
  });

  it('stops Python and shell commands at the CPU-time limit per call', async () => {
    const id = await create();
    const py = await t.post('/run_code', { sandbox_id: id, code: 'n = 0\nwhile True:\n    n += 1', timeout: 30 });
    expect(py.body.error.name).toBe('CpuTimeLimitExceeded');
    expect(py.body.timed_out).toBe(false);
    expect(py.body.state_preserved).toBe(true);
    const sh = await t.post('/execute_command', { sandbox_id: id, command: 'while :; do :; done', timeout: 30 });
    expect(sh.body.error.name).toBe('CpuTimeLimitExceeded');
    expect(sh.body.exit_code).toBe(152);
  });

  it('bounds /tmp like the workspace', async () => {
    const id = await create();
    const r = await t.post('/execute_command', { sandbox_id: id, command: 'head -c 40000000 /dev/zero > /tmp/fill' });
    expect(r.body.stderr).toMatch(/No space left/);
  });

  it('names a full disk for a failing shell command', async () => {
    const id = await create();
    const r = await t.post('/execute_command', { sandbox_id: id, command: 'head -c 40000000 /dev/zero > fill' });
    expect(r.body.error.name).toBe('DiskQuotaExceeded');
  });
});

describe('limits without cgroups (rlimits only)', () => {
  let r: TestApp;
  beforeAll(async () => {
    r = await startTestApp(localEnv({ SANDBOX_CGROUPS: 'false', SANDBOX_MAX_PROCESSES: '16' }));
  });
  afterAll(async () => r.close());

  it('names the process limit when it leaves no room to start Python, and starts it once there is', async () => {
    const id = (await r.post('/create_sandbox', {})).body.sandbox_id as string;
    // Children take every process slot before the first Python call starts its kernel; they leave once
    // /workspace/go exists (written by write_file, which needs no new process).
    const fill =
      'import os, time\nwhile True:\n    try:\n        pid = os.fork()\n    except OSError:\n        break\n    if pid == 0:\n        while not os.path.exists("/workspace/go"):\n            time.sleep(0.05)\n        os._exit(0)';
    await r.post('/execute_command', { sandbox_id: id, command: `python3 -c '${fill}'` });
    const first = await r.post('/run_code', { sandbox_id: id, code: 'print(1)' });
    expect(first.status).toBe(200);
    expect(first.body.error, JSON.stringify(first.body.error)).toMatchObject({ name: 'ProcessLimitExceeded' });
    expect(first.body.error.value).toMatch(/could not start the Python process: the sandbox's process limit is reached/);
    await r.post('/write_file', { sandbox_id: id, path: 'go', content: '' });
    let next = first;
    for (let i = 0; i < 50 && next.body.output !== '2\n'; i++) {
      await new Promise((resume) => setTimeout(resume, 100));
      next = await r.post('/run_code', { sandbox_id: id, code: 'print(2)' });
    }
    expect(next.body.output).toBe('2\n');
  });
});
