/**
 * SandboxService: the registry of live sandboxes and everything around them that is not a backend's
 * business — ids, owners, the conversation map, idle and lifetime expiry (the reaper), the live-sandbox
 * cap, timeouts, one call at a time per sandbox. It talks only to a SandboxBackend.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { FileEntry, RunCommandResult, Sandbox, SandboxBackend } from '../backends/types.js';
import { createFileLinks, type FileLinks } from './file-links.js';
import { runtimeOf } from './languages.js';
import { fetchFileUrl } from './fetch-url.js';
import { FairQueue } from './fair-queue.js';
import { checkEnv, checkText } from './input-checks.js';
import { Quotas } from './quotas.js';
import type { CreateInput, RunCodeInput, RunCommandInput, RunOutcome, SandboxInfo, SandboxRecord, SandboxRef } from './types.js';

export type { CreateInput, RunCodeInput, RunCommandInput, RunOutcome, SandboxInfo, SandboxRecord, SandboxRef } from './types.js';
export { CODE_NODE_OWNER } from './quotas.js';

interface Tombstone {
  readonly owner: string;
  readonly message: string;
}

const TOMBSTONES_KEPT = 10_000;

const REAP_INTERVAL_MS = 1_000;
/** Downloads through signed links of one sandbox at once. */
const LINK_DOWNLOADS_PER_SANDBOX = 2;

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
  private readonly config: Config;
  private readonly now: () => number;
  private readonly log: NonNullable<ServiceOptions['log']>;
  private readonly records = new Map<string, SandboxRecord>();
  private readonly byConversation = new Map<string, string>();
  private readonly creating = new Map<string, Promise<SandboxRecord>>();
  private readonly tombstones = new Map<string, Tombstone>();
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
      (owner) => {
        let n = 0;
        for (const r of this.records.values()) if (r.owner === owner) n++;
        return n;
      },
      () => this.records.size,
    );
  }

  /** Starts the reaper. */
  start(): void {
    this.reaper ??= setInterval(() => void this.reap(), REAP_INTERVAL_MS);
    this.reaper.unref();
  }

  get size(): number {
    return this.records.size;
  }

  async create(owner: string, input: CreateInput): Promise<{ info: SandboxInfo; reused: boolean }> {
    checkEnv('env', input.env);
    if (input.conversationId) {
      const existing = this.conversationRecord(owner, input.conversationId);
      if (existing) return { info: this.info(existing), reused: true };
    }
    const record = await this.createRecord(owner, input);
    return { info: this.info(record), reused: false };
  }

  /** Finds the sandbox a request names; a conversation without one gets one when `createMissing`. */
  async resolve(owner: string, ref: SandboxRef, createMissing = true): Promise<SandboxRecord> {
    if (ref.sandboxId)
      return this.records.get(ref.sandboxId)?.owner === owner ? this.get(owner, ref.sandboxId) : this.getOrAttach(owner, ref.sandboxId);
    if (ref.conversationId) {
      const existing = this.conversationRecord(owner, ref.conversationId);
      if (existing) return existing;
      if (!createMissing) throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `conversation '${ref.conversationId}' has no live sandbox`);
      return this.createRecord(owner, { conversationId: ref.conversationId });
    }
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give sandbox_id (from /create_sandbox) or conversation_id');
  }

  info(record: SandboxRecord): SandboxInfo {
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
    return [...this.records.values()].filter((r) => r.owner === owner).map((r) => this.info(r));
  }

  async runCode(owner: string, ref: SandboxRef, input: RunCodeInput): Promise<RunOutcome> {
    const runtime = runtimeOf(input.language);
    const timeoutMs = this.timeoutMs(input.timeoutS);
    if (runtime === 'shell') checkText('code', input.code);
    const record = await this.resolve(owner, ref);
    if (runtime === 'shell') {
      const result = await this.exclusive(record, () =>
        record.sandbox.runCommand({ command: input.code, timeoutMs, onOutput: input.onOutput }),
      );
      return { record, runtime, result };
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
    return { record, runtime, result };
  }

  async runCommand(owner: string, ref: SandboxRef, input: RunCommandInput): Promise<{ record: SandboxRecord; result: RunCommandResult }> {
    const timeoutMs = this.timeoutMs(input.timeoutS);
    checkText('command', input.command);
    checkText('cwd', input.cwd);
    checkEnv('env', input.env);
    const record = await this.resolve(owner, ref);
    const result = await this.exclusive(record, () =>
      record.sandbox.runCommand({ command: input.command, timeoutMs, cwd: input.cwd, env: input.env, onOutput: input.onOutput }),
    );
    return { record, result };
  }

  async writeFile(
    owner: string,
    ref: SandboxRef,
    path: string,
    data: Uint8Array,
  ): Promise<{ record: SandboxRecord; path: string; size: number }> {
    checkText('remote_path', path);
    if (data.length > this.config.MAX_FILE_BYTES) {
      throw new ServiceError(
        ErrorCode.FILE_TOO_LARGE,
        `content is ${data.length} bytes, more than the ${this.config.MAX_FILE_BYTES}-byte limit (MAX_FILE_BYTES)`,
      );
    }
    const record = await this.resolve(owner, ref);
    const written = await this.exclusive(record, () => record.sandbox.files.write(path, data));
    return { record, ...written };
  }

  async uploadFromUrl(
    owner: string,
    ref: SandboxRef,
    fileUrl: string,
    path: string,
  ): Promise<{ record: SandboxRecord; path: string; size: number }> {
    checkText('remote_path', path);
    const record = await this.resolve(owner, ref);
    // A fetched file is held whole until it is written: a key may have only a few fetches going at once.
    this.quotas.takeFetch(owner);
    let data: Buffer;
    try {
      ({ data } = await fetchFileUrl(fileUrl, {
        maxBytes: this.config.MAX_FILE_BYTES,
        timeoutMs: this.config.UPLOAD_TIMEOUT_S * 1000,
        policy: this.config.outbound,
      }));
      const written = await this.exclusive(record, () => record.sandbox.files.write(path, data));
      return { record, ...written };
    } finally {
      this.quotas.fetches.give(owner);
    }
  }

  /** A file's bytes, whole; refused with FILE_TOO_LARGE past `maxBytes` (default MAX_FILE_BYTES). */
  async readFile(
    owner: string,
    ref: SandboxRef,
    path: string,
    maxBytes = this.config.MAX_FILE_BYTES,
  ): Promise<{ record: SandboxRecord; path: string; data: Buffer }> {
    checkText('remote_path', path);
    const record = await this.resolve(owner, ref, false);
    const read = await this.exclusive(record, () => record.sandbox.files.read(path, Math.min(maxBytes, this.config.MAX_FILE_BYTES)));
    return { record, ...read };
  }

  /**
   * A file to send as it comes out of the sandbox (backends that stream; the others read it whole): the
   * sandbox stays busy with it, for other calls, until all of it came out — not until the client took it.
   */
  async openFile(owner: string, ref: SandboxRef, path: string): Promise<{ path: string; size: number; body: Readable }> {
    const record = await this.resolve(owner, ref, false);
    return this.openIn(record, record.sandbox, path);
  }

  /** openFile for a signed URL: the signature, checked by the caller, stands in for the owner's key. */
  async openFileBySignature(sandboxId: string, path: string): Promise<{ path: string; size: number; body: Readable }> {
    const record = this.records.get(sandboxId);
    if (!record && this.backend.attach) {
      const sandbox = await this.backend.attach(sandboxId, null);
      if (sandbox) return this.openIn(null, sandbox, path);
    }
    if (!record) {
      throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, this.tombstones.get(sandboxId)?.message ?? `sandbox '${sandboxId}' not found`);
    }
    // A link is a bearer token that may have been passed around: its holders may keep at most a few of the
    // sandbox's turns busy (each download holds the sandbox until its bytes are out, or its client stalls).
    if (record.linkDownloads >= LINK_DOWNLOADS_PER_SANDBOX) {
      throw new ServiceError(
        ErrorCode.CALL_LIMIT_REACHED,
        `${record.linkDownloads} downloads of this sandbox's files through links are in progress; retry when they are done`,
        { headers: { 'retry-after': '2' } },
      );
    }
    record.linkDownloads++;
    const done = () => {
      record.linkDownloads--;
    };
    try {
      const file = await this.openIn(record, record.sandbox, path);
      file.body.once('close', done);
      return file;
    } catch (err) {
      done();
      throw err;
    }
  }

  private openIn(record: SandboxRecord | null, sandbox: Sandbox, path: string): Promise<{ path: string; size: number; body: Readable }> {
    checkText('path', path);
    const max = this.config.MAX_FILE_BYTES;
    const read = async () => {
      const { path: real, data } = await sandbox.files.read(path, max);
      return { path: real, size: data.length, body: Readable.from([data]), received: Promise.resolve() };
    };
    const open = () => (sandbox.files.open ? sandbox.files.open(path, max) : read());
    if (!record) return open();
    return new Promise((resolve, reject) => {
      this.exclusive(record, async () => {
        const file = await open();
        resolve(file);
        await file.received.catch(() => undefined);
      }).catch(reject);
    });
  }

  async statFile(owner: string, ref: SandboxRef, path: string): Promise<{ record: SandboxRecord; entry: FileEntry }> {
    checkText('remote_path', path);
    const record = await this.resolve(owner, ref, false);
    const entry = await this.exclusive(record, () => record.sandbox.files.stat(path));
    return { record, entry };
  }

  async listFiles(owner: string, ref: SandboxRef, path: string, recursive: boolean) {
    checkText('path', path);
    const record = await this.resolve(owner, ref);
    const listing = await this.exclusive(record, () => record.sandbox.files.list(path, { recursive, limit: 10_000 }));
    return { record, listing };
  }

  /** Stops a sandbox: 'not_found' when there is none of that id for this owner. */
  async stop(owner: string, sandboxId: string): Promise<'stopped' | 'not_found'> {
    let record = this.records.get(sandboxId);
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
    await Promise.allSettled([...this.creating.values()]);
    if (!this.backend.shared) await Promise.all([...this.records.values()].map((r) => this.remove(r, 'stopped', 'the service shut down')));
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
    for (const r of [...this.records.values()]) {
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
    if (this.backend.attach && !this.tombstones.has(id)) {
      const sandbox = await this.backend.attach(id, owner);
      if (sandbox) {
        const existing = this.records.get(id);
        if (existing && existing.owner === owner) return existing;
        return this.register(sandbox, owner, {});
      }
    }
    return this.get(owner, id);
  }

  private get(owner: string, id: string): SandboxRecord {
    const record = this.records.get(id);
    if (record && record.owner === owner) return record;
    const tomb = this.tombstones.get(id);
    if (tomb && tomb.owner === owner) throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, tomb.message);
    throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `sandbox '${id}' not found; create one with /create_sandbox`);
  }

  /** The id of a conversation's live sandbox, if it has one. */
  conversationSandbox(owner: string, conversationId: string): string | undefined {
    return this.conversationRecord(owner, conversationId)?.id;
  }

  private conversationRecord(owner: string, conversationId: string): SandboxRecord | undefined {
    const id = this.byConversation.get(`${owner}\0${conversationId}`);
    const record = id ? this.records.get(id) : undefined;
    return record && record.owner === owner ? record : undefined;
  }

  private async createRecord(owner: string, input: CreateInput): Promise<SandboxRecord> {
    const key = input.conversationId ? `${owner}\0${input.conversationId}` : null;
    const inFlight = key ? this.creating.get(key) : undefined;
    if (inFlight) return inFlight;
    const promise = this.doCreate(owner, input);
    if (key) {
      this.creating.set(key, promise);
      promise.finally(() => this.creating.delete(key)).catch(() => undefined);
    }
    return promise;
  }

  private async doCreate(owner: string, input: CreateInput): Promise<SandboxRecord> {
    if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the service is shutting down');
    this.quotas.checkCreate(owner);
    const maxLifetimeS = input.maxLifetimeS ?? this.config.SANDBOX_MAX_LIFETIME_S;
    const idleTimeoutS = input.idleTimeoutS ?? this.config.SANDBOX_IDLE_TIMEOUT_S;
    if (maxLifetimeS > this.config.SANDBOX_MAX_LIFETIME_S) {
      throw new ServiceError(
        ErrorCode.VALIDATION_FAILED,
        `max_lifetime_seconds may be at most ${this.config.SANDBOX_MAX_LIFETIME_S} (SANDBOX_MAX_LIFETIME_S)`,
      );
    }
    if (idleTimeoutS > this.config.SANDBOX_MAX_LIFETIME_S) {
      throw new ServiceError(
        ErrorCode.VALIDATION_FAILED,
        `idle_timeout_seconds may be at most ${this.config.SANDBOX_MAX_LIFETIME_S} (SANDBOX_MAX_LIFETIME_S)`,
      );
    }
    const network = input.network === true;
    if (network && !this.config.SANDBOX_NETWORK_ALLOWED) {
      throw new ServiceError(
        ErrorCode.NETWORK_NOT_ALLOWED,
        'this service does not give sandboxes network access (SANDBOX_NETWORK_ALLOWED=false); create the sandbox without network',
      );
    }
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
    this.records.set(id, record);
    if (input.conversationId) this.byConversation.set(`${owner}\0${input.conversationId}`, id);
    sandbox.onExit((reason) => {
      this.log('warn', `sandbox ${id} ended by itself: ${reason}`);
      void this.remove(record, 'lost', `sandbox '${id}' is gone: ${reason}; create a new one`);
    });
    this.log('info', `sandbox ${id} ${input.conversationId ? 'created for a conversation' : 'ready'}`);
    return record;
  }

  private async remove(record: SandboxRecord, kind: 'stopped' | 'expired' | 'lost', message: string): Promise<void> {
    if (this.records.get(record.id) !== record) return;
    this.records.delete(record.id);
    if (record.conversationId) {
      const key = `${record.owner}\0${record.conversationId}`;
      if (this.byConversation.get(key) === record.id) this.byConversation.delete(key);
    }
    if (this.backend.shared && kind !== 'stopped') {
      // Others may serve this sandbox; its backend ends it on its own schedule. Only forget it here.
      this.log('info', `sandbox ${record.id} forgotten by this instance (${kind})`);
      return;
    }
    this.tombstones.set(record.id, { owner: record.owner, message });
    if (this.tombstones.size > TOMBSTONES_KEPT) this.tombstones.delete(this.tombstones.keys().next().value!);
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
        if (this.records.get(record.id) !== record && !this.backend.shared) {
          // Stopped or expired while this call waited its turn.
          throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, this.tombstones.get(record.id)?.message ?? `sandbox '${record.id}' is gone`);
        }
        return await fn();
      } catch (err) {
        // The backend says the sandbox is gone (another instance stopped it, AgentCube expired it, its
        // processes died): stop remembering it, so later calls get the plain not-found answer.
        if (err instanceof ServiceError && (err.code === ErrorCode.SANDBOX_NOT_FOUND || err.code === ErrorCode.SANDBOX_LOST)) {
          const tomb = this.records.get(record.id) === record ? undefined : this.tombstones.get(record.id);
          if (tomb && err.code === ErrorCode.SANDBOX_LOST) {
            // Ended under this call by the service itself (its lifetime, its CPU budget, a stop): say why.
            throw new ServiceError(ErrorCode.SANDBOX_LOST, `the call was ended: ${tomb.message}`, { cause: err });
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

  private timeoutMs(timeoutS: number | undefined): number {
    const s = timeoutS ?? this.config.EXEC_TIMEOUT_S;
    if (!(s > 0) || s > this.config.EXEC_MAX_TIMEOUT_S) {
      throw new ServiceError(
        ErrorCode.VALIDATION_FAILED,
        `timeout must be more than 0 and at most ${this.config.EXEC_MAX_TIMEOUT_S} seconds (EXEC_MAX_TIMEOUT_S)`,
      );
    }
    return Math.round(s * 1000);
  }
}
