/**
 * The machinery behind SandboxService: starts sandboxes (new ones and resumes) within the limits, registers
 * them, pauses and wakes them, ends them with the reason kept, and runs every call into a sandbox in its turn,
 * one at a time. The service's use cases call it; front ends never see it.
 */
import { randomBytes } from 'node:crypto';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { Sandbox, SandboxBackend } from '../backends/types.js';
import { FairQueue } from './fair-queue.js';
import type { SandboxRegistry } from './registry.js';
import { checkCreateInput } from './input-checks.js';
import type { Quotas } from './quotas.js';
import type { Durability, PauseReason } from './durability.js';
import type { StoredSandbox } from './state-store.js';
import type { EndKind } from './reaper.js';
import type { CreateInput, SandboxRecord } from './types.js';

export interface KeeperParts {
  readonly backend: SandboxBackend;
  readonly config: Config;
  readonly now: () => number;
  readonly log: (level: 'info' | 'warn' | 'error', message: string) => void;
  readonly registry: SandboxRegistry;
  readonly quotas: Quotas;
  /** Sandbox starts (new ones and resumes): a few at a time, in turn across owners. */
  readonly starts: FairQueue;
  /** Pause and resume; null when pausing is off or the backend cannot pause. */
  readonly durability: Durability | null;
}

export class Keeper {
  /** Told when a live sandbox is paused or ended by the service (before it is destroyed). */
  onRetire: (record: SandboxRecord, sandbox: Sandbox, reason: string) => void = () => undefined;

  /** Set when the service shuts down: nothing new starts. */
  closed = false;
  private readonly backend: SandboxBackend;
  private readonly config: Config;
  private readonly now: () => number;
  private readonly log: KeeperParts['log'];
  private readonly registry: SandboxRegistry;
  private readonly quotas: Quotas;
  private readonly starts: FairQueue;
  private readonly durability: Durability | null;
  /** Pauses (idle ones come in bursts; each writes a copy of a workspace): a few at a time, in turn across owners. */
  private readonly pauses: FairQueue;

  constructor(parts: KeeperParts) {
    this.backend = parts.backend;
    this.config = parts.config;
    this.now = parts.now;
    this.log = parts.log;
    this.registry = parts.registry;
    this.quotas = parts.quotas;
    this.starts = parts.starts;
    this.durability = parts.durability;
    this.pauses = new FairQueue(Math.max(2, this.config.MAX_CONCURRENT_CREATES), Number.POSITIVE_INFINITY);
  }

  createRecord(owner: string, input: CreateInput): Promise<SandboxRecord> {
    return this.registry.once(owner, input.conversationId, () => this.doCreate(owner, input));
  }

  private async doCreate(owner: string, input: CreateInput): Promise<SandboxRecord> {
    const { maxLifetimeS, idleTimeoutS, network } = checkCreateInput(this.config, input);
    const proposedId = `sbx_${randomBytes(12).toString('hex')}`;
    const sandbox = await this.startSandbox(owner, { id: proposedId, env: input.env ?? {}, network });
    // A shared backend names its sandboxes (the name leads any instance to it); otherwise the id is ours.
    const id = this.backend.shared ? sandbox.id : proposedId;
    const record = this.register(sandbox, owner, { ...input, maxLifetimeS, idleTimeoutS }, id);
    const ended = input.conversationId ? this.registry.takeEndedConversation(owner, input.conversationId) : undefined;
    if (ended) {
      record.lifecycle = {
        notice: `this is a new, empty sandbox for the conversation: its previous sandbox ${ended.id} ended (${ended.message})`,
        statePreserved: false,
        previousSandboxId: ended.id,
      };
    }
    return record;
  }

  /** A new sandbox of the backend, within the live-sandbox limits and the start queue. */
  private async startSandbox(
    owner: string,
    options: { id: string; env: Readonly<Record<string, string>>; network: boolean },
  ): Promise<Sandbox> {
    if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
    this.quotas.checkCreate(owner);
    this.quotas.creating.take(owner);
    let sandbox: Sandbox;
    try {
      sandbox = await this.starts.run(owner, () => {
        if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
        return this.backend.create({ ...options, owner });
      });
    } finally {
      this.quotas.creating.give(owner);
    }
    if (this.closed) {
      await sandbox.destroy();
      throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
    }
    return sandbox;
  }

  /** An idle timeout a caller asked for, checked against SANDBOX_MAX_LIFETIME_S. */
  idleTimeoutMsOf(seconds: number): number {
    const max = this.config.SANDBOX_MAX_LIFETIME_S;
    if (!Number.isFinite(seconds) || seconds < 1 || seconds > max) {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, `timeout must be from 1 to ${max} seconds (SANDBOX_MAX_LIFETIME_S)`);
    }
    return Math.round(seconds * 1000);
  }

  register(sandbox: Sandbox, owner: string, input: CreateInput, id = sandbox.id): SandboxRecord {
    const now = this.now();
    const record: SandboxRecord = {
      id,
      sandbox,
      workspace: sandbox.workspace,
      owner,
      conversationId: input.conversationId ?? null,
      createdAtMs: now,
      lastUsedAtMs: now,
      idleTimeoutMs: (input.idleTimeoutS ?? this.config.SANDBOX_IDLE_TIMEOUT_S) * 1000,
      maxLifetimeMs: (input.maxLifetimeS ?? this.config.SANDBOX_MAX_LIFETIME_S) * 1000,
      network: input.network === true,
      env: input.env ?? {},
      metadata: input.metadata ?? {},
      pausedAtMs: null,
      stateBytes: 0,
      kernels: [],
      lifecycle: null,
      tail: Promise.resolve(),
      busy: 0,
      linkDownloads: 0,
    };
    this.registry.add(record);
    this.watchExit(record, sandbox);
    void this.durability?.persist(record, 'running');
    this.log('info', `sandbox ${id} ${input.conversationId ? 'created for a conversation' : 'ready'}`);
    return record;
  }

  /** A sandbox STATE_DIR remembers, from before this process started. */
  async remember(stored: StoredSandbox): Promise<void> {
    const message = stored.ended?.message;
    if (stored.status === 'running' && stored.backendId && this.backend.adopt) {
      // It was running when the last service process died: it may be running still, with all its state.
      const sandbox = await this.backend.adopt(stored.backendId);
      if (sandbox) {
        const record: SandboxRecord = { ...pausedRecord({ ...stored, pausedAtMs: stored.pausedAtMs ?? 0 }), sandbox };
        record.pausedAtMs = stored.pausedAtMs;
        record.lastUsedAtMs = this.now();
        this.registry.add(record);
        this.watchExit(record, sandbox);
        void this.durability?.persist(record, 'running');
        return;
      }
    }
    if (stored.status === 'ended' || stored.pausedAtMs === null) {
      const lost =
        message ??
        `sandbox '${stored.id}' was lost: the service stopped unexpectedly while it ran, and it had never been paused, so nothing of it was saved; create a new one`;
      this.registry.tombstone(stored.id, stored.owner, stored.conversationId, lost);
      if (stored.status !== 'ended') await this.durability!.end({ ...stored, metadata: stored.metadata ?? {} }, 'lost', lost);
      return;
    }
    this.registry.add(pausedRecord({ ...stored, pausedAtMs: stored.pausedAtMs }));
  }

  /**
   * Forks `source` into a new paused sandbox of the same owner (a copy of its files and saved variables),
   * resumed by its first call; `source` goes on as it was.
   */
  async fork(source: SandboxRecord): Promise<SandboxRecord> {
    this.checkPausedRoom(source.owner);
    const now = this.now();
    const fork = pausedRecord({
      ...source,
      id: `sbx_${randomBytes(12).toString('hex')}`,
      conversationId: null,
      createdAtMs: now,
      pausedAtMs: now,
      stateBytes: 0,
      kernels: [],
    });
    await this.inLane(source, () => this.durability!.fork(source, fork)).catch(async (err) => {
      await this.durability!.forget(fork.id).catch(() => undefined); // nothing of a fork that failed is kept
      throw err;
    });
    this.registry.add(fork);
    this.log('info', `sandbox ${fork.id} forked from ${source.id} (${fork.stateBytes} bytes)`);
    return fork;
  }

  /** Refuses (429) one more paused sandbox for `owner` past MAX_PAUSED_SANDBOXES_PER_KEY. */
  private checkPausedRoom(owner: string): void {
    const max = this.config.MAX_PAUSED_SANDBOXES_PER_KEY;
    if (this.registry.pausedCount(owner) >= max) {
      throw new ServiceError(
        ErrorCode.SANDBOX_LIMIT_REACHED,
        `this API key keeps ${max} paused sandboxes (MAX_PAUSED_SANDBOXES_PER_KEY); stop the ones you no longer need`,
      );
    }
  }

  private watchExit(record: SandboxRecord, sandbox: Sandbox): void {
    sandbox.onExit((reason) => {
      if (record.sandbox !== sandbox) return;
      this.log('warn', `sandbox ${record.id} ended by itself: ${reason}`);
      void this.remove(record, 'lost', `sandbox '${record.id}' is gone: ${reason}; create a new one`);
    });
  }

  /** Saves the sandbox's state and ends its processes (in its turn; nothing to do when it is paused already). */
  async pauseIn(record: SandboxRecord, reason: PauseReason): Promise<void> {
    const sandbox = record.sandbox;
    if (!sandbox || !this.registry.isLive(record)) return;
    // At shutdown, a refusal would lose the sandbox: the count is checked for the other pauses only.
    if (reason !== 'shutdown') this.checkPausedRoom(record.owner);
    await this.pauses.run(record.owner, () => this.durability!.pause(record, sandbox, reason));
    record.sandbox = null;
    this.onRetire(record, sandbox, 'the sandbox was paused');
    await sandbox.destroy();
    this.log('info', `sandbox ${record.id} paused (${reason}, ${record.stateBytes} bytes)`);
  }

  /** A paused sandbox comes back: a new sandbox of the backend, with its state restored, under the same id. */
  private async wake(record: SandboxRecord): Promise<Sandbox> {
    const sandbox = await this.startSandbox(record.owner, { id: record.id, env: record.env, network: record.network });
    try {
      record.lifecycle = await this.durability!.resume(record, sandbox);
    } catch (err) {
      await sandbox.destroy();
      throw err;
    }
    record.sandbox = sandbox;
    this.watchExit(record, sandbox);
    void this.durability!.persist(record, 'running');
    this.log('info', `sandbox ${record.id} resumed`);
    return sandbox;
  }

  async remove(record: SandboxRecord, kind: EndKind, message: string): Promise<void> {
    // Others may serve a shared backend's sandbox; its backend ends it on its own schedule: only forget it.
    const forgetOnly = this.backend.shared && kind !== 'stopped';
    if (!this.registry.delete(record, forgetOnly ? undefined : message)) return;
    if (forgetOnly) {
      this.log('info', `sandbox ${record.id} forgotten by this instance (${kind})`);
      return;
    }
    const sandbox = record.sandbox;
    record.sandbox = null;
    if (sandbox) this.onRetire(record, sandbox, message);
    await this.durability?.end(record, kind, message).catch((err) => this.log('error', `sandbox ${record.id}: ${(err as Error).message}`));
    try {
      await sandbox?.destroy();
    } catch (err) {
      this.log('error', `destroying sandbox ${record.id} failed: ${(err as Error).message}`);
    }
    this.log('info', `sandbox ${record.id} ${kind}`);
  }

  /** Runs `fn` on the sandbox in its turn (see inLane), resuming it first when it is paused. */
  exclusive<T>(record: SandboxRecord, fn: (sandbox: Sandbox) => Promise<T>): Promise<T> {
    return this.inLane(record, async () => fn(record.sandbox ?? (await this.wake(record))));
  }

  /**
   * Runs `fn` after every earlier call into the same sandbox has finished. Bounded: at most
   * MAX_QUEUED_CALLS_PER_SANDBOX calls wait behind the running one, and an API key has at most
   * MAX_CALLS_PER_KEY calls running or waiting in all (each may hold a request body); more get 429. The
   * service's own turns (`internal`: pauses) are not counted against the key.
   */
  inLane<T>(record: SandboxRecord, fn: () => Promise<T>, internal = false): Promise<T> {
    if (!internal && record.busy > this.config.MAX_QUEUED_CALLS_PER_SANDBOX) {
      return Promise.reject(
        new ServiceError(
          ErrorCode.CALL_LIMIT_REACHED,
          `${record.busy - 1} calls are already waiting for sandbox '${record.id}' (MAX_QUEUED_CALLS_PER_SANDBOX); retry when they are done`,
          { headers: { 'retry-after': '1' } },
        ),
      );
    }
    const owner = record.owner;
    if (!internal) {
      try {
        this.quotas.takeCall(owner);
      } catch (err) {
        return Promise.reject(err);
      }
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
        if (!internal) this.quotas.calls.give(owner);
      }
    };
    const result = record.tail.then(run, run);
    record.tail = result.catch(() => undefined);
    return result;
  }

  /** At shutdown: pauses every live sandbox within `deadlineMs` (where pausing is on), then ends the rest. */
  async shutdown(deadlineMs: number): Promise<void> {
    if (this.durability && deadlineMs > 0) {
      let timer: NodeJS.Timeout | undefined;
      const pausing = this.registry
        .all()
        .filter((r) => r.sandbox !== null)
        .map((r) =>
          this.inLane(r, () => this.pauseIn(r, 'shutdown'), true).catch((err) =>
            this.log('warn', `sandbox ${r.id} could not be paused: ${(err as Error).message}`),
          ),
        );
      await Promise.race([Promise.all(pausing), new Promise((r) => (timer = setTimeout(r, deadlineMs)))]);
      clearTimeout(timer);
    }
    const at = new Date(this.now()).toISOString();
    await Promise.all(
      this.registry
        .all()
        .filter((r) => r.sandbox !== null)
        .map((r) =>
          this.remove(
            r,
            this.durability ? 'lost' : 'stopped',
            this.durability
              ? `sandbox '${r.id}' was stopped at ${at} when the service shut down before it could be paused; its files and variables are lost`
              : 'the service shut down',
          ),
        ),
    );
  }
}

/** A paused sandbox's record (no process; its call lane at rest). */
function pausedRecord(
  facts: Omit<SandboxRecord, 'sandbox' | 'lastUsedAtMs' | 'lifecycle' | 'tail' | 'busy' | 'linkDownloads' | 'metadata'> & {
    pausedAtMs: number;
    metadata?: Readonly<Record<string, string>>;
  },
): SandboxRecord {
  return {
    id: facts.id,
    sandbox: null,
    workspace: facts.workspace,
    owner: facts.owner,
    conversationId: facts.conversationId,
    createdAtMs: facts.createdAtMs,
    lastUsedAtMs: facts.pausedAtMs,
    idleTimeoutMs: facts.idleTimeoutMs,
    maxLifetimeMs: facts.maxLifetimeMs,
    network: facts.network,
    env: facts.env,
    metadata: facts.metadata ?? {},
    pausedAtMs: facts.pausedAtMs,
    stateBytes: facts.stateBytes,
    kernels: facts.kernels,
    lifecycle: null,
    tail: Promise.resolve(),
    busy: 0,
    linkDownloads: 0,
  };
}
