/**
 * SandboxService: the registry of sandboxes and everything around them that is not a backend's business —
 * ids, owners, the conversation map, the live-sandbox cap, timeouts, one call at a time per sandbox, and
 * their life: created, paused to STATE_DIR (idle, asked, at shutdown) and resumed by the next call under
 * the same id, ended (stopped, expired, lost) with the reason kept for whoever asks next. It talks only to a
 * SandboxBackend; the expiry rules are in reaper.ts, pause and resume in durability.ts.
 */
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { KernelState, RunCommandResult, Sandbox, SandboxBackend } from '../backends/types.js';
import { createFileLinks, type FileLinks } from './file-links.js';
import { runtimeOf } from './languages.js';
import { FairQueue } from './fair-queue.js';
import { SandboxRegistry, handleOf, infoOf } from './registry.js';
import { SandboxFiles } from './sandbox-files.js';
import { SandboxProcesses } from './sandbox-processes.js';
import { SandboxCheckpoints } from './sandbox-checkpoints.js';
import { checkEnv, checkMetadata, checkText, timeoutMsOf } from './input-checks.js';
import { Quotas } from './quotas.js';
import { Durability } from './durability.js';
import { StateStore } from './state-store.js';
import { reapOnce } from './reaper.js';
import { Keeper } from './keeper.js';
import { measured } from './usage.js';
import type {
  CallUsage,
  CreateInput,
  Lifecycle,
  RunCodeInput,
  RunCommandInput,
  RunOutcome,
  SandboxHandle,
  SandboxInfo,
  SandboxRecord,
  SandboxRef,
} from './types.js';

export type {
  CallUsage,
  CreateInput,
  Lifecycle,
  RunCodeInput,
  RunCommandInput,
  RunOutcome,
  SandboxHandle,
  SandboxInfo,
  SandboxRef,
} from './types.js';
export type { OpenedFile } from './sandbox-files.js';
export type { FileEntry, RichResult } from '../backends/types.js';
export type { ContextInfo, ProcessEnd, ProcessInfo, WatchEvent } from '../backends/processes.js';
export type { ProcessOutput } from './sandbox-processes.js';
export { CODE_NODE_OWNER } from './quotas.js';

const REAP_INTERVAL_MS = 1_000;
/** Sandboxes read back from STATE_DIR (and taken over) at once, at start. */
const REMEMBER_CONCURRENCY = 8;

export interface ServiceOptions {
  readonly backend: SandboxBackend;
  readonly config: Config;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Clock, for tests of expiry. */
  readonly now?: () => number;
}

export class SandboxService {
  readonly backend: SandboxBackend;
  /** The signed file links this service hands out and accepts. */
  readonly links: FileLinks;
  /** The file use cases (write, read, list, …). */
  readonly files: SandboxFiles;
  /** Background processes, file watches and code contexts. */
  readonly processes: SandboxProcesses;
  /** Checkpoints (undo). */
  readonly checkpoints: SandboxCheckpoints;
  private readonly config: Config;
  private readonly now: () => number;
  private readonly log: NonNullable<ServiceOptions['log']>;
  private readonly registry = new SandboxRegistry();
  private readonly quotas: Quotas;
  /** Sandbox starts (new ones and resumes): a few at a time, in turn across owners. */
  private readonly starts: FairQueue;
  /** Pause and resume; null when pausing is off (STATE_DIR=off) or the backend cannot pause. */
  private readonly durability: Durability | null;
  private readonly keeper: Keeper;
  private reaper: NodeJS.Timeout | null = null;
  private opened: Promise<void> | null = null;

  constructor(options: ServiceOptions) {
    this.backend = options.backend;
    this.config = options.config;
    this.now = options.now ?? Date.now;
    this.log = options.log ?? (() => undefined);
    this.links = createFileLinks(this.config.URL_SIGNING_KEY, this.config.FILE_URL_TTL_S, this.now);
    this.starts = new FairQueue(this.config.MAX_CONCURRENT_CREATES, this.config.MAX_QUEUED_CREATES_PER_KEY);
    this.quotas = new Quotas(
      this.config,
      (owner) => this.registry.liveCount(owner),
      () => this.registry.liveCount(),
    );
    const maxBytes = this.config.STATE_MAX_BYTES;
    this.durability =
      this.config.STATE_DIR !== 'off' && this.backend.canPause === true
        ? new Durability({
            store: new StateStore({
              dir: this.config.STATE_DIR,
              maxBytes,
              maxBytesPerOwner: this.config.apiKeys.length >= 2 ? Math.ceil(maxBytes / 2) : maxBytes,
              log: this.log,
            }),
            backend: this.backend.name,
            now: this.now,
            log: this.log,
          })
        : null;
    this.keeper = new Keeper({
      backend: this.backend,
      config: this.config,
      now: this.now,
      log: this.log,
      registry: this.registry,
      quotas: this.quotas,
      starts: this.starts,
      durability: this.durability,
    });
    const access = {
      config: this.config,
      backend: this.backend,
      registry: this.registry,
      quotas: this.quotas,
      resolve: (owner: string, ref: SandboxRef, createMissing: boolean) => this.resolveRecord(owner, ref, createMissing),
      exclusive: <T>(record: SandboxRecord, fn: (sandbox: Sandbox) => Promise<T>) => this.keeper.exclusive(record, fn),
    };
    this.files = new SandboxFiles(access);
    this.processes = new SandboxProcesses(access);
    this.checkpoints = new SandboxCheckpoints(access);
    this.keeper.onRetire = (record, sandbox, reason) => {
      record.contextsLost = this.processes.running(record, sandbox).contexts;
      record.checkpointsDropped = sandbox.checkpoints !== undefined;
      this.processes.ended(record, sandbox, reason);
    };
  }

  /** Reads back what STATE_DIR remembers (paused sandboxes, and why others ended), then starts the reaper. */
  async start(): Promise<void> {
    await this.open();
    this.reaper ??= setInterval(() => void this.reap(), REAP_INTERVAL_MS);
    this.reaper.unref();
  }

  /** Reads back what STATE_DIR remembers, once (start() does it; tests that reap by hand call it alone). */
  open(): Promise<void> {
    this.opened ??= (async () => {
      if (this.durability) {
        // Taking a sandbox over wakes its agent: a few at once, so that a hundred come back in a second or two.
        const stored = await this.durability.load();
        const next = () => stored.shift();
        const worker = async () => {
          for (let s = next(); s; s = next()) await this.keeper.remember(s);
        };
        await Promise.all(Array.from({ length: REMEMBER_CONCURRENCY }, worker));
      }
      // What an earlier process left running and STATE_DIR does not name (a pool's spares) ends here.
      await this.backend.forgetUnadopted?.();
    })();
    return this.opened;
  }

  /** Sandboxes by state, for the metrics: live, paused (in STATE_DIR), pooled (started ahead, not handed out). */
  counts(): { live: number; paused: number; pooled: number } {
    const pool = this.backend.status().pool;
    const live = this.registry.liveCount();
    return { live, paused: this.registry.all().length - live, pooled: (pool?.ready ?? 0) + (pool?.network?.ready ?? 0) };
  }

  /** Live sandboxes (paused ones hold no process and are not counted). */
  get size(): number {
    return this.registry.liveCount();
  }

  async create(owner: string, input: CreateInput): Promise<{ info: SandboxInfo; reused: boolean }> {
    checkEnv('env', input.env);
    checkMetadata(input.metadata);
    if (input.conversationId) {
      const existing = this.registry.ofConversation(owner, input.conversationId);
      if (existing) return { info: infoOf(this.config, this.backend.name, existing), reused: true };
    }
    const record = await this.keeper.createRecord(owner, input);
    return { info: infoOf(this.config, this.backend.name, record), reused: false };
  }

  /** Finds the sandbox a request names; a conversation without one gets one when `createMissing`. */
  async resolve(owner: string, ref: SandboxRef, createMissing = true): Promise<SandboxHandle> {
    return handleOf(await this.resolveRecord(owner, ref, createMissing));
  }

  /** The facts of the sandbox a request names (a conversation without one gets one). */
  async info(owner: string, ref: SandboxRef): Promise<SandboxInfo> {
    return infoOf(this.config, this.backend.name, await this.resolveRecord(owner, ref, true));
  }

  /**
   * Who owns a sandbox, for front ends that authenticate each request by a secret of the sandbox's own (E2B's
   * access tokens) rather than by an API key; undefined when there is no such sandbox.
   */
  ownerOf(sandboxId: string): string | undefined {
    return this.registry.peek(sandboxId)?.owner;
  }

  /** Every sandbox with its owner (E2B's signed file URLs name none: the signature tells which). */
  owners(): Array<{ id: string; owner: string }> {
    return this.registry.all().map((r) => ({ id: r.id, owner: r.owner }));
  }

  list(owner: string): SandboxInfo[] {
    return this.registry
      .all()
      .filter((r) => r.owner === owner)
      .map((r) => infoOf(this.config, this.backend.name, r));
  }

  async runCode(owner: string, ref: SandboxRef, input: RunCodeInput): Promise<RunOutcome> {
    const runtime = runtimeOf(input.language);
    const timeoutMs = timeoutMsOf(this.config, input.timeoutS);
    if (runtime === 'shell') checkText('code', input.code);
    const record = await this.resolveRecord(owner, ref, true);
    const sandbox = handleOf(record);
    if (runtime === 'shell') {
      const { result, usage } = await this.keeper.exclusive(record, (s) =>
        measured(s, () => s.runCommand({ command: input.code, timeoutMs, onOutput: input.onOutput })),
      );
      return { sandbox, runtime, result, usage, ...this.takeLifecycle(record) };
    }
    checkEnv('env_vars', input.env);
    const context = input.context === undefined ? undefined : await this.processes.context(owner, { sandboxId: record.id }, input.context);
    const { result, usage } = await this.keeper.exclusive(record, (s) =>
      measured(s, () =>
        s.runCode({
          code: input.code,
          timeoutMs,
          language: context?.language ?? runtime,
          inlineImages: input.inlineImages,
          onOutput: input.onOutput,
          ...(context ? { context: context.id } : {}),
          ...(input.env ? { env: input.env } : {}),
        }),
      ),
    );
    return { sandbox, runtime, result, usage, ...this.takeLifecycle(record) };
  }

  async runCommand(
    owner: string,
    ref: SandboxRef,
    input: RunCommandInput,
  ): Promise<{ sandbox: SandboxHandle; result: RunCommandResult; lifecycle?: Lifecycle; usage?: CallUsage }> {
    const timeoutMs = timeoutMsOf(this.config, input.timeoutS);
    checkText('command', input.command);
    checkText('cwd', input.cwd);
    checkEnv('env', input.env);
    const record = await this.resolveRecord(owner, ref, true);
    const { result, usage } = await this.keeper.exclusive(record, (s) =>
      measured(s, () => s.runCommand({ command: input.command, timeoutMs, cwd: input.cwd, env: input.env, onOutput: input.onOutput })),
    );
    return { sandbox: handleOf(record), result, usage, ...this.takeLifecycle(record) };
  }

  /**
   * Sets how long the sandbox may stay unused from now on before it is paused (E2B's setTimeout), within
   * SANDBOX_MAX_IDLE_TIMEOUT_S. Every call starts the count again.
   */
  async setIdleTimeout(owner: string, ref: SandboxRef, seconds: number): Promise<SandboxInfo> {
    const record = await this.resolveRecord(owner, ref, false);
    record.idleTimeoutMs = this.keeper.idleTimeoutMsOf(seconds);
    record.lastUsedAtMs = this.now();
    return infoOf(this.config, this.backend.name, record);
  }

  /** Pauses a sandbox to STATE_DIR: its files and variables are kept, its processes end. */
  async pause(owner: string, ref: SandboxRef): Promise<{ info: SandboxInfo; kernels: readonly KernelState[] }> {
    const record = await this.resolveRecord(owner, ref, false);
    this.requirePausing('pause');
    await this.keeper.inLane(record, () => this.keeper.pauseIn(record, 'request'));
    return { info: infoOf(this.config, this.backend.name, record), kernels: record.kernels };
  }

  /**
   * Forks a sandbox: a new one (new id, same owner, no conversation) with a copy of its files and of the
   * variables that can be saved; it is paused until its first call resumes it, and the two then diverge.
   */
  async fork(owner: string, ref: SandboxRef): Promise<{ source: string; info: SandboxInfo; kernels: readonly KernelState[] }> {
    const source = await this.resolveRecord(owner, ref, false);
    this.requirePausing('fork');
    const fork = await this.keeper.fork(source);
    return { source: source.id, info: infoOf(this.config, this.backend.name, fork), kernels: fork.kernels };
  }

  /** Resumes a paused sandbox now (any call would): its facts, and what the resume restored and lost. */
  async resume(owner: string, ref: SandboxRef): Promise<{ info: SandboxInfo; lifecycle?: Lifecycle }> {
    const record = await this.resolveRecord(owner, ref, false);
    await this.keeper.exclusive(record, async () => undefined);
    return { info: infoOf(this.config, this.backend.name, record), ...this.takeLifecycle(record) };
  }

  /** Stops a sandbox, running or paused, and deletes its stored state: 'not_found' when this owner has none of that id. */
  async stop(owner: string, sandboxId: string): Promise<'stopped' | 'not_found'> {
    let record = this.registry.peek(sandboxId);
    if ((!record || record.owner !== owner) && this.backend.attach) {
      record = await this.getOrAttach(owner, sandboxId).catch(() => undefined);
    }
    if (!record || record.owner !== owner) return 'not_found';
    await this.keeper.remove(record, 'stopped', `sandbox '${sandboxId}' was stopped at ${new Date(this.now()).toISOString()}`);
    return 'stopped';
  }

  /**
   * Ends the service's sandboxes: with `pauseDeadlineMs` (SIGTERM), each live one is paused, and those not
   * paused by then are stopped and remembered as lost; paused ones stay in STATE_DIR for the next start.
   */
  async close(options: { pauseDeadlineMs?: number } = {}): Promise<void> {
    this.keeper.closed = true;
    if (this.reaper) clearInterval(this.reaper);
    this.reaper = null;
    await this.registry.creationsSettled();
    if (!this.backend.shared) await this.keeper.shutdown(options.pauseDeadlineMs ?? 0);
    await this.backend.close();
  }

  /** Ends, pauses or forgets whatever is due (reaper.ts); runs every second. */
  reap(): Promise<void> {
    return reapOnce({
      records: this.registry.all(),
      now: this.now(),
      config: this.config,
      pausing: this.durability !== null,
      end: (record, kind, message) => this.keeper.remove(record, kind, message),
      pauseIdle: (record) => this.keeper.inLane(record, () => this.keeper.pauseIn(record, 'idle'), true),
      sweep: (now) => this.durability?.sweep(now, this.config.PAUSED_RETENTION_S * 1000) ?? Promise.resolve(),
      log: this.log,
    });
  }

  private requirePausing(what: 'pause' | 'fork'): void {
    if (this.durability) return;
    throw new ServiceError(
      ErrorCode.PAUSE_NOT_SUPPORTED,
      this.config.STATE_DIR === 'off'
        ? `this service keeps no sandbox state on disk (STATE_DIR=off), so it cannot ${what} sandboxes`
        : `the ${this.backend.name} backend cannot ${what} sandboxes; they keep running until they expire`,
    );
  }

  /** The id of a conversation's sandbox, if it has one (live or paused). */
  conversationSandbox(owner: string, conversationId: string): string | undefined {
    return this.registry.ofConversation(owner, conversationId)?.id;
  }

  private async resolveRecord(owner: string, ref: SandboxRef, createMissing: boolean): Promise<SandboxRecord> {
    if (ref.sandboxId)
      return this.registry.peek(ref.sandboxId)?.owner === owner
        ? this.registry.get(owner, ref.sandboxId)
        : this.getOrAttach(owner, ref.sandboxId);
    if (ref.conversationId) {
      const existing = this.registry.ofConversation(owner, ref.conversationId);
      if (existing) return existing;
      if (!createMissing) throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `conversation '${ref.conversationId}' has no sandbox`);
      return this.keeper.createRecord(owner, { conversationId: ref.conversationId });
    }
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give sandbox_id (from /create_sandbox) or conversation_id');
  }

  /** What the next result must tell, once. */
  private takeLifecycle(record: SandboxRecord): { lifecycle?: Lifecycle } {
    const lifecycle = record.lifecycle;
    record.lifecycle = null;
    return lifecycle ? { lifecycle } : {};
  }

  /** A sandbox another instance created (shared backends): looked up in the backend, then remembered here. */
  private async getOrAttach(owner: string, id: string): Promise<SandboxRecord> {
    if (this.backend.attach && !this.registry.hasTombstone(id)) {
      const sandbox = await this.backend.attach(id, owner);
      if (sandbox) {
        const existing = this.registry.peek(id);
        if (existing && existing.owner === owner) return existing;
        return this.keeper.register(sandbox, owner, {});
      }
    }
    return this.registry.get(owner, id);
  }
}
