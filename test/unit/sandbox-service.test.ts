/**
 * SandboxService on its own, over a fake backend whose calls the test releases by hand: ownership, the
 * conversation map, one call at a time, the queue bounds, expiry and the reasons a gone sandbox gives.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { SandboxService } from '../../src/service/sandbox-service.js';
import { ServiceError } from '../../src/core/errors.js';
import type { CreateSandboxOptions, RunCodeOptions, RunCodeResult, Sandbox, SandboxBackend } from '../../src/backends/types.js';

/** A sandbox whose runCode waits until the test calls release(). */
class GatedSandbox implements Sandbox {
  readonly workspace = '/workspace';
  readonly started: string[] = [];
  destroyed = false;
  private waiting: Array<() => void> = [];
  private exitListeners: Array<(reason: string) => void> = [];

  constructor(readonly id: string) {}

  async runCode(options: RunCodeOptions): Promise<RunCodeResult> {
    this.started.push(options.code);
    await new Promise<void>((resolve) => this.waiting.push(resolve));
    return {
      stdout: `${options.code}\n`,
      stderr: '',
      output: `${options.code}\n`,
      outputTruncated: false,
      results: [],
      error: null,
      timedOut: false,
      statePreserved: true,
      durationMs: 0,
      files: [],
      filesTruncated: false,
    };
  }

  runCommand(): never {
    throw new Error('not used');
  }

  pids(): readonly number[] {
    return [];
  }

  release(): void {
    this.waiting.shift()?.();
  }

  onExit(listener: (reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  /** The sandbox's processes end on their own. */
  die(reason: string): void {
    for (const l of this.exitListeners) l(reason);
  }

  async destroy(): Promise<void> {
    this.destroyed = true;
  }

  readonly files = {} as Sandbox['files'];
}

function fakeBackend() {
  const made: GatedSandbox[] = [];
  let creates = 0;
  const backend: SandboxBackend = {
    name: 'fake',
    init: async () => ({ name: 'fake', ready: true, isolation: 'none' }),
    status: () => ({ name: 'fake', ready: true, isolation: 'none' }),
    create: async (opts: CreateSandboxOptions) => {
      creates++;
      await new Promise((r) => setImmediate(r));
      const s = new GatedSandbox(opts.id);
      made.push(s);
      return s;
    },
    close: async () => undefined,
  };
  return { backend, made, creates: () => creates };
}

const ticks = () => new Promise((r) => setTimeout(r, 5));

let services: SandboxService[] = [];
afterEach(async () => {
  await Promise.all(services.map((s) => s.close()));
  services = [];
});

function serviceWith(env: Record<string, string> = {}, now?: () => number) {
  const fake = fakeBackend();
  const config = loadConfig({ SANDBOX_BACKEND: 'memory', ...env });
  const service = new SandboxService({ backend: fake.backend, config, now });
  services.push(service);
  return { service, ...fake };
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    return (err as ServiceError).code;
  }
  return 'ok';
}

describe('SandboxService', () => {
  it('hands out a handle (id and workspace), never its record or the backend sandbox', async () => {
    const { service, made } = serviceWith();
    const { info } = await service.create('key-a', {});
    const handle = await service.resolve('key-a', { sandboxId: info.id });
    expect(handle).toEqual({ id: info.id, workspace: '/workspace' });
    const run = service.runCode('key-a', { sandboxId: info.id }, { code: 'x' });
    await ticks();
    made[0].release();
    const outcome = await run;
    expect(Object.keys(outcome).sort()).toEqual(['result', 'runtime', 'sandbox', 'usage']);
    expect(outcome.sandbox).toEqual({ id: info.id, workspace: '/workspace' });
  });

  it('keeps owners apart: another key can neither see, use nor stop a sandbox', async () => {
    const { service } = serviceWith();
    const { info } = await service.create('key-a', {});
    expect(await codeOf(service.resolve('key-b', { sandboxId: info.id }))).toBe('SANDBOX_NOT_FOUND');
    expect(service.list('key-b')).toEqual([]);
    expect(await service.stop('key-b', info.id)).toBe('not_found');
    expect(service.list('key-a').map((s) => s.id)).toEqual([info.id]);
  });

  it('gives a conversation one sandbox, even to concurrent first calls, and per owner', async () => {
    const { service, creates } = serviceWith();
    const [a, b] = await Promise.all([
      service.resolve('key-a', { conversationId: 'c1' }),
      service.resolve('key-a', { conversationId: 'c1' }),
    ]);
    expect(a.id).toBe(b.id);
    expect(creates()).toBe(1);
    const other = await service.resolve('key-b', { conversationId: 'c1' });
    expect(other.id).not.toBe(a.id);
    const again = await service.create('key-a', { conversationId: 'c1' });
    expect(again).toMatchObject({ reused: true, info: { id: a.id } });
    expect(await codeOf(service.resolve('key-a', { conversationId: 'c2' }, false))).toBe('SANDBOX_NOT_FOUND');
  });

  it('runs the calls into one sandbox one after another, in order', async () => {
    const { service, made } = serviceWith();
    const { info } = await service.create('key-a', {});
    const ref = { sandboxId: info.id };
    const first = service.runCode('key-a', ref, { code: 'first' });
    const second = service.runCode('key-a', ref, { code: 'second' });
    await ticks();
    expect(made[0].started).toEqual(['first']);
    made[0].release();
    await first;
    await ticks();
    expect(made[0].started).toEqual(['first', 'second']);
    made[0].release();
    expect((await second).result.stdout).toBe('second\n');
  });

  it('refuses (429) calls past MAX_QUEUED_CALLS_PER_SANDBOX and past MAX_CALLS_PER_KEY, and gives the slots back', async () => {
    const { service, made } = serviceWith({ MAX_QUEUED_CALLS_PER_SANDBOX: '1', MAX_CALLS_PER_KEY: '3' });
    const s1 = (await service.create('key-a', {})).info.id;
    const s2 = (await service.create('key-a', {})).info.id;
    const running = [
      service.runCode('key-a', { sandboxId: s1 }, { code: '1' }),
      service.runCode('key-a', { sandboxId: s1 }, { code: '2' }),
    ];
    expect(await codeOf(service.runCode('key-a', { sandboxId: s1 }, { code: '3' }))).toBe('CALL_LIMIT_REACHED');
    running.push(service.runCode('key-a', { sandboxId: s2 }, { code: '4' }));
    expect(await codeOf(service.runCode('key-a', { sandboxId: s2 }, { code: '5' }))).toBe('CALL_LIMIT_REACHED');
    await ticks();
    made[0].release();
    made[1].release();
    await ticks();
    made[0].release();
    await Promise.all(running);
    // Every slot came back: the same calls fit again.
    const again = service.runCode('key-a', { sandboxId: s2 }, { code: '6' });
    await ticks();
    made[1].release();
    expect((await again).result.stdout).toBe('6\n');
  });

  it('refuses (429) a sandbox past MAX_SANDBOXES_PER_KEY without touching another key', async () => {
    const { service } = serviceWith({ MAX_SANDBOXES: '4', MAX_SANDBOXES_PER_KEY: '2', DIFY_SANDBOX_RESERVED: '0' });
    await service.create('key-a', {});
    await service.create('key-a', {});
    expect(await codeOf(service.create('key-a', {}))).toBe('SANDBOX_LIMIT_REACHED');
    expect(await codeOf(service.create('key-b', {}))).toBe('ok');
  });

  it('expires an idle sandbox, destroys it, and says why to the next call', async () => {
    let now = 1_000_000;
    const { service, made } = serviceWith({ SANDBOX_IDLE_TIMEOUT_S: '60' }, () => now);
    const { info } = await service.create('key-a', { conversationId: 'c1' });
    now += 59_000;
    await service.reap();
    expect(service.size).toBe(1);
    now += 2_000;
    await service.reap();
    expect(service.size).toBe(0);
    expect(made[0].destroyed).toBe(true);
    await expect(service.resolve('key-a', { sandboxId: info.id })).rejects.toThrow(/expired .*idle for 60 s/);
    // The conversation is free for a new sandbox.
    expect((await service.resolve('key-a', { conversationId: 'c1' })).id).not.toBe(info.id);
  });

  it('does not expire a sandbox for idleness while a call runs in it', async () => {
    let now = 1_000_000;
    const { service, made } = serviceWith({ SANDBOX_IDLE_TIMEOUT_S: '60' }, () => now);
    const { info } = await service.create('key-a', {});
    const run = service.runCode('key-a', { sandboxId: info.id }, { code: 'long' });
    await ticks();
    now += 120_000;
    await service.reap();
    expect(service.size).toBe(1);
    made[0].release();
    await run;
  });

  it('forgets a sandbox whose processes ended on their own and says so', async () => {
    const { service, made } = serviceWith();
    const { info } = await service.create('key-a', {});
    made[0].die('killed by the OOM killer');
    await ticks();
    await expect(service.resolve('key-a', { sandboxId: info.id })).rejects.toThrow(/is gone: killed by the OOM killer/);
  });

  it('after stop, a call naming the sandbox is told it was stopped; close() destroys the rest', async () => {
    const { service, made } = serviceWith();
    const a = (await service.create('key-a', {})).info.id;
    await service.create('key-a', {});
    expect(await service.stop('key-a', a)).toBe('stopped');
    await expect(service.resolve('key-a', { sandboxId: a })).rejects.toThrow(/was stopped at/);
    await service.close();
    expect(made.every((s) => s.destroyed)).toBe(true);
    expect(await codeOf(service.create('key-a', {}))).toBe('BACKEND_UNAVAILABLE');
  });

  it('refuses bad input with the field named before touching a sandbox', async () => {
    const { service, creates } = serviceWith({ EXEC_MAX_TIMEOUT_S: '100', SANDBOX_MAX_LIFETIME_S: '3600' });
    await expect(service.runCode('key-a', { conversationId: 'c' }, { code: 'x', timeoutS: 101 })).rejects.toThrow(/EXEC_MAX_TIMEOUT_S/);
    await expect(service.create('key-a', { idleTimeoutS: 7200 })).rejects.toThrow(/idle_timeout_seconds may be at most 3600/);
    await expect(service.create('key-a', { env: { A: 'x\0y' } })).rejects.toThrow(/env\.A contains a NUL/);
    expect(creates()).toBe(0);
  });
});
