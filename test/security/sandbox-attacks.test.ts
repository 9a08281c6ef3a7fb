/**
 * Attacks that need real sandboxes: code that tries to take over its own supervisor, inputs the OS refuses,
 * a lifetime kept alive by busy calls, output through display(), CPU limits raised or dodged in the
 * background, symlinks swapped under the file endpoints, the system calls the seccomp filter refuses, the
 * call queues, and sandbox starts that fail half-way. Each must be contained, with a 4xx or a 200 that names it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv, localOptions } from '../helpers/local.js';
import { createLocalBackend } from '../../src/backends/local/local-backend.js';
import { watchStalls, type StallWatch } from '../helpers/stalls.js';

const KEY_A = 'sandbox-attack-key-a';
const KEY_B = 'sandbox-attack-key-b';
const as = (key: string) => ({ authorization: `Bearer ${key}` });

let t: TestApp;
let stalls: StallWatch;
const post = (path: string, body: unknown, key = KEY_A) => t.post(path, body, as(key));
const create = async (body: object = {}, key = KEY_A) => {
  const r = await post('/create_sandbox', body, key);
  expect(r.status).toBe(200);
  return r.body.sandbox_id as string;
};
const sh = async (id: string, command: string) => {
  const r = await post('/execute_command', { sandbox_id: id, command });
  expect(r.status).toBe(200);
  return r.body;
};
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

beforeAll(async () => {
  t = await startTestApp(
    localEnv({
      API_KEYS: `${KEY_A},${KEY_B}`,
      SUPERVISOR_IDLE_MS: '300',
      MAX_QUEUED_CALLS_PER_SANDBOX: '2',
      MAX_CALLS_PER_KEY: '5',
    }),
  );
  await t.service.start();
  stalls = watchStalls('sandbox attacks (local backend)');
});
afterAll(async () => {
  stalls.report();
  await t.close();
});

/** No answer may carry our internals: agent exceptions, paths of the agent, Python's start-up text. */
const INTERNALS = /Traceback|\/opt\/ciw|ciw_[a-z]+\.py|sys\.path|Python path configuration|AGENT_FAILURE/;

describe('a sandbox cannot take over its own supervisor', () => {
  it('a planted ctypes module, LD_PRELOAD library and user-site .pth never run in the supervisor, even after it hibernated', async () => {
    const id = await create({ env: { PYTHONPATH: '/workspace/.evil', LD_PRELOAD: '/workspace/evil.so' } });
    // Each plant leaves a marker when it runs in the supervisor: the sandbox's pid 1 (the kernel, forked from
    // it, is the user's own process, where PYTHONPATH and the user's site-packages apply as they should).
    const inAgent = `__import__('os').getpid() == 1`;
    await sh(
      id,
      [
        'SITE=$(python3 -c "import site; print(site.getusersitepackages())") && mkdir -p .evil "$SITE"',
        `printf '%s\\n' "if ${inAgent}: open('/workspace/marker-ctypes', 'w')" 'from ctypes_real import *' > .evil/ctypes.py`,
        `echo "import os; ${inAgent} and open('/workspace/marker-pth', 'w')" > "$SITE/evil.pth"`,
        `printf '%s\\n' '#include <stdio.h>' '#include <unistd.h>' '__attribute__((constructor)) static void f(void) {'` +
          ` '  if (getpid() == 1) fclose(fopen("/workspace/marker-preload", "w")); }' > evil.c`,
        'LD_PRELOAD= gcc -shared -fPIC -o evil.so evil.c',
        'echo "import sys; VALUE = 42" > .evil/usermod.py',
      ].join(' && '),
    ).then((r) => expect(r.exit_code).toBe(0));
    // Python starts (the kernel is forked from the supervisor), then the supervisor hibernates and comes back.
    expect((await post('/run_code', { sandbox_id: id, code: 'import usermod; usermod.VALUE' })).body.output).toBe('42\n');
    await sleep(1000);
    const listing = await sh(id, 'ls -a /workspace');
    expect(listing.stdout).toContain('evil.so');
    const files = await post('/list_files', { sandbox_id: id, path: '.' });
    expect(files.body.entries.map((e: { name: string }) => e.name)).toContain('evil.c');
    await sleep(1000);
    await post('/write_file', { sandbox_id: id, remote_path: 'after.txt', content: 'x' });
    const markers = await sh(id, 'ls /workspace | grep marker || true');
    expect(markers.stdout).toBe('');
    // The user's own processes still get the user's environment.
    expect((await sh(id, 'echo $PYTHONPATH $LD_PRELOAD')).stdout).toBe('/workspace/.evil /workspace/evil.so\n');
  }, 60_000);

  it("PYTHONHOME, PYTHONSTARTUP and PYTHONINSPECT in env do not break the sandbox or show Python's internals", async () => {
    const r = await post('/create_sandbox', {
      env: { PYTHONHOME: '/x', PYTHONSTARTUP: '/workspace/s.py', PYTHONINSPECT: '1', PYTHONWARNINGS: 'error' },
    });
    expect(r.status).toBe(200);
    const run = await post('/run_code', { sandbox_id: r.body.sandbox_id, code: 'print(6 * 7)' });
    expect(run.body.stdout).toBe('42\n');
    expect(JSON.stringify(r.body) + JSON.stringify(run.body)).not.toMatch(INTERNALS);
  });
});

describe('inputs the OS cannot take are 4xx, never 5xx, and answers carry no internals', () => {
  let id: string;
  beforeAll(async () => {
    id = await create();
    await sh(id, 'mkdir -p locked && touch locked/x && chmod 000 locked');
  });
  const NUL = 'a\u0000b';
  const SURROGATE = 'a\ud800b';

  it.each([
    ['NUL in cwd', '/execute_command', { command: 'pwd', cwd: NUL }],
    ['NUL in an env value', '/execute_command', { command: 'pwd', env: { X: NUL } }],
    ['NUL in a command', '/execute_command', { command: `echo ${NUL}` }],
    ['NUL in shell code', '/run_code', { code: `echo ${NUL}`, language: 'bash' }],
    ['a lone surrogate in cwd', '/execute_command', { command: 'pwd', cwd: SURROGATE }],
    ['a lone surrogate in an env value', '/execute_command', { command: 'pwd', env: { X: SURROGATE } }],
    ['a lone surrogate in remote_path (write)', '/write_file', { remote_path: SURROGATE, content: 'x' }],
    ['a lone surrogate in remote_path (download)', '/download_file', { remote_path: SURROGATE }],
    ['a lone surrogate in a listed path', '/list_files', { path: SURROGATE }],
    ['NUL in remote_path', '/write_file', { remote_path: NUL, content: 'x' }],
  ])('%s', async (_name, path, body) => {
    const r = await stalls.refusing(() => post(path, { sandbox_id: id, ...body }));
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
    expect(JSON.stringify(r.body)).not.toMatch(INTERNALS);
  });

  it.each([
    ['NUL', 'a\u0000b'],
    ['a lone surrogate', '\udfff'],
  ])('%s in create_sandbox env', async (_name, value) => {
    const r = await post('/create_sandbox', { env: { X: value } });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/env\.X/);
  });

  it('list_files of a directory the sandbox made unreadable', async () => {
    const r = await post('/list_files', { sandbox_id: id, path: 'locked' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('FILE_IO_FAILED');
    expect(JSON.stringify(r.body)).not.toMatch(INTERNALS);
    // Listing its parent still works, the unreadable directory listed as an entry.
    const parent = await post('/list_files', { sandbox_id: id, path: '.', recursive: true });
    expect(parent.status).toBe(200);
  });

  it('a symlink swapped with a file while download_file resolves it is a 4xx, every time', async () => {
    await sh(id, 'echo data > plain && ln -sf plain link');
    const swapper =
      'import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\nwhile True:\n    libc.renameat2(-100, b"link", -100, b"plain", 2)\n';
    await post('/write_file', { sandbox_id: id, remote_path: 'swap.py', content: swapper });
    await sh(id, 'nohup python3 swap.py > /dev/null 2>&1 &');
    const statuses: number[] = [];
    for (let i = 0; i < 300; i++) {
      const path = i % 2 === 0 ? 'link' : 'plain';
      const r = await stalls.refusing(() =>
        post(
          i % 3 === 0 ? '/list_files' : '/download_file',
          i % 3 === 0 ? { sandbox_id: id, path } : { sandbox_id: id, remote_path: path },
        ),
      );
      statuses.push(r.status);
      if (r.status >= 500) expect(r.body).toBe('a 4xx or 200');
    }
    await sh(id, 'pkill -f swap.py; true');
    expect(statuses.every((s) => s < 500)).toBe(true);
  }, 60_000);
});

describe('a lifetime is a lifetime', () => {
  it('ends a call still running at max_lifetime_seconds, and the calls queued behind it, saying why', async () => {
    const id = await create({ max_lifetime_seconds: 2 });
    const started = Date.now();
    const running = post('/run_code', { sandbox_id: id, code: 'import time\ntime.sleep(30)', timeout: 60 });
    await sleep(100);
    const queued = post('/execute_command', { sandbox_id: id, command: 'sleep 30', timeout: 60 });
    const [r, q] = await Promise.all([running, queued]);
    expect(Date.now() - started).toBeLessThan(15_000);
    expect(r.status).toBe(410);
    expect(r.body.error.message).toMatch(/maximum lifetime of 2 s/);
    expect([404, 410]).toContain(q.status);
    expect((await post('/get_sandbox_info', { sandbox_id: id })).status).toBe(404);
  }, 30_000);
});

describe('every byte that leaves a sandbox counts against MAX_OUTPUT_BYTES', () => {
  it('5,000 display() calls stop at the cap, named OutputLimitExceeded', async () => {
    const id = await create();
    const r = await t.app.inject({
      method: 'POST',
      url: '/run_code',
      headers: as(KEY_A),
      payload: {
        sandbox_id: id,
        code: 'for i in range(5000):\n    display("x" * 10000)\nprint("not reached")',
      },
    });
    expect(r.statusCode).toBe(200);
    expect(r.body.length).toBeLessThan(4 * 1024 * 1024);
    const body = JSON.parse(r.body);
    expect(body.error.name).toBe('OutputLimitExceeded');
    expect(body.output_truncated).toBe(true);
    expect(body.stdout).not.toContain('not reached');
    // The sandbox goes on, its state kept.
    expect((await post('/run_code', { sandbox_id: id, code: 'print(i < 5000)' })).body.stdout).toBe('True\n');
  });

  it('a huge last value is cut too', async () => {
    const id = await create();
    const r = await t.app.inject({
      method: 'POST',
      url: '/run_code',
      headers: as(KEY_A),
      payload: { sandbox_id: id, code: '"y" * 5_000_000' },
    });
    expect(r.body.length).toBeLessThan(4 * 1024 * 1024);
    expect(JSON.parse(r.body).error.name).toBe('OutputLimitExceeded');
  });
});

describe('CPU time', () => {
  it("code cannot raise its CPU limit: the hard limit is the sandbox's budget", async () => {
    const id = await create();
    const r = await post('/run_code', {
      sandbox_id: id,
      code: [
        'import resource',
        'soft, hard = resource.getrlimit(resource.RLIMIT_CPU)',
        'print(hard)',
        'try:',
        '    resource.setrlimit(resource.RLIMIT_CPU, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))',
        '    print("raised")',
        'except ValueError:',
        '    print("refused")',
      ].join('\n'),
    });
    expect(r.body.stdout).toBe(`${t.config.SANDBOX_CPU_LIMIT_S}\nrefused\n`);
  });

  it('background work after a call returned is accounted to the sandbox, which is stopped at SANDBOX_CPU_LIMIT_S', async () => {
    const c = await startTestApp(localEnv({ SANDBOX_CPU_LIMIT_S: '3' }));
    await c.service.start();
    try {
      if (!/cgroup v[12]/.test(c.backend.status().isolation)) return; // no per-sandbox accounting without cgroups
      const id = (await c.post('/create_sandbox', {})).body.sandbox_id;
      // Many short burners: none reaches the per-process limit, together they pass the sandbox's budget.
      const r = await c.post('/execute_command', {
        sandbox_id: id,
        command: 'nohup bash -c \'while true; do timeout 0.5 sh -c "while :; do :; done"; done\' >/dev/null 2>&1 &',
      });
      expect(r.body.exit_code).toBe(0);
      let info = await c.post('/get_sandbox_info', { sandbox_id: id });
      for (let i = 0; i < 400 && info.status === 200; i++) {
        // 40 s at most: a busy host gives the burners less CPU
        await sleep(100);
        info = await c.post('/get_sandbox_info', { sandbox_id: id });
      }
      expect(info.status).toBe(404);
      expect(info.body.error.message).toMatch(/SANDBOX_CPU_LIMIT_S=3/);
    } finally {
      await c.close();
    }
  }, 60_000);
});

describe('seccomp', () => {
  it('refuses io_uring, userfaultfd, bpf, perf_event_open and the key ring with EPERM; other calls work', async () => {
    const id = await create();
    const r = await post('/run_code', {
      sandbox_id: id,
      code: [
        'import ctypes, os, platform',
        'libc = ctypes.CDLL(None, use_errno=True)',
        'arm = platform.machine() == "aarch64"',
        'calls = {"io_uring_setup": 425, "userfaultfd": 282 if arm else 323, "bpf": 280 if arm else 321,',
        '         "perf_event_open": 241 if arm else 298, "keyctl": 219 if arm else 250}',
        'for name, nr in calls.items():',
        '    ctypes.set_errno(0)',
        '    ret = libc.syscall(nr, 8, None, 0, 0, 0)',
        '    print(name, ret, os.strerror(ctypes.get_errno()))',
        'print("getpid", libc.syscall(172 if arm else 39) == os.getpid())',
      ].join('\n'),
    });
    expect(r.body.stdout).toBe(
      [
        'io_uring_setup -1 Operation not permitted',
        'userfaultfd -1 Operation not permitted',
        'bpf -1 Operation not permitted',
        'perf_event_open -1 Operation not permitted',
        'keyctl -1 Operation not permitted',
        'getpid True',
        '',
      ].join('\n'),
    );
  });
});

describe('call queues are bounded', () => {
  it('refuses calls past MAX_QUEUED_CALLS_PER_SANDBOX and MAX_CALLS_PER_KEY with 429; other keys are not affected', async () => {
    const one = await create();
    const two = await create();
    const slow = (id: string) => post('/run_code', { sandbox_id: id, code: 'import time\ntime.sleep(1.5)' });
    const first = [slow(one)];
    await sleep(100);
    const queued = [slow(one), slow(one)];
    await sleep(100);
    const refusedHere = await stalls.refusing(() => slow(one));
    expect(refusedHere.status).toBe(429);
    expect(refusedHere.body.error.code).toBe('CALL_LIMIT_REACHED');
    expect(refusedHere.body.error.message).toMatch(/MAX_QUEUED_CALLS_PER_SANDBOX/);
    const elsewhere = [slow(two), slow(two)];
    await sleep(100);
    const refusedKey = await slow(two);
    expect(refusedKey.status).toBe(429);
    expect(refusedKey.body.error.message).toMatch(/MAX_CALLS_PER_KEY/);
    const b = await create({}, KEY_B);
    expect((await post('/run_code', { sandbox_id: b, code: 'print(3)' }, KEY_B)).body.stdout).toBe('3\n');
    for (const r of await Promise.all([...first, ...queued, ...elsewhere])) expect(r.status).toBe(200);
  }, 30_000);
});

describe('a sandbox start that fails gives back what it took', () => {
  it('40 starts that fail half-way (the OS refusing a name, an environment too large to exec), with and without network, leave the uid range and the proxies as they were', async () => {
    const options = localOptions({ uidCount: 16 });
    const backend = createLocalBackend(options);
    expect((await backend.init()).ready).toBe(true);
    try {
      for (let i = 0; i < 40; i++) {
        const bad: { id: string; env: Record<string, string> } =
          i % 4 < 2
            ? { id: `bad-\u0000-${i}`, env: {} } // refused by the OS after the process started (its cgroup's name)
            : { id: `bad-${i}`, env: { X: 'y'.repeat(200_000) } }; // the sandbox cannot exec (E2BIG)
        await expect(backend.create({ ...bad, network: i % 2 === 0 })).rejects.toMatchObject({ code: 'BACKEND_UNAVAILABLE' });
      }
      const sandbox = await backend.create({ id: 'good', env: {} });
      expect((await sandbox.runCode({ code: 'print(1)', timeoutMs: 10_000 })).stdout).toBe('1\n');
      await sandbox.destroy();
      let sockets: string[] = [];
      try {
        sockets = readdirSync(join(options.rootDir, 'net'));
      } catch {
        // no proxy was ever left
      }
      expect(sockets).toEqual([]);
      // Nor the channel FIFOs of the failed starts (or of the good one, stopped): only spares made ahead.
      expect(readdirSync(join(options.rootDir, 'live')).filter((d) => !d.startsWith('.spare-'))).toEqual([]);
    } finally {
      await backend.close();
    }
  }, 90_000);

  it('sandboxes started and stopped leave no descriptor behind in the service (their channel FIFOs are closed)', async () => {
    const backend = createLocalBackend(localOptions({ outliveService: true }));
    expect((await backend.init()).ready).toBe(true);
    const fds = () => readdirSync('/proc/self/fd').length;
    try {
      const first = await backend.create({ id: 'sbx_fd000000000000000000000', env: {} });
      await first.destroy();
      await new Promise((r) => setTimeout(r, 2500)); // spare channel directories made meanwhile
      const before = fds();
      for (let i = 0; i < 10; i++) {
        const sandbox = await backend.create({ id: `sbx_fd${String(i).padStart(22, '0')}`, env: {} });
        expect((await sandbox.runCode({ code: 'print(1)', timeoutMs: 10_000 })).stdout).toBe('1\n');
        await sandbox.destroy();
      }
      await new Promise((r) => setTimeout(r, 2500));
      expect(fds()).toBe(before);
    } finally {
      await backend.close();
    }
  }, 60_000);

  it('an environment too large for a sandbox is a 400 at create, not a failed start', async () => {
    const r = await post('/create_sandbox', {
      env: Object.fromEntries(Array.from({ length: 4 }, (_, i) => [`V${i}`, 'z'.repeat(60_000)])),
    });
    expect(r.status).toBe(400);
    expect(r.body.error.message).toMatch(/env/);
  });
});
