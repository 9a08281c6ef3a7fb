/**
 * The live sandboxes of one service instance: by id, by (owner, conversation), the creations in flight per
 * conversation (so two first calls of a conversation share one sandbox), and tombstones of the ones that
 * ended, so a later call is told why its sandbox is gone instead of a bare "not found".
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { Config } from '../config.js';
import type { SandboxHandle, SandboxInfo, SandboxRecord } from './types.js';

const TOMBSTONES_KEPT = 10_000;

interface Tombstone {
  readonly owner: string;
  readonly message: string;
}

const conversationKey = (owner: string, conversationId: string) => `${owner}\0${conversationId}`;

export class SandboxRegistry {
  private readonly records = new Map<string, SandboxRecord>();
  private readonly byConversation = new Map<string, string>();
  private readonly creating = new Map<string, Promise<SandboxRecord>>();
  private readonly tombstones = new Map<string, Tombstone>();
  /** The last sandbox of each conversation that ended, and why (told to the sandbox that replaces it). */
  private readonly endedConversations = new Map<string, { id: string; message: string }>();

  get size(): number {
    return this.records.size;
  }

  all(): SandboxRecord[] {
    return [...this.records.values()];
  }

  /** Paused sandboxes of `owner`. */
  pausedCount(owner: string): number {
    let n = 0;
    for (const r of this.records.values()) if (r.sandbox === null && r.owner === owner) n++;
    return n;
  }

  /** Sandboxes with processes (not paused), of `owner` or of everyone. */
  liveCount(owner?: string): number {
    let n = 0;
    for (const r of this.records.values()) if (r.sandbox !== null && (owner === undefined || r.owner === owner)) n++;
    return n;
  }

  /** The record of `id`, whoever owns it. */
  peek(id: string): SandboxRecord | undefined {
    return this.records.get(id);
  }

  /** Whether `record` is still the live one of its id (not stopped, expired or replaced). */
  isLive(record: SandboxRecord): boolean {
    return this.records.get(record.id) === record;
  }

  /** `owner`'s sandbox `id`, or a 404 that says why it is gone when it was. */
  get(owner: string, id: string): SandboxRecord {
    const record = this.records.get(id);
    if (record && record.owner === owner) return record;
    const tomb = this.tombstones.get(id);
    if (tomb && tomb.owner === owner) throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, tomb.message);
    throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `sandbox '${id}' not found; create one with /create_sandbox`);
  }

  ofConversation(owner: string, conversationId: string): SandboxRecord | undefined {
    const id = this.byConversation.get(conversationKey(owner, conversationId));
    const record = id ? this.records.get(id) : undefined;
    return record && record.owner === owner ? record : undefined;
  }

  add(record: SandboxRecord): void {
    this.records.set(record.id, record);
    if (record.conversationId) this.byConversation.set(conversationKey(record.owner, record.conversationId), record.id);
  }

  /** Forgets `record`; false when it was not the live one. A `message` leaves a tombstone saying why it ended. */
  delete(record: SandboxRecord, message?: string): boolean {
    if (!this.isLive(record)) return false;
    this.records.delete(record.id);
    if (record.conversationId) {
      const key = conversationKey(record.owner, record.conversationId);
      if (this.byConversation.get(key) === record.id) this.byConversation.delete(key);
    }
    if (message !== undefined) this.tombstone(record.id, record.owner, record.conversationId, message);
    return true;
  }

  /** Remembers that sandbox `id` ended and why, for it and for its conversation. */
  tombstone(id: string, owner: string, conversationId: string | null, message: string): void {
    this.tombstones.set(id, { owner, message });
    if (this.tombstones.size > TOMBSTONES_KEPT) this.tombstones.delete(this.tombstones.keys().next().value!);
    if (conversationId !== null) {
      const key = conversationKey(owner, conversationId);
      this.endedConversations.delete(key);
      this.endedConversations.set(key, { id, message });
      if (this.endedConversations.size > TOMBSTONES_KEPT) this.endedConversations.delete(this.endedConversations.keys().next().value!);
    }
  }

  /** The conversation's last sandbox that ended, and why; forgotten once asked (its replacement was told). */
  takeEndedConversation(owner: string, conversationId: string): { id: string; message: string } | undefined {
    const key = conversationKey(owner, conversationId);
    const ended = this.endedConversations.get(key);
    this.endedConversations.delete(key);
    return ended;
  }

  hasTombstone(id: string): boolean {
    return this.tombstones.has(id);
  }

  /** Why sandbox `id` ended, when this instance ended it. */
  endedBecause(id: string): string | undefined {
    return this.tombstones.get(id)?.message;
  }

  /** Runs `create` once per conversation at a time: concurrent first calls of a conversation share its result. */
  once(owner: string, conversationId: string | undefined, create: () => Promise<SandboxRecord>): Promise<SandboxRecord> {
    if (!conversationId) return create();
    const key = conversationKey(owner, conversationId);
    const inFlight = this.creating.get(key);
    if (inFlight) return inFlight;
    const promise = create();
    this.creating.set(key, promise);
    promise.finally(() => this.creating.delete(key)).catch(() => undefined);
    return promise;
  }

  /** Settles when every creation in flight has. */
  async creationsSettled(): Promise<void> {
    await Promise.allSettled([...this.creating.values()]);
  }
}

/** What front ends may hold of a sandbox: its id and where its files are. */
export function handleOf(record: SandboxRecord): SandboxHandle {
  return { id: record.id, workspace: record.workspace };
}

/** The facts of a sandbox as front ends see them. */
export function infoOf(config: Pick<Config, 'PAUSED_RETENTION_S'>, backend: string, record: SandboxRecord): SandboxInfo {
  const paused = record.sandbox === null;
  const lifetimeEnd = record.createdAtMs + record.maxLifetimeMs;
  const retentionEnd = (record.pausedAtMs ?? 0) + config.PAUSED_RETENTION_S * 1000;
  const idleEnd = record.lastUsedAtMs + record.idleTimeoutMs;
  return {
    id: record.id,
    status: paused ? 'paused' : 'running',
    pausedAt: record.pausedAtMs === null ? null : new Date(record.pausedAtMs),
    stateBytes: record.stateBytes,
    backend,
    conversationId: record.conversationId,
    createdAt: new Date(record.createdAtMs),
    lastUsedAt: new Date(record.lastUsedAtMs),
    expiresAt: new Date(paused ? Math.min(lifetimeEnd, retentionEnd) : Math.min(lifetimeEnd, idleEnd)),
    idleTimeoutS: record.idleTimeoutMs / 1000,
    maxLifetimeS: record.maxLifetimeMs / 1000,
    workspace: record.workspace,
    network: record.network,
    metadata: record.metadata,
  };
}
