/**
 * Checkpoints (undo) on real sandboxes: the interpreter comes back exactly (same objects, open files,
 * generators, random state), the files byte for byte, across several steps and after a crash; limits and
 * CHECKPOINTS_KEPT hold; another key sees nothing.
 */
import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';
import { callTool } from '../../src/mcp/tools.js';

let t: TestApp;
const ONE = { authorization: 'Bearer key-one' };
const TWO = { authorization: 'Bearer key-two' };
const post = (path: string, body: Record<string, unknown>, headers = ONE) => t.post(path, body, headers);

beforeAll(async () => {
  t = await startTestApp(
    localEnv({ API_KEYS: 'key-one,key-two', CHECKPOINTS_KEPT: '4', CHECKPOINT_MAX_FILE_BYTES: '1000000', CHECKPOINT_WAIT_MS: '0' }),
  );
});
afterAll(async () => {
  await t?.close();
});

const textOf = (r: { content: unknown[] }) => (r.content[0] as { text: string }).text;

async function sandbox(): Promise<string> {
  return (await post('/create_sandbox', {})).body.sandbox_id;
}

async function run(id: string, code: string): Promise<Record<string, any>> {
  const r = await post('/run_code', { sandbox_id: id, code });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

async function shell(id: string, command: string): Promise<Record<string, any>> {
  const r = await post('/execute_command', { sandbox_id: id, command });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

async function rollback(id: string, body: Record<string, unknown> = {}): Promise<Record<string, any>> {
  const r = await post('/rollback', { sandbox_id: id, ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

describe('checkpoints', () => {
  it('a broken DataFrame comes back intact, the same object', async () => {
    const id = await sandbox();
    await run(id, 'import pandas as pd\ndf = pd.DataFrame({"a": range(1000), "b": range(1000)})\nbefore = id(df)');
    const broken = await run(id, 'df = df.merge(df, on="a")\ndf = df.iloc[:3]\nlen(df)');
    expect(broken.stdout + JSON.stringify(broken.results)).toContain('3');
    const r = await rollback(id, { steps_back: 1 });
    expect(r.checkpoint.after.kind).toBe('run_code');
    expect(r.notice).toContain('rolled back');
    const after = await run(id, 'print(len(df), list(df.columns), id(df) == before)');
    expect(after.stdout).toBe("1000 ['a', 'b'] True\n");
  });

  it('a generator, an open file and the random state survive a rollback', async () => {
    const id = await sandbox();
    await run(
      id,
      'import random\ng = (i * i for i in range(10))\nnext(g); next(g)\nf = open("notes.txt", "w+")\nf.write("hello")\nrandom.seed(7)\nrandom.random()',
    );
    await run(id, 'next(g); next(g); f.close(); random.random()');
    await rollback(id);
    const r = await run(
      id,
      'f.write(" world"); f.seek(0); print(next(g), f.read(), f.closed, random.random() == random.Random(7).random() or None)',
    );
    expect(r.stdout.split(' ')[0]).toBe('4');
    expect(r.stdout).toContain('hello world False');
    // The random state is the one after random.seed(7) and one draw: the next draw is the second of that sequence.
    const second = await run(
      id,
      'import random as r2\nrr = r2.Random(7); rr.random(); x = rr.random(); random.seed(7); random.random(); print(x == random.random())',
    );
    expect(second.stdout).toBe('True\n');
  });

  it('rm -rf outputs is undone byte for byte, and files made later are removed', async () => {
    const id = await sandbox();
    const bytes = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 256));
    const written = await post('/write_file', {
      sandbox_id: id,
      path: 'outputs/data.bin',
      content: bytes.toString('base64'),
      encoding: 'base64',
    });
    expect(written.status, JSON.stringify(written.body)).toBe(200);
    await run(id, 'open("outputs/report.txt", "w").write("the report\\n" * 100)');
    await shell(id, 'rm -rf outputs && echo later > new.txt && mkdir -p made/deep && echo x > made/deep/f');
    const r = await rollback(id, { steps_back: 1 });
    expect(r.files.removed).toEqual(expect.arrayContaining(['/workspace/new.txt', '/workspace/made']));
    const report = await run(
      id,
      'import os, hashlib\nprint(hashlib.sha256(open("outputs/data.bin", "rb").read()).hexdigest(), open("outputs/report.txt").read() == "the report\\n" * 100, os.path.exists("new.txt"), os.path.exists("made"))',
    );
    expect(report.stdout).toBe(`${createHash('sha256').update(bytes).digest('hex')} True False False\n`);
  });

  it('rolls back three steps, and later checkpoints are dropped', async () => {
    const id = await sandbox();
    await run(id, 'x = 1');
    await run(id, 'x = 2');
    await run(id, 'x = 3');
    await run(id, 'x = 4');
    const before = await post('/checkpoints', { sandbox_id: id });
    expect(before.status).toBe(200);
    expect(before.body.checkpoints.length).toBe(4);
    expect(before.body.checkpoints.at(-1).current).toBe(true);
    const r = await rollback(id, { steps_back: 3 });
    expect(r.dropped.length).toBe(3);
    expect((await run(id, 'print(x)')).stdout).toBe('1\n');
    const list = (await post('/checkpoints', { sandbox_id: id })).body.checkpoints;
    // The state the rollback restored is kept again (after the print(x) call, one more).
    expect(list.map((c: any) => c.after.kind)).toEqual(['rollback', 'run_code']);
  });

  it("at-fork handlers of the user's code that print neither hang the interpreter nor break a rollback", async () => {
    const id = await sandbox();
    await run(id, 'import os\nos.register_at_fork(before=lambda: print("before fork"), after_in_child=lambda: print("in child"))\nk = 1');
    await run(id, 'k = 2');
    expect((await run(id, 'print(k)')).stdout).toContain('2\n');
    await rollback(id, { steps_back: 2 });
    const r = await run(id, 'print("k is", k)');
    expect(r.stdout).toContain('k is 1\n');
  });

  it('a crash after a checkpoint can be rolled back from', async () => {
    const id = await sandbox();
    await run(id, 'secret = "zebra"');
    const crash = await run(id, 'import os, signal\nos.kill(os.getpid(), signal.SIGKILL)');
    expect(crash.error.name).toBe('KernelDied');
    await rollback(id, { steps_back: 1 });
    expect((await run(id, 'print(secret)')).stdout).toBe('zebra\n');
  });

  it('keeps CHECKPOINTS_KEPT at most, oldest dropped first, with memory and bytes held', async () => {
    const id = await sandbox();
    for (let i = 0; i < 7; i++) await run(id, `v${i} = ${i}`);
    const list = (await post('/checkpoints', { sandbox_id: id })).body;
    expect(list.kept).toBe(4);
    expect(list.checkpoints.length).toBe(4);
    expect(list.checkpoints.map((c: any) => c.after.code)).toEqual(['v3 = 3', 'v4 = 4', 'v5 = 5', 'v6 = 6']);
    for (const c of list.checkpoints) {
      expect(c.alive).toBe(true);
      expect(typeof c.memory_bytes).toBe('number');
    }
    const too = await post('/rollback', { sandbox_id: id, steps_back: 5 });
    expect(too.status).toBe(404);
    expect(too.body.error.code).toBe('CHECKPOINT_NOT_FOUND');
  });

  it('a large file is not copied: listed, and left as it is by a rollback', async () => {
    const id = await sandbox();
    await run(id, 'open("big.bin", "wb").write(b"a" * 2_000_000)');
    await run(id, 'open("big.bin", "wb").write(b"b" * 2_000_000)');
    const list = (await post('/checkpoints', { sandbox_id: id })).body.checkpoints;
    expect(list.at(-1).files_not_kept).toEqual(['/workspace/big.bin']);
    const r = await rollback(id);
    expect(r.files.not_restored).toEqual(['/workspace/big.bin']);
  });

  it('a checkpoint killed from inside is reported gone, never woken by user code', async () => {
    const id = await sandbox();
    await run(id, 'x = "kept"');
    await run(id, 'x = "changed"');
    // User code can see the forks and send them signals: all are blocked or ignored but SIGKILL.
    const poke = await run(
      id,
      [
        'import os, signal',
        'pids = [int(p) for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "ciw-checkpoint"]',
        'for p in pids:',
        '    for s in (signal.SIGUSR1, signal.SIGCONT, signal.SIGTERM, signal.SIGINT):',
        '        os.kill(p, s)',
        'print(len(pids))',
      ].join('\n'),
    );
    expect(Number(poke.stdout)).toBeGreaterThanOrEqual(2);
    expect((await run(id, 'print(x)')).stdout).toBe('changed\n');
    const list = (await post('/checkpoints', { sandbox_id: id })).body.checkpoints;
    expect(
      list.every((c: any) => c.alive),
      JSON.stringify(list) + JSON.stringify(poke),
    ).toBe(true);
    await shell(id, 'kill -9 -1 || true');
    const after = (await post('/checkpoints', { sandbox_id: id })).body.checkpoints;
    const dead = after.find((c: any) => !c.alive);
    expect(dead).toBeDefined();
    const lost = await post('/rollback', { sandbox_id: id, checkpoint_id: dead.id });
    expect(lost.status, JSON.stringify(lost.body) + JSON.stringify(after) + JSON.stringify(list)).toBe(409);
    expect(lost.body.error.code).toBe('CHECKPOINT_LOST');
  });

  it('another key can neither list nor use the checkpoints', async () => {
    const id = await sandbox();
    await run(id, 'y = 1');
    await run(id, 'y = 2');
    const list = await post('/checkpoints', { sandbox_id: id }, TWO);
    expect(list.status).toBe(404);
    const r = await post('/rollback', { sandbox_id: id, steps_back: 1 }, TWO);
    expect(r.status).toBe(404);
    expect((await run(id, 'print(y)')).stdout).toBe('2\n');
  });

  it('MCP: an agent lists the checkpoints and undoes its last cell', async () => {
    const id = await sandbox();
    const ctx = { service: t.service, owner: t.service.ownerOf(id)!, baseUrl: 'http://127.0.0.1', config: t.config };
    await run(id, 'rows = [1, 2, 3]');
    await run(id, 'rows.clear()');
    const list = await callTool('list_checkpoints', { sandbox_id: id }, ctx);
    expect(list.isError).toBeFalsy();
    expect(textOf(list)).toMatch(/steps_back 1\) after run_code: rows = \[1, 2, 3\]/);
    const undo = await callTool('rollback', { sandbox_id: id }, ctx);
    expect(undo.isError, textOf(undo)).toBeFalsy();
    expect(textOf(undo)).toMatch(/^rolled back to checkpoint c\d+ \(taken after run_code #1 "rows = \[1, 2, 3\]"\)/);
    expect((await run(id, 'print(rows)')).stdout).toBe('[1, 2, 3]\n');
    const bad = await callTool('rollback', { sandbox_id: id, checkpoint_id: 'c1', steps_back: 1 }, ctx);
    expect(bad.isError).toBe(true);
    expect(textOf(bad)).toMatch(/^VALIDATION_FAILED/);
  });

  it('a pause drops the checkpoints, and the resume says so; the next calls keep new ones', async () => {
    const id = await sandbox();
    await run(id, 'a = 1');
    await run(id, 'a = 2');
    expect((await post('/pause_sandbox', { sandbox_id: id })).status).toBe(200);
    const paused = (await post('/checkpoints', { sandbox_id: id })).body;
    expect(paused.checkpoints).toEqual([]);
    expect(paused.note).toMatch(/paused/);
    const refused = await post('/rollback', { sandbox_id: id });
    expect(refused.status).toBe(404);
    expect(refused.body.error.message).toMatch(/paused/);
    const resumed = await run(id, 'print(a)');
    expect(resumed.stdout).toBe('2\n');
    expect(resumed.notice).toMatch(/checkpoints \(undo points\) were dropped by the pause/);
    await run(id, 'a = 3');
    await rollback(id);
    expect((await run(id, 'print(a)')).stdout).toBe('2\n');
  });
});

describe('checkpoints at the sandbox limits', () => {
  it("says in the next answer when /tmp is too full to keep one, and the call's result is intact", async () => {
    const small = await startTestApp(localEnv({ SANDBOX_DISK_BYTES: String(8 * 1024 * 1024), CHECKPOINT_WAIT_MS: '0' }));
    try {
      const id = (await small.post('/create_sandbox', {})).body.sandbox_id;
      // Code in the sandbox fills its own /tmp; the next file change cannot be copied.
      await small.post('/run_code', { sandbox_id: id, code: 'open("/tmp/junk", "wb").write(b"j" * 7_500_000)' });
      const big = await small.post('/run_code', {
        sandbox_id: id,
        code: 'open("data.bin", "wb").write(b"d" * 3_000_000)\nprint("written")',
      });
      expect(big.body.stdout).toBe('written\n');
      const next = await small.post('/run_code', { sandbox_id: id, code: 'print("next")' });
      expect(next.body.stdout).toBe('next\n');
      expect(next.body.notice).toMatch(/no checkpoint .*\/tmp is full/);
    } finally {
      await small.close();
    }
  });

  it('under the memory limit, the out-of-memory killer takes checkpoints before the interpreter', async () => {
    const tight = await startTestApp(localEnv({ SANDBOX_MEMORY_BYTES: String(320 * 1024 * 1024), CHECKPOINT_WAIT_MS: '0' }));
    try {
      const health = JSON.parse((await tight.app.inject({ method: 'GET', url: '/health' })).body);
      if (!/limits: cgroup/.test(health.isolation)) return; // rlimits only: a checkpoint has its own per-process limit
      const id = (await tight.post('/create_sandbox', {})).body.sandbox_id;
      const call = (code: string) => tight.post('/run_code', { sandbox_id: id, code });
      await call('buf = bytearray(100 * 1024 * 1024)\nfor i in range(0, len(buf), 4096): buf[i] = 97\nkept = "yes"');
      // Each rewrite copies the 100 MiB the last checkpoint shares with the interpreter: three would pass the limit.
      for (const fill of [98, 99, 100]) {
        const r = await call(`for i in range(0, len(buf), 4096): buf[i] = ${fill}`);
        expect(r.status).toBe(200);
        expect(
          r.body.error,
          JSON.stringify(r.body.error) + JSON.stringify((await tight.post('/checkpoints', { sandbox_id: id })).body),
        ).toBeNull();
      }
      const r = await call('print(kept, bytes(buf[:1]))');
      expect(r.body.stdout).toBe("yes b'd'\n");
      const list = (await tight.post('/checkpoints', { sandbox_id: id })).body.checkpoints;
      expect(list.some((c: any) => !c.alive)).toBe(true);
    } finally {
      await tight.close();
    }
  }, 60_000);

  it('calls back to back share a checkpoint: undoing the last undoes them all, and the answer says how many', async () => {
    const paced = await startTestApp(localEnv({ CHECKPOINT_WAIT_MS: '300' }));
    try {
      const id = (await paced.post('/create_sandbox', {})).body.sandbox_id;
      const call = (code: string) => paced.post('/run_code', { sandbox_id: id, code });
      await call('n = 1');
      await new Promise((r) => setTimeout(r, 600)); // idle: the checkpoint after n = 1 is kept
      await call('n = 2');
      await call('n = 3'); // within 300 ms of the previous answer: no checkpoint between them
      await new Promise((r) => setTimeout(r, 600));
      const list = (await paced.post('/checkpoints', { sandbox_id: id })).body;
      expect(list.checkpoints.map((c: any) => [c.after.code, c.covers_calls])).toEqual([
        ['n = 1', 1],
        ['n = 3', 2],
      ]);
      expect(list.calls_since_newest).toBe(0);
      await call('n = 4');
      await call('n = 5'); // the last two left none yet: 5 is followed within the window by the listing below
      const now = (await paced.post('/checkpoints', { sandbox_id: id })).body;
      expect(now.calls_since_newest).toBeGreaterThanOrEqual(1);
      const r = await paced.post('/rollback', { sandbox_id: id, steps_back: 1 });
      expect(r.status, JSON.stringify(r.body)).toBe(200);
      expect(r.body.calls_undone).toBe(2);
      expect(r.body.notice).toMatch(/2 call\(s\) undone/);
      expect((await call('print(n)')).body.stdout).toBe('3\n');
    } finally {
      await paced.close();
    }
  });
});
