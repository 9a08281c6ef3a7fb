/**
 * SandboxService: the registry of live sandboxes and everything around them that is not a backend's
 * business — ids, owners, the conversation map, idle and lifetime expiry (the reaper), the live-sandbox
 * cap, timeouts, one call at a time per sandbox. It talks only to a SandboxBackend.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { RunCommandResult, Sandbox, SandboxBackend } from '../backends/types.js';
import { createFileLinks, type FileLinks } from './file-links.js';
import { runtimeOf } from './languages.js';
import { FairQueue } from './fair-queue.js';
import { SandboxRegistry, handleOf } from './registry.js';
import { SandboxFiles } from './sandbox-files.js';
import { checkCreateInput, checkEnv, checkText, timeoutMsOf } from './input-checks.js';
import { Quotas } from './quotas.js';
import type {
  CreateInput,
  RunCodeInput,
  RunCommandInput,
  RunOutcome,
  SandboxHandle,
  SandboxInfo,
  SandboxRecord,
  SandboxRef,
} from './types.js';

export type { CreateInput, RunCodeInput, RunCommandInput, RunOutcome, SandboxHandle, SandboxInfo, SandboxRef } from './types.js';
export type { OpenedFile } from './sandbox-files.js';
export { CODE_NODE_OWNER } from './quotas.js';

const REAP_INTERVAL_MS = 1_000;

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
  private readonly config: Config;
  private readonly now: () => number;
  private readonly log: NonNullable<ServiceOptions['log']>;
  private readonly registry = new SandboxRegistry();
  private readonly quotas: Quotas;
  /** Sandbox starts: a few at a time, in turn across owners. */
  private readonly starts: FairQueue;
  private reaper: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(options: ServiceOptions) {
    this.backend = options.backend;
    this.config = options.config;
    this.now = options.now ?? Date.now;
    this.log = options.log ?? (() => undefined);
    this.links = createFileLinks(this.config.URL_SIGNING_KEY, this.config.FILE_URL_TTL_S, this.now);
    this.starts = new FairQueue(this.config.MAX_CONCURRENT_CREATES, this.config.MAX_QUEUED_CREATES_PER_KEY);
    this.quotas = new Quotas(
      this.config,
      (owner) => this.registry.countOf(owner),
      () => this.registry.size,
    );
    this.files = new SandboxFiles({
      config: this.config,
      backend: this.backend,
      registry: this.registry,
      quotas: this.quotas,
      resolve: (owner, ref, createMissing) => this.resolveRecord(owner, ref, createMissing),
      exclusive: (record, fn) => this.exclusive(record, fn),
    });
  }

  /** Starts the reaper. */
  start(): void {
    this.reaper ??= setInterval(() => void this.reap(), REAP_INTERVAL_MS);
    this.reaper.unref();
  }

  get size(): number {
    return this.registry.size;
  }

  async create(owner: string, input: CreateInput): Promise<{ info: SandboxInfo; reused: boolean }> {
    checkEnv('env', input.env);
    if (input.conversationId) {
      const existing = this.registry.ofConversation(owner, input.conversationId);
      if (existing) return { info: this.infoOf(existing), reused: true };
    }
    const record = await this.createRecord(owner, input);
    return { info: this.infoOf(record), reused: false };
  }

  /** Finds the sandbox a request names; a conversation without one gets one when `createMissing`. */
  async resolve(owner: string, ref: SandboxRef, createMissing = true): Promise<SandboxHandle> {
    return handleOf(await this.resolveRecord(owner, ref, createMissing));
  }

  /** The facts of the sandbox a request names (a conversation without one gets one). */
  async info(owner: string, ref: SandboxRef): Promise<SandboxInfo> {
    return this.infoOf(await this.resolveRecord(owner, ref, true));
  }

  private async resolveRecord(owner: string, ref: SandboxRef, createMissing: boolean): Promise<SandboxRecord> {
    if (ref.sandboxId)
      return this.registry.peek(ref.sandboxId)?.owner === owner
        ? this.registry.get(owner, ref.sandboxId)
        : this.getOrAttach(owner, ref.sandboxId);
    if (ref.conversationId) {
      const existing = this.registry.ofConversation(owner, ref.conversationId);
      if (existing) return existing;
      if (!createMissing) throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `conversation '${ref.conversationId}' has no live sandbox`);
      return this.createRecord(owner, { conversationId: ref.conversationId });
    }
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give sandbox_id (from /create_sandbox) or conversation_id');
  }

  private infoOf(record: SandboxRecord): SandboxInfo {
    return {
      id: record.id,
      status: 'running',
      backend: this.backend.name,
      conversationId: record.conversationId,
      createdAt: new Date(record.createdAtMs),
      lastUsedAt: new Date(record.lastUsedAtMs),
      expiresAt: new Date(this.expiryMs(record)),
      idleTimeoutS: record.idleTimeoutMs / 1000,
      maxLifetimeS: record.maxLifetimeMs / 1000,
      workspace: record.sandbox.workspace,
      network: record.network,
    };
  }

  list(owner: string): SandboxInfo[] {
    return this.registry
      .all()
      .filter((r) => r.owner === owner)
      .map((r) => this.infoOf(r));
  }

  async runCode(owner: string, ref: SandboxRef, input: RunCodeInput): Promise<RunOutcome> {
    const runtime = runtimeOf(input.language);
    const timeoutMs = timeoutMsOf(this.config, input.timeoutS);
    if (runtime === 'shell') checkText('code', input.code);
    const record = await this.resolveRecord(owner, ref, true);
    const sandbox = handleOf(record);
    if (runtime === 'shell') {
      const result = await this.exclusive(record, () =>
        record.sandbox.runCommand({ command: input.code, timeoutMs, onOutput: input.onOutput }),
      );
      return { sandbox, runtime, result };
    }
    const result = await this.exclusive(record, () =>
      record.sandbox.runCode({
        code: input.code,
        timeoutMs,
        language: runtime,
        inlineImages: input.inlineImages,
        onOutput: input.onOutput,
      }),
    );
    return { sandbox, runtime, result };
  }

  async runCommand(owner: string, ref: SandboxRef, input: RunCommandInput): Promise<{ sandbox: SandboxHandle; result: RunCommandResult }> {
    const timeoutMs = timeoutMsOf(this.config, input.timeoutS);
    checkText('command', input.command);
    checkText('cwd', input.cwd);
    checkEnv('env', input.env);
    const record = await this.resolveRecord(owner, ref, true);
    const result = await this.exclusive(record, () =>
      record.sandbox.runCommand({ command: input.command, timeoutMs, cwd: input.cwd, env: input.env, onOutput: input.onOutput }),
    );
    return { sandbox: handleOf(record), result };
  }

  /** Stops a sandbox: 'not_found' when there is none of that id for this owner. */
  async stop(owner: string, sandboxId: string): Promise<'stopped' | 'not_found'> {
    let record = this.registry.peek(sandboxId);
    if ((!record || record.owner !== owner) && this.backend.attach) {
      record = await this.getOrAttach(owner, sandboxId).catch(() => undefined);
    }
    if (!record || record.owner !== owner) return 'not_found';
    await this.remove(record, 'stopped', `sandbox '${sandboxId}' was stopped at ${new Date(this.now()).toISOString()}`);
    return 'stopped';
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.reaper) clearInterval(this.reaper);
    this.reaper = null;
    await this.registry.creationsSettled();
    if (!this.backend.shared) await Promise.all(this.registry.all().map((r) => this.remove(r, 'stopped', 'the service shut down')));
    await this.backend.close();
  }

  /**
   * Stops every sandbox whose idle time or lifetime is over, or that used up its CPU budget. A lifetime is a
   * lifetime: a sandbox past it is stopped even in the middle of a call (which then answers 410 saying so);
   * only the idle timeout waits for calls to end.
   */
  async reap(): Promise<void> {
    const now = this.now();
    const cpuLimitS = this.config.SANDBOX_CPU_LIMIT_S;
    const ending: Promise<void>[] = [];
    for (const r of this.registry.all()) {
      const lifetimeOver = r.createdAtMs + r.maxLifetimeMs <= now;
      if (lifetimeOver || (r.busy === 0 && this.expiryMs(r) <= now)) {
        const why = lifetimeOver
          ? `reached its maximum lifetime of ${r.maxLifetimeMs / 1000} s`
          : `was idle for ${r.idleTimeoutMs / 1000} s`;
        ending.push(
          this.remove(
            r,
            'expired',
            `sandbox '${r.id}' expired at ${new Date(this.expiryMs(r)).toISOString()} (it ${why}); create a new one`,
          ),
        );
        continue;
      }
      const used = cpuLimitS > 0 ? (r.sandbox.cpuSeconds?.() ?? null) : null;
      if (used !== null && used > cpuLimitS) {
        ending.push(
          this.remove(
            r,
            'expired',
            `sandbox '${r.id}' was stopped at ${new Date(now).toISOString()}: it used ${Math.round(used)} CPU seconds, more than SANDBOX_CPU_LIMIT_S=${cpuLimitS}; create a new one`,
          ),
        );
      }
    }
    await Promise.all(ending);
  }

  /** A sandbox another instance created (shared backends): looked up in the backend, then remembered here. */
  private async getOrAttach(owner: string, id: string): Promise<SandboxRecord> {
    if (this.backend.attach && !this.registry.hasTombstone(id)) {
      const sandbox = await this.backend.attach(id, owner);
      if (sandbox) {
        const existing = this.registry.peek(id);
        if (existing && existing.owner === owner) return existing;
        return this.register(sandbox, owner, {});
      }
    }
    return this.registry.get(owner, id);
  }

  /** The id of a conversation's live sandbox, if it has one. */
  conversationSandbox(owner: string, conversationId: string): string | undefined {
    return this.registry.ofConversation(owner, conversationId)?.id;
  }

  private createRecord(owner: string, input: CreateInput): Promise<SandboxRecord> {
    return this.registry.once(owner, input.conversationId, () => this.doCreate(owner, input));
  }

  private async doCreate(owner: string, input: CreateInput): Promise<SandboxRecord> {
    if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
    this.quotas.checkCreate(owner);
    const { maxLifetimeS, idleTimeoutS, network } = checkCreateInput(this.config, input);
    const proposedId = `sbx_${randomBytes(12).toString('hex')}`;
    this.quotas.creating.take(owner);
    let sandbox: Sandbox;
    try {
      sandbox = await this.starts.run(owner, () => {
        if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
        return this.backend.create({ id: proposedId, env: input.env ?? {}, network, owner });
      });
    } finally {
      this.quotas.creating.give(owner);
    }
    if (this.closed) {
      await sandbox.destroy();
      throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
    }
    // A shared backend names its sandboxes (the name leads any instance to it); otherwise the id is ours.
    const id = this.backend.shared ? sandbox.id : proposedId;
    return this.register(sandbox, owner, { ...input, maxLifetimeS, idleTimeoutS }, id);
  }

  private register(sandbox: Sandbox, owner: string, input: CreateInput, id = sandbox.id): SandboxRecord {
    const now = this.now();
    const record: SandboxRecord = {
      id,
      sandbox,
      owner,
      conversationId: input.conversationId ?? null,
      createdAtMs: now,
      lastUsedAtMs: now,
      idleTimeoutMs: (input.idleTimeoutS ?? this.config.SANDBOX_IDLE_TIMEOUT_S) * 1000,
      maxLifetimeMs: (input.maxLifetimeS ?? this.config.SANDBOX_MAX_LIFETIME_S) * 1000,
      network: input.network === true,
      tail: Promise.resolve(),
      busy: 0,
      linkDownloads: 0,
    };
    this.registry.add(record);
    sandbox.onExit((reason) => {
      this.log('warn', `sandbox ${id} ended by itself: ${reason}`);
      void this.remove(record, 'lost', `sandbox '${id}' is gone: ${reason}; create a new one`);
    });
    this.log('info', `sandbox ${id} ${input.conversationId ? 'created for a conversation' : 'ready'}`);
    return record;
  }

  private async remove(record: SandboxRecord, kind: 'stopped' | 'expired' | 'lost', message: string): Promise<void> {
    // Others may serve a shared backend's sandbox; its backend ends it on its own schedule: only forget it.
    const forgetOnly = this.backend.shared && kind !== 'stopped';
    if (!this.registry.delete(record, forgetOnly ? undefined : message)) return;
    if (forgetOnly) {
      this.log('info', `sandbox ${record.id} forgotten by this instance (${kind})`);
      return;
    }
    try {
      await record.sandbox.destroy();
    } catch (err) {
      this.log('error', `destroying sandbox ${record.id} failed: ${(err as Error).message}`);
    }
    this.log('info', `sandbox ${record.id} ${kind}`);
  }

  /**
   * Runs `fn` after every earlier call into the same sandbox has finished. Bounded: at most
   * MAX_QUEUED_CALLS_PER_SANDBOX calls wait behind the running one, and an API key has at most
   * MAX_CALLS_PER_KEY calls running or waiting in all (each may hold a request body); more get 429.
   */
  private exclusive<T>(record: SandboxRecord, fn: () => Promise<T>): Promise<T> {
    if (record.busy > this.config.MAX_QUEUED_CALLS_PER_SANDBOX) {
      return Promise.reject(
        new ServiceError(
          ErrorCode.CALL_LIMIT_REACHED,
          `${record.busy - 1} calls are already waiting for sandbox '${record.id}' (MAX_QUEUED_CALLS_PER_SANDBOX); retry when they are done`,
          { headers: { 'retry-after': '1' } },
        ),
      );
    }
    const owner = record.owner;
    try {
      this.quotas.takeCall(owner);
    } catch (err) {
      return Promise.reject(err);
    }
    record.busy++;
    const run = async () => {
      try {
        if (!this.registry.isLive(record) && !this.backend.shared) {
          // Stopped or expired while this call waited its turn.
          throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, this.registry.endedBecause(record.id) ?? `sandbox '${record.id}' is gone`);
        }
        return await fn();
      } catch (err) {
        // The backend says the sandbox is gone (another instance stopped it, AgentCube expired it, its
        // processes died): stop remembering it, so later calls get the plain not-found answer.
        if (err instanceof ServiceError && (err.code === ErrorCode.SANDBOX_NOT_FOUND || err.code === ErrorCode.SANDBOX_LOST)) {
          const ended = this.registry.isLive(record) ? undefined : this.registry.endedBecause(record.id);
          if (ended && err.code === ErrorCode.SANDBOX_LOST) {
            // Ended under this call by the service itself (its lifetime, its CPU budget, a stop): say why.
            throw new ServiceError(ErrorCode.SANDBOX_LOST, `the call was ended: ${ended}`, { cause: err });
          }
          void this.remove(record, 'lost', `sandbox '${record.id}' is gone: ${err.message}`);
        }
        throw err;
      } finally {
        record.busy--;
        record.lastUsedAtMs = this.now();
        this.quotas.calls.give(owner);
      }
    };
    const result = record.tail.then(run, run);
    record.tail = result.catch(() => undefined);
    return result;
  }

  private expiryMs(r: SandboxRecord): number {
    return Math.min(r.createdAtMs + r.maxLifetimeMs, r.lastUsedAtMs + r.idleTimeoutMs);
  }
}
