/**
 * The use cases of what runs beside calls: background processes (start, list, follow their output, stdin,
 * signals, exit status kept until read), file watches, and code contexts. What a sandbox reports arrives as
 * events; this module keeps, per live sandbox, what callers have not read yet — bounded: the last
 * OUTPUT_TAIL_BYTES of each process, MAX_ENDED ended processes, MAX_WATCH_EVENTS events per watch — and hands
 * it to whoever follows. A pause or a stop ends them all, and followers hear it.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { Sandbox } from '../backends/types.js';
import type { ContextInfo, ProcessConfig, ProcessInfo, SignalName, StartProcessOptions, WatchEvent } from '../backends/processes.js';
import {
  Hub,
  MAX_FOLLOWERS,
  type ProcessListener,
  type ProcessOutput,
  type ProcessStream,
  type Tracked,
  type Watch,
} from './process-hub.js';
import { SIGNALS } from '../backends/processes.js';
import { checkEnv, checkText } from './input-checks.js';
import type { SandboxAccess } from './sandbox-files.js';
import type { SandboxRecord, SandboxRef } from './types.js';
import { randomBytes } from 'node:crypto';

export type { ProcessListener, ProcessOutput, ProcessStream } from './process-hub.js';

const MAX_ARGS = 256;
const MAX_CONTEXTS = 8;

export class SandboxProcesses {
  /** By record (gone with it): what a paused sandbox's processes left (their end) stays readable without waking it. */
  private readonly hubs = new WeakMap<SandboxRecord, Hub>();

  constructor(private readonly access: SandboxAccess) {}

  /** The hub of the record's live `sandbox`; a new one after a resume, with the ended processes carried over. */
  private hubOf(record: SandboxRecord, sandbox: Sandbox): Hub {
    const control = sandbox.processes;
    if (!control) {
      throw new ServiceError(
        ErrorCode.NOT_SUPPORTED,
        `the ${this.access.backend.name} backend has no background processes, file watches or contexts`,
      );
    }
    const old = this.hubs.get(record);
    if (old?.sandbox === sandbox) return old;
    const hub = new Hub(control, sandbox);
    for (const t of old?.procs.values() ?? []) if (t.end) hub.procs.set(t.pid, t);
    this.hubs.set(record, hub);
    sandbox.onExit((reason) => hub.close(`the sandbox ended: ${reason}`));
    return hub;
  }

  /** Called when the service stops or pauses a sandbox: followers of its processes and watches hear it. */
  ended(record: SandboxRecord, sandbox: Sandbox, reason: string): void {
    const hub = this.hubs.get(record);
    if (hub?.sandbox === sandbox) hub.close(reason);
  }

  /** What a pause will end: running processes, watches and contexts of a live sandbox. */
  running(record: SandboxRecord, sandbox: Sandbox): { processes: number; watches: number; contexts: number } {
    const hub = this.hubs.get(record);
    if (!hub || hub.sandbox !== sandbox) return { processes: 0, watches: 0, contexts: 0 };
    return { processes: [...hub.procs.values()].filter((t) => !t.end).length, watches: hub.watches.size, contexts: hub.contexts.size };
  }

  /** Runs `fn` on the live sandbox (resuming it if paused); control calls need not wait for a running call. */
  private async live<T>(owner: string, ref: SandboxRef, fn: (hub: Hub, sandbox: Sandbox, record: SandboxRecord) => Promise<T>): Promise<T> {
    const record = await this.access.resolve(owner, ref, false);
    const sandbox = record.sandbox;
    if (sandbox) return fn(this.hubOf(record, sandbox), sandbox, record);
    return this.access.exclusive(record, (s) => fn(this.hubOf(record, s), s, record));
  }

  /** A process known to the hub (running, or ended and not read yet) — a paused sandbox is not woken for it. */
  private async tracked(owner: string, ref: SandboxRef, pid: number): Promise<{ hub: Hub; t: Tracked }> {
    const record = await this.access.resolve(owner, ref, false);
    const hub = this.hubs.get(record);
    const t = hub?.procs.get(pid);
    if (hub && t) return { hub, t };
    if (!record.sandbox) throw notFound(pid);
    return this.live(owner, ref, async (h) => ({ hub: h, t: await this.findRunning(h, pid) }));
  }

  async start(owner: string, ref: SandboxRef, options: StartProcessOptions): Promise<{ pid: number; sandboxId: string }> {
    checkConfig(options);
    if (options.tag !== undefined) checkText('tag', options.tag);
    if (options.pty) {
      for (const n of [options.pty.cols, options.pty.rows]) {
        if (!Number.isInteger(n) || n < 1 || n > 1000) throw bad('pty size must be whole numbers of columns and rows from 1 to 1000');
      }
    }
    const record = await this.access.resolve(owner, ref, true);
    return this.access.exclusive(record, async (s) => {
      const hub = this.hubOf(record, s);
      const { pid } = await hub.control.start(options);
      const t = hub.track(pid);
      if (t)
        t.info = {
          pid,
          ...(options.tag !== undefined ? { tag: options.tag } : {}),
          config: configOf(options),
          pty: options.pty !== undefined,
        };
      return { pid, sandboxId: record.id };
    });
  }

  /**
   * Follows a process: from the output kept so far (`replay`) or from now, to its end. Returns a function that
   * stops following. A process that ended and whose status was kept is answered at once.
   */
  async follow(owner: string, ref: SandboxRef, pid: number, listener: ProcessListener, replay: boolean): Promise<() => void> {
    const { hub, t } = await this.tracked(owner, ref, pid);
    {
      if (replay) for (const c of t.chunks) listener.output(c.stream, c.data);
      if (t.end) {
        listener.end(t.end);
        hub.procs.delete(pid);
        return () => undefined;
      }
      if (t.followers.size >= MAX_FOLLOWERS) {
        throw new ServiceError(ErrorCode.CALL_LIMIT_REACHED, `process ${pid} already has ${MAX_FOLLOWERS} followers; close one`);
      }
      t.followers.add(listener);
      return () => void t.followers.delete(listener);
    }
  }

  /**
   * Waits at most `ms` until the process has output past byte `since`, or ended (without reading its status,
   * which output() hands out once). Counts as one of the process's followers meanwhile.
   */
  async waitFor(owner: string, ref: SandboxRef, pid: number, since: number, ms: number): Promise<void> {
    let release = () => undefined as void;
    const woken = new Promise<void>((resolve) => {
      release = resolve;
    });
    const stop = await this.tracked(owner, ref, pid).then(({ t }) => {
      if (t.end || t.dropped + t.kept > since) return null;
      if (t.followers.size >= MAX_FOLLOWERS) {
        throw new ServiceError(ErrorCode.CALL_LIMIT_REACHED, `process ${pid} already has ${MAX_FOLLOWERS} followers; close one`);
      }
      const listener = { output: () => release(), end: () => release() };
      t.followers.add(listener);
      return () => void t.followers.delete(listener);
    });
    if (!stop) return;
    const timer = setTimeout(release, ms);
    try {
      await woken;
    } finally {
      clearTimeout(timer);
      stop();
    }
  }

  /** Output kept from byte `since` on, and the status; an ended process's status is read once, then forgotten. */
  async output(owner: string, ref: SandboxRef, pid: number, since: number): Promise<ProcessOutput> {
    const { hub, t } = await this.tracked(owner, ref, pid);
    {
      let at = t.dropped;
      const chunks: Array<{ stream: ProcessStream; data: Buffer }> = [];
      for (const c of t.chunks) {
        const endAt = at + c.data.length;
        if (endAt > since) chunks.push(at >= since ? c : { stream: c.stream, data: c.data.subarray(since - at) });
        at = endAt;
      }
      if (t.end) hub.procs.delete(pid);
      return {
        pid,
        chunks,
        offset: Math.max(since, t.dropped),
        next: at,
        running: !t.end,
        ...(t.end ? { end: t.end } : {}),
        truncated: t.truncated || since < t.dropped,
      };
    }
  }

  private async findRunning(hub: Hub, pid: number): Promise<Tracked> {
    // A process started before this service process took the sandbox over: the agent knows it.
    const found = (await hub.control.list()).find((p) => p.pid === pid);
    const t = found ? hub.track(pid) : undefined;
    if (!t) throw notFound(pid);
    t.info = found;
    return t;
  }

  /** The running processes; a paused sandbox runs none (it is not woken to say so). */
  async list(owner: string, ref: SandboxRef): Promise<ProcessInfo[]> {
    const record = await this.access.resolve(owner, ref, false);
    if (!record.sandbox) return [];
    return this.live(owner, ref, (hub) => hub.control.list());
  }

  async input(owner: string, ref: SandboxRef, pid: number, data: Uint8Array): Promise<void> {
    if (data.length > 1024 * 1024) throw bad('stdin data is larger than 1 MiB per request; send it in pieces');
    await this.live(owner, ref, (hub) => hub.control.input(pid, data));
  }

  async closeStdin(owner: string, ref: SandboxRef, pid: number): Promise<void> {
    await this.live(owner, ref, (hub) => hub.control.closeStdin(pid));
  }

  async signal(owner: string, ref: SandboxRef, pid: number, signal: string): Promise<void> {
    const name = SIGNALS.find((s) => s === signal);
    if (!name) throw bad(`signal must be one of ${SIGNALS.join(', ')}`);
    await this.live(owner, ref, (hub) => hub.control.signal(pid, name as SignalName));
  }

  async resize(owner: string, ref: SandboxRef, pid: number, size: { cols: number; rows: number }): Promise<void> {
    for (const n of [size.cols, size.rows]) if (!Number.isInteger(n) || n < 1 || n > 1000) throw bad('cols and rows must be 1 to 1000');
    await this.live(owner, ref, (hub) => hub.control.resize(pid, size));
  }

  async watch(
    owner: string,
    ref: SandboxRef,
    path: string,
    recursive: boolean,
  ): Promise<{ watchId: string; path: string; sandboxId: string }> {
    checkText('path', path);
    return this.live(owner, ref, async (hub, _s, record) => {
      const w = await hub.control.watch(path, recursive);
      hub.watches.set(w.watchId, { id: w.watchId, path: w.path, events: [], overflowed: false, followers: new Set() });
      return { ...w, sandboxId: record.id };
    });
  }

  /** Events since the last look (at most MAX_WATCH_EVENTS; `overflowed` when older ones were dropped). */
  async watchEvents(owner: string, ref: SandboxRef, watchId: string): Promise<{ events: WatchEvent[]; overflowed: boolean }> {
    return this.live(owner, ref, async (hub) => {
      const w = watchOf(hub, watchId);
      const out = { events: w.events, overflowed: w.overflowed };
      w.events = [];
      w.overflowed = false;
      return out;
    });
  }

  /** Follows a watch's events as they come; returns the function that stops following. */
  async followWatch(
    owner: string,
    ref: SandboxRef,
    watchId: string,
    listener: (events: readonly WatchEvent[]) => void,
  ): Promise<() => void> {
    return this.live(owner, ref, async (hub) => {
      const w = watchOf(hub, watchId);
      if (w.followers.size >= MAX_FOLLOWERS)
        throw new ServiceError(ErrorCode.CALL_LIMIT_REACHED, `watch ${watchId} already has ${MAX_FOLLOWERS} followers`);
      if (w.events.length > 0) listener(w.events.splice(0));
      w.followers.add(listener);
      return () => void w.followers.delete(listener);
    });
  }

  async unwatch(owner: string, ref: SandboxRef, watchId: string): Promise<void> {
    await this.live(owner, ref, async (hub) => {
      watchOf(hub, watchId);
      hub.watches.delete(watchId);
      await hub.control.unwatch(watchId);
    });
  }

  /** What the sandbox uses now (a paused one uses nothing): CPU seconds so far, memory, and its limits. */
  async usage(owner: string, ref: SandboxRef): Promise<{ cpuSeconds: number | null; memoryBytes: number | null; running: boolean }> {
    const record = await this.access.resolve(owner, ref, false);
    const s = record.sandbox;
    return { cpuSeconds: s?.cpuSeconds?.() ?? null, memoryBytes: s ? (s.memoryBytes?.() ?? null) : 0, running: s !== null };
  }

  async createContext(owner: string, ref: SandboxRef, language: 'python' | 'javascript', cwd?: string): Promise<ContextInfo> {
    checkText('cwd', cwd);
    const record = await this.access.resolve(owner, ref, true);
    return this.access.exclusive(record, async (s) => {
      const hub = this.hubOf(record, s);
      if (!s.contexts) throw new ServiceError(ErrorCode.NOT_SUPPORTED, 'this backend has no code contexts');
      if (hub.contexts.size >= MAX_CONTEXTS) {
        throw new ServiceError(ErrorCode.CONTEXT_LIMIT_REACHED, `this sandbox has ${MAX_CONTEXTS} contexts already; remove one first`);
      }
      const info = await s.contexts.create(`ctx_${randomBytes(8).toString('hex')}`, language, cwd);
      hub.contexts.set(info.id, info);
      return info;
    });
  }

  async contexts(owner: string, ref: SandboxRef): Promise<ContextInfo[]> {
    const record = await this.access.resolve(owner, ref, false);
    const hub = this.hubs.get(record);
    return hub && hub.sandbox === record.sandbox ? [...hub.contexts.values()] : [];
  }

  /** The context, checked to exist in this sandbox (for a call that names it). */
  async context(owner: string, ref: SandboxRef, id: string): Promise<ContextInfo> {
    const found = (await this.contexts(owner, ref)).find((c) => c.id === id);
    if (!found) throw new ServiceError(ErrorCode.CONTEXT_NOT_FOUND, `no context '${id.slice(0, 100)}' in this sandbox; create one first`);
    return found;
  }

  async restartContext(owner: string, ref: SandboxRef, id: string): Promise<void> {
    await this.context(owner, ref, id);
    const record = await this.access.resolve(owner, ref, false);
    await this.access.exclusive(record, (s) => s.contexts!.restart(id));
  }

  async removeContext(owner: string, ref: SandboxRef, id: string): Promise<void> {
    await this.context(owner, ref, id);
    const record = await this.access.resolve(owner, ref, false);
    await this.access.exclusive(record, async (s) => {
      await s.contexts!.remove(id);
      this.hubs.get(record)?.contexts.delete(id);
    });
  }
}

function notFound(pid: number): ServiceError {
  return new ServiceError(
    ErrorCode.PROCESS_NOT_FOUND,
    `no process with pid ${pid} in this sandbox (it ended and its status was read, it ended with a pause, or it never ran)`,
  );
}

function watchOf(hub: Hub, id: string): Watch {
  const w = hub.watches.get(id);
  if (!w) throw new ServiceError(ErrorCode.WATCH_NOT_FOUND, `no watch '${id.slice(0, 100)}' in this sandbox`);
  return w;
}

function bad(message: string): ServiceError {
  return new ServiceError(ErrorCode.VALIDATION_FAILED, message);
}

function checkConfig(c: ProcessConfig): void {
  if (typeof c.cmd !== 'string' || c.cmd === '') throw bad('cmd must be a non-empty string');
  checkText('cmd', c.cmd);
  if (c.args.length > MAX_ARGS) throw bad(`at most ${MAX_ARGS} arguments`);
  c.args.forEach((a, i) => checkText(`args[${i}]`, a));
  checkText('cwd', c.cwd);
  checkEnv('envs', c.envs);
  if (Buffer.byteLength(JSON.stringify(c.args)) > 96 * 1024) throw bad('the arguments hold more than 96 KiB; pass large data as a file');
}

function configOf(o: StartProcessOptions): ProcessConfig {
  return { cmd: o.cmd, args: o.args, envs: o.envs, ...(o.cwd !== undefined ? { cwd: o.cwd } : {}) };
}
