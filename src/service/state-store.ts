/**
 * What outlives the service process: under STATE_DIR (0700, the service's own), one directory per sandbox
 * with `meta.json` (who owns it, its conversation, timers, whether it runs, is paused or ended, and why) and,
 * once it was paused, `state.tar` — the snapshot its backend made inside the sandbox. The service stores
 * those bytes and hands them back; it never reads them (unpickling is code execution).
 *
 * Writes are all-or-nothing: a snapshot goes to a temporary file that is synced and renamed only when it is
 * complete, and meta.json is replaced by rename; a refused or failed write leaves what was there before.
 */
import { constants } from 'node:fs';
import { mkdir, open, readFile, readdir, rename, rm, stat, chmod } from 'node:fs/promises';
import { join } from 'node:path';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { KernelState, StateSink } from '../backends/types.js';

/** How a sandbox id looks (the only names read back from STATE_DIR; anything else there is ignored). */
const ID = /^sbx_[0-9a-f]{24}$/;
const META = 'meta.json';
const STATE = 'state.tar';

export type StoredStatus = 'running' | 'paused' | 'ended';

/** A sandbox as STATE_DIR remembers it. */
export interface StoredSandbox {
  readonly version: 1;
  readonly id: string;
  readonly owner: string;
  readonly conversationId: string | null;
  readonly createdAtMs: number;
  readonly idleTimeoutMs: number;
  readonly maxLifetimeMs: number;
  readonly network: boolean;
  readonly env: Readonly<Record<string, string>>;
  readonly metadata?: Readonly<Record<string, string>>;
  readonly workspace: string;
  readonly backend: string;
  /** The backend's id of its live sandbox (a pooled sandbox keeps its own), to take it over after a crash. */
  readonly backendId?: string;
  readonly status: StoredStatus;
  /** When the stored snapshot was taken (null: none), and why (request, idle, shutdown). */
  readonly pausedAtMs: number | null;
  readonly pauseReason?: string;
  /** The sandbox a fork was made from (until the fork is resumed). */
  readonly forkedFrom?: string;
  /** Size of the stored snapshot. */
  readonly stateBytes: number;
  /** What the snapshot's kernels saved and could not save. */
  readonly kernels: readonly KernelState[];
  /** Why and when it ended, for status 'ended'. */
  readonly ended?: { readonly atMs: number; readonly kind: string; readonly message: string };
}

export interface StateStoreOptions {
  readonly dir: string;
  /** STATE_MAX_BYTES: snapshots of all sandboxes together. */
  readonly maxBytes: number;
  /** What one owner's snapshots may hold together. */
  readonly maxBytesPerOwner: number;
  readonly log: (level: 'info' | 'warn' | 'error', message: string) => void;
}

export class StateStore {
  /** Bytes of stored snapshots, in all and per owner, plus the writes in progress. */
  private used = 0;
  private readonly usedBy = new Map<string, number>();
  private readonly sizes = new Map<string, { owner: string; bytes: number }>();

  constructor(private readonly options: StateStoreOptions) {}

  get dir(): string {
    return this.options.dir;
  }

  /** Creates STATE_DIR (0700) and reads back every sandbox it remembers; unreadable entries are skipped. */
  async load(): Promise<StoredSandbox[]> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await chmod(this.dir, 0o700);
    const found: StoredSandbox[] = [];
    for (const name of await readdir(this.dir)) {
      if (!ID.test(name)) continue;
      try {
        const meta = JSON.parse(await readFile(join(this.dir, name, META), 'utf8')) as StoredSandbox;
        if (meta.version !== 1 || meta.id !== name || typeof meta.owner !== 'string') throw new Error('not a sandbox record');
        let bytes = 0;
        if (meta.pausedAtMs !== null) bytes = (await stat(join(this.dir, name, STATE)).catch(() => null))?.size ?? 0;
        this.account(meta.id, meta.owner, bytes);
        found.push(bytes === 0 && meta.pausedAtMs !== null ? { ...meta, pausedAtMs: null, stateBytes: 0 } : meta);
      } catch (err) {
        this.options.log('warn', `STATE_DIR entry ${name} is unreadable and was left alone: ${(err as Error).message}`);
      }
    }
    return found;
  }

  /** Records a sandbox's facts (meta.json), replacing what was there, synced to disk (≈ 1 ms, off the call's path). */
  async put(meta: StoredSandbox): Promise<void> {
    const dir = join(this.dir, meta.id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `${META}.tmp`);
    const file = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    try {
      await file.writeFile(JSON.stringify(meta));
      await file.sync();
    } finally {
      await file.close();
    }
    await rename(tmp, join(dir, META));
    await syncDir(dir);
  }

  /**
   * Stores a new snapshot of `id`, written by `fill` into the sink it is given; the previous one stays until
   * the new one is complete. Refused with STATE_STORAGE_FULL, before a byte is written, when it would pass
   * STATE_MAX_BYTES or the owner's share.
   */
  async write<T>(id: string, owner: string, fill: (sink: StateSink) => Promise<T>): Promise<{ result: T; bytes: number }> {
    const dir = join(this.dir, id);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `${STATE}.tmp`);
    const file = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC, 0o600);
    const previous = this.sizes.get(id)?.bytes ?? 0;
    let reserved = 0;
    let written = 0;
    let tail: Promise<unknown> = Promise.resolve();
    const sink: StateSink = {
      maxBytes: this.options.maxBytes,
      start: (length) => {
        const total = this.used - previous + length;
        const mine = (this.usedBy.get(owner) ?? 0) - previous + length;
        if (total > this.options.maxBytes) {
          throw new ServiceError(
            ErrorCode.STATE_STORAGE_FULL,
            `the sandbox's state is ${length} bytes and STATE_DIR has room for ${Math.max(0, this.options.maxBytes - this.used + previous)} more (STATE_MAX_BYTES); stop paused sandboxes you no longer need`,
          );
        }
        if (mine > this.options.maxBytesPerOwner) {
          throw new ServiceError(
            ErrorCode.STATE_STORAGE_FULL,
            `the sandbox's state is ${length} bytes, and this API key's paused sandboxes may hold ${this.options.maxBytesPerOwner} bytes in all; stop paused sandboxes you no longer need`,
          );
        }
        reserved = length;
        this.used += length;
        this.usedBy.set(owner, (this.usedBy.get(owner) ?? 0) + length);
      },
      write: (chunk) => {
        written += chunk.length;
        const copy = Buffer.from(chunk);
        tail = tail.then(async () => {
          for (let at = 0; at < copy.length;) at += (await file.write(copy, at)).bytesWritten;
        });
        return tail.then(() => undefined);
      },
    };
    try {
      const result = await fill(sink);
      await tail;
      if (written !== reserved) throw new Error(`the state came out as ${written} bytes, not the ${reserved} announced`);
      await file.sync();
      await file.close();
      await rename(tmp, join(dir, STATE));
      await syncDir(dir);
      this.release(reserved, owner);
      this.account(id, owner, written);
      return { result, bytes: written };
    } catch (err) {
      await tail.catch(() => undefined);
      await file.close().catch(() => undefined);
      await rm(tmp, { force: true });
      this.release(reserved, owner);
      throw err;
    }
  }

  /** The stored snapshot of `id`. */
  async read(id: string): Promise<Buffer> {
    return readFile(join(this.dir, id, STATE));
  }

  /** Forgets `id` entirely: its snapshot and its record. */
  async delete(id: string): Promise<void> {
    const had = this.sizes.get(id);
    if (had) this.account(id, had.owner, 0);
    await rm(join(this.dir, id), { recursive: true, force: true });
  }

  /** Drops the snapshot of `id` but keeps its record (an ended sandbox, remembered so callers learn why). */
  async dropState(id: string): Promise<void> {
    const had = this.sizes.get(id);
    if (had) this.account(id, had.owner, 0);
    await rm(join(this.dir, id, STATE), { force: true });
  }

  private account(id: string, owner: string, bytes: number): void {
    const before = this.sizes.get(id);
    if (before) this.release(before.bytes, before.owner);
    if (bytes > 0) {
      this.sizes.set(id, { owner, bytes });
      this.used += bytes;
      this.usedBy.set(owner, (this.usedBy.get(owner) ?? 0) + bytes);
    } else {
      this.sizes.delete(id);
    }
  }

  private release(bytes: number, owner: string): void {
    if (bytes === 0) return;
    this.used -= bytes;
    const left = (this.usedBy.get(owner) ?? 0) - bytes;
    if (left > 0) this.usedBy.set(owner, left);
    else this.usedBy.delete(owner);
  }
}

/** Makes a rename in `dir` durable (a power loss after it keeps the new name). */
async function syncDir(dir: string): Promise<void> {
  const handle = await open(dir, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
