/**
 * Pause and resume, and what the service remembers across its own restarts: a paused sandbox is its stored
 * state (StateStore) and its record; a resumed one is a new sandbox of the backend with that state restored,
 * under the same id. Every resume says what came back and what did not; every sandbox that ended is
 * remembered (bounded) so that a later call naming it, or its conversation, is told why.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { KernelState, Sandbox } from '../backends/types.js';
import { StateStore, type StoredSandbox } from './state-store.js';
import type { Lifecycle, SandboxRecord } from './types.js';

/** Ended sandboxes remembered in STATE_DIR (their records are small; the oldest are forgotten first). */
const ENDED_KEPT = 10_000;
/** Names of what was not restored that a notice lists, at most. */
const NOTICE_NAMES = 20;

export type PauseReason = 'request' | 'idle' | 'shutdown' | 'fork';

const REASON_TEXT: Record<PauseReason | 'crash', string> = {
  request: 'when asked to',
  idle: 'after it was idle',
  shutdown: 'when the service shut down',
  fork: 'as a fork',
  crash: 'before the service stopped unexpectedly; what happened after that pause is lost',
};

export interface DurabilityOptions {
  readonly store: StateStore;
  readonly backend: string;
  readonly now: () => number;
  readonly log: (level: 'info' | 'warn' | 'error', message: string) => void;
}

/** What STATE_DIR records of a sandbox (a live record, or one read back from STATE_DIR). */
type Facts = Pick<
  SandboxRecord,
  | 'id'
  | 'owner'
  | 'conversationId'
  | 'createdAtMs'
  | 'idleTimeoutMs'
  | 'maxLifetimeMs'
  | 'network'
  | 'env'
  | 'metadata'
  | 'workspace'
  | 'pausedAtMs'
  | 'stateBytes'
  | 'kernels'
>;

export class Durability {
  private readonly store: StateStore;
  /** Ended sandboxes remembered on disk, oldest first. */
  private readonly ended: Array<{ id: string; atMs: number }> = [];
  /** meta.json writes of each sandbox, in order (a pause's must not be overtaken by its create's). */
  private readonly writes = new Map<string, Promise<void>>();
  /** Why each paused sandbox was paused (for the resume's notice). */
  private readonly reasons = new Map<string, PauseReason | 'crash'>();
  /** The sandbox each fork not yet resumed was made from. */
  private readonly forkedFrom = new Map<string, string>();

  constructor(private readonly options: DurabilityOptions) {
    this.store = options.store;
  }

  /** What STATE_DIR remembers; a sandbox that was running when the service stopped comes back paused, from its last pause. */
  async load(): Promise<StoredSandbox[]> {
    const found = (await this.store.load()).sort((a, b) => (a.ended?.atMs ?? 0) - (b.ended?.atMs ?? 0));
    for (const s of found) {
      if (s.status === 'ended') this.ended.push({ id: s.id, atMs: s.ended?.atMs ?? 0 });
      if (s.status === 'running' && s.pausedAtMs !== null) this.reasons.set(s.id, 'crash');
      if (s.status === 'paused') this.reasons.set(s.id, isReason(s.pauseReason) ? s.pauseReason : 'request');
      if (s.status === 'paused' && s.forkedFrom) this.forkedFrom.set(s.id, s.forkedFrom);
    }
    return found;
  }

  /** Records the sandbox's facts in STATE_DIR (errors are logged: the sandbox works without them). */
  persist(record: Facts, status: 'running' | 'paused'): Promise<void> {
    return this.put(this.stored(record, status)).catch((err) => {
      this.options.log('error', `could not record sandbox ${record.id} in STATE_DIR: ${(err as Error).message}`);
    });
  }

  private put(meta: StoredSandbox): Promise<void> {
    const previous = this.writes.get(meta.id) ?? Promise.resolve();
    const next = previous.catch(() => undefined).then(() => this.store.put(meta));
    const tail = next.catch(() => undefined);
    this.writes.set(meta.id, tail);
    void tail.then(() => {
      if (this.writes.get(meta.id) === tail) this.writes.delete(meta.id);
    });
    return next;
  }

  /** Saves `sandbox`'s state in STATE_DIR; the caller then ends the sandbox's processes. */
  async pause(record: SandboxRecord, sandbox: Sandbox, reason: PauseReason): Promise<void> {
    if (!sandbox.saveState)
      throw new ServiceError(ErrorCode.PAUSE_NOT_SUPPORTED, `the ${this.options.backend} backend cannot pause sandboxes`);
    const save = sandbox.saveState.bind(sandbox);
    const { result, bytes } = await this.store.write(record.id, record.owner, (sink) => save(sink));
    record.pausedAtMs = this.options.now();
    record.stateBytes = bytes;
    record.kernels = result.kernels;
    this.reasons.set(record.id, reason);
    await this.put(this.stored(record, 'paused'));
  }

  /**
   * Stores the state of `source` as the state of `fork`, a new paused sandbox: a copy of the stored state when
   * `source` is paused, else a snapshot of its running sandbox (which keeps running).
   */
  async fork(source: SandboxRecord, fork: SandboxRecord): Promise<void> {
    if (source.sandbox) {
      if (!source.sandbox.saveState)
        throw new ServiceError(ErrorCode.PAUSE_NOT_SUPPORTED, `the ${this.options.backend} backend cannot fork sandboxes`);
      const save = source.sandbox.saveState.bind(source.sandbox);
      const { result, bytes } = await this.store.write(fork.id, fork.owner, (sink) => save(sink));
      fork.kernels = result.kernels;
      fork.stateBytes = bytes;
    } else {
      const state = await this.store.read(source.id);
      const { bytes } = await this.store.write(fork.id, fork.owner, async (sink) => {
        sink.start(state.length);
        await sink.write(state);
      });
      fork.kernels = source.kernels;
      fork.stateBytes = bytes;
    }
    fork.pausedAtMs = this.options.now();
    this.reasons.set(fork.id, 'fork');
    this.forkedFrom.set(fork.id, source.id);
    await this.put(this.stored(fork, 'paused'));
  }

  /**
   * Restores the stored state into `sandbox`, a new sandbox for `record`: what the next result must say. A
   * state that cannot be restored leaves a usable, empty sandbox, and the notice says so.
   */
  async resume(record: SandboxRecord, sandbox: Sandbox): Promise<Lifecycle> {
    const when = new Date(record.pausedAtMs ?? this.options.now()).toISOString();
    const reason = this.reasons.get(record.id) ?? 'request';
    const source = this.forkedFrom.get(record.id);
    const why = source ? `as a fork of ${source}` : REASON_TEXT[reason];
    this.reasons.delete(record.id);
    this.forkedFrom.delete(record.id);
    let lost: string[];
    try {
      if (!sandbox.restoreState) throw new ServiceError(ErrorCode.PAUSE_NOT_SUPPORTED, 'this backend cannot restore a paused sandbox');
      const restored = await sandbox.restoreState(await this.store.read(record.id));
      lost = [
        ...restored.kernels.flatMap((k) => (k.error ? [`${labelOf(k)} variables (${k.error})`] : [])),
        ...restored.kernels.flatMap((k) => k.skipped.map((s) => `${s.name} (${labelOf(k)}: ${s.reason})`)),
        ...restored.skippedFiles.map((f) => `file ${f}`),
        ...(record.contextsLost
          ? [`the variables of ${record.contextsLost} code context(s) made with create_context (contexts are not kept across a pause)`]
          : []),
      ];
      record.contextsLost = 0;
    } catch (err) {
      if (err instanceof ServiceError && err.code === ErrorCode.SANDBOX_LOST) throw err;
      const problem = err instanceof Error ? err.message : String(err);
      this.options.log('error', `sandbox ${record.id}: its stored state could not be restored: ${problem}`);
      return {
        notice: `sandbox ${record.id} was paused at ${when} ${why}, and its stored state could not be restored (${problem}): this is an empty sandbox under the same id; its files and variables are lost`,
        statePreserved: false,
      };
    }
    // Undo points are not state: the files and variables are back all the same.
    const checkpoints = record.checkpointsDropped ? ' Its checkpoints (undo points) were dropped by the pause.' : '';
    record.checkpointsDropped = false;
    const shown = lost.slice(0, NOTICE_NAMES).join('; ') + (lost.length > NOTICE_NAMES ? `; and ${lost.length - NOTICE_NAMES} more` : '');
    return {
      notice:
        `sandbox ${record.id} was resumed from its pause at ${when} ${why}: its files and saved variables are back` +
        (lost.length > 0 ? `; not restored: ${shown}` : '') +
        '. Processes it ran (background jobs, servers) do not survive a pause and were not restarted.' +
        checkpoints,
      statePreserved: lost.length === 0 && reason !== 'crash',
    };
  }

  /** Remembers that the sandbox ended (its stored state goes), so that later calls are told why. */
  async end(record: Facts, kind: string, message: string): Promise<void> {
    this.reasons.delete(record.id);
    this.forkedFrom.delete(record.id);
    const atMs = this.options.now();
    await this.store.dropState(record.id);
    await this.put({
      ...this.stored(record, 'running'),
      status: 'ended',
      pausedAtMs: null,
      stateBytes: 0,
      kernels: [],
      ended: { atMs, kind, message },
    });
    this.ended.push({ id: record.id, atMs });
    while (this.ended.length > ENDED_KEPT) await this.store.delete(this.ended.shift()!.id);
  }

  /** Forgets a sandbox entirely (a fork that could not be made). */
  async forget(id: string): Promise<void> {
    this.reasons.delete(id);
    this.forkedFrom.delete(id);
    await this.store.delete(id);
  }

  /** Forgets, for good, ended sandboxes remembered for longer than `retentionMs`. */
  async sweep(now: number, retentionMs: number): Promise<void> {
    while (this.ended.length > 0 && this.ended[0].atMs + retentionMs <= now) await this.store.delete(this.ended.shift()!.id);
  }

  private stored(record: Facts, status: 'running' | 'paused'): StoredSandbox {
    return {
      version: 1,
      id: record.id,
      owner: record.owner,
      conversationId: record.conversationId,
      createdAtMs: record.createdAtMs,
      idleTimeoutMs: record.idleTimeoutMs,
      maxLifetimeMs: record.maxLifetimeMs,
      network: record.network,
      env: record.env,
      ...(Object.keys(record.metadata).length > 0 ? { metadata: record.metadata } : {}),
      workspace: record.workspace,
      backend: this.options.backend,
      ...backendIdOf(record),
      status,
      pausedAtMs: record.pausedAtMs,
      ...(status === 'paused' ? { pauseReason: this.reasons.get(record.id), forkedFrom: this.forkedFrom.get(record.id) } : {}),
      stateBytes: record.stateBytes,
      kernels: record.kernels,
    };
  }
}

const labelOf = (k: KernelState) => (k.language === 'python' ? 'Python' : 'JavaScript');
const isReason = (r: unknown): r is PauseReason => r === 'request' || r === 'idle' || r === 'shutdown' || r === 'fork';

/** The backend's id of a live record's sandbox (a record read back from STATE_DIR has none). */
function backendIdOf(record: Facts): { backendId?: string } {
  const sandbox = (record as Partial<SandboxRecord>).sandbox;
  return sandbox ? { backendId: sandbox.id } : {};
}
