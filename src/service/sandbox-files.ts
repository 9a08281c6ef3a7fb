/**
 * The file use cases of the service: write, fetch from a URL, read, open to stream, stat, list — each in
 * its sandbox's turn (one call at a time per sandbox), with the service's limits. Downloads through signed
 * links come here too: the signature, checked by the caller, stands in for the owner's key.
 */
import { Readable } from 'node:stream';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { DirectoryListing, FileEntry, Sandbox, SandboxBackend } from '../backends/types.js';
import { fetchFileUrl } from './fetch-url.js';
import { checkText } from './input-checks.js';
import type { Quotas } from './quotas.js';
import { handleOf, type SandboxRegistry } from './registry.js';
import type { SandboxHandle, SandboxRecord, SandboxRef } from './types.js';

/** Downloads through signed links of one sandbox at once. */
const LINK_DOWNLOADS_PER_SANDBOX = 2;

/** A file to send as it comes out of the sandbox. */
export interface OpenedFile {
  readonly path: string;
  readonly size: number;
  readonly body: Readable;
}

/** What the file use cases need of the service: finding a sandbox, and its turn. */
export interface SandboxAccess {
  readonly config: Config;
  readonly backend: SandboxBackend;
  readonly registry: SandboxRegistry;
  readonly quotas: Quotas;
  resolve(owner: string, ref: SandboxRef, createMissing: boolean): Promise<SandboxRecord>;
  /** Runs `fn` on the sandbox in its turn, resuming it first when it is paused. */
  exclusive<T>(record: SandboxRecord, fn: (sandbox: Sandbox) => Promise<T>): Promise<T>;
}

export class SandboxFiles {
  constructor(private readonly access: SandboxAccess) {}

  private get config(): Config {
    return this.access.config;
  }

  async write(
    owner: string,
    ref: SandboxRef,
    path: string,
    data: Uint8Array,
  ): Promise<{ sandbox: SandboxHandle; path: string; size: number }> {
    checkText('remote_path', path);
    if (data.length > this.config.MAX_FILE_BYTES) {
      throw new ServiceError(
        ErrorCode.FILE_TOO_LARGE,
        `content is ${data.length} bytes, more than the ${this.config.MAX_FILE_BYTES}-byte limit (MAX_FILE_BYTES)`,
      );
    }
    const record = await this.access.resolve(owner, ref, true);
    const written = await this.access.exclusive(record, (s) => s.files.write(path, data));
    return { sandbox: handleOf(record), ...written };
  }

  async uploadFromUrl(
    owner: string,
    ref: SandboxRef,
    fileUrl: string,
    path: string,
  ): Promise<{ sandbox: SandboxHandle; path: string; size: number }> {
    checkText('remote_path', path);
    const record = await this.access.resolve(owner, ref, true);
    // A fetched file is held whole until it is written: a key may have only a few fetches going at once.
    this.access.quotas.takeFetch(owner);
    try {
      const { data } = await fetchFileUrl(fileUrl, {
        maxBytes: this.config.MAX_FILE_BYTES,
        timeoutMs: this.config.UPLOAD_TIMEOUT_S * 1000,
        policy: this.config.outbound,
      });
      const written = await this.access.exclusive(record, (s) => s.files.write(path, data));
      return { sandbox: handleOf(record), ...written };
    } finally {
      this.access.quotas.fetches.give(owner);
    }
  }

  /** A file's bytes, whole; refused with FILE_TOO_LARGE past `maxBytes` (default MAX_FILE_BYTES). */
  async read(owner: string, ref: SandboxRef, path: string, maxBytes = this.config.MAX_FILE_BYTES): Promise<{ path: string; data: Buffer }> {
    checkText('remote_path', path);
    const record = await this.access.resolve(owner, ref, false);
    return this.access.exclusive(record, (s) => s.files.read(path, Math.min(maxBytes, this.config.MAX_FILE_BYTES)));
  }

  /**
   * A file to send as it comes out of the sandbox (backends that stream; the others read it whole): the
   * sandbox stays busy with it, for other calls, until all of it came out — not until the client took it.
   */
  async open(owner: string, ref: SandboxRef, path: string): Promise<OpenedFile> {
    const record = await this.access.resolve(owner, ref, false);
    return this.openIn(record, path);
  }

  /** open() for a signed URL: the signature, checked by the caller, stands in for the owner's key. */
  async openBySignature(sandboxId: string, path: string): Promise<OpenedFile> {
    const { registry, backend } = this.access;
    const record = registry.peek(sandboxId);
    if (!record && backend.attach) {
      const sandbox = await backend.attach(sandboxId, null);
      if (sandbox) return this.openFrom(sandbox, path);
    }
    if (!record) {
      throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, registry.endedBecause(sandboxId) ?? `sandbox '${sandboxId}' not found`);
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
      const file = await this.openIn(record, path);
      file.body.once('close', done);
      return file;
    } catch (err) {
      done();
      throw err;
    }
  }

  /** Opens the file in the sandbox's turn, which lasts until all of it came out. */
  private openIn(record: SandboxRecord, path: string): Promise<OpenedFile> {
    checkText('path', path);
    return new Promise((resolve, reject) => {
      this.access
        .exclusive(record, async (sandbox) => {
          const file = await this.openFrom(sandbox, path);
          resolve(file);
          await file.received.catch(() => undefined);
        })
        .catch(reject);
    });
  }

  /** Opens a file of `sandbox` (streamed where the backend can, else read whole). */
  private async openFrom(sandbox: Sandbox, path: string): Promise<OpenedFile & { received: Promise<void> }> {
    checkText('path', path);
    const max = this.config.MAX_FILE_BYTES;
    if (sandbox.files.open) return sandbox.files.open(path, max);
    const { path: real, data } = await sandbox.files.read(path, max);
    return { path: real, size: data.length, body: Readable.from([data]), received: Promise.resolve() };
  }

  async stat(owner: string, ref: SandboxRef, path: string, follow = true): Promise<{ sandbox: SandboxHandle; entry: FileEntry }> {
    checkText('remote_path', path);
    const record = await this.access.resolve(owner, ref, false);
    const entry = await this.access.exclusive(record, (s) => s.files.stat(path, { follow }));
    return { sandbox: handleOf(record), entry };
  }

  async list(
    owner: string,
    ref: SandboxRef,
    path: string,
    recursive: boolean,
    depth = 0,
  ): Promise<{ sandbox: SandboxHandle; listing: DirectoryListing }> {
    checkText('path', path);
    if (!Number.isInteger(depth) || depth < 0 || depth > 100) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'depth must be 0 to 100');
    const record = await this.access.resolve(owner, ref, true);
    const listing = await this.access.exclusive(record, (s) => s.files.list(path, { recursive, limit: 10_000, depth }));
    return { sandbox: handleOf(record), listing };
  }

  /** Creates a directory and its parents; `created` is false when it was there already. */
  async mkdir(owner: string, ref: SandboxRef, path: string): Promise<{ sandbox: SandboxHandle; entry: FileEntry; created: boolean }> {
    checkText('path', path);
    const record = await this.access.resolve(owner, ref, true);
    const made = await this.access.exclusive(record, (s) => fileOp(s.files.mkdir?.bind(s.files), 'mkdir')(path));
    return { sandbox: handleOf(record), ...made };
  }

  /** Renames a file or directory inside the sandbox. */
  async move(owner: string, ref: SandboxRef, source: string, destination: string): Promise<{ sandbox: SandboxHandle; entry: FileEntry }> {
    checkText('source', source);
    checkText('destination', destination);
    const record = await this.access.resolve(owner, ref, false);
    const entry = await this.access.exclusive(record, (s) => fileOp(s.files.move?.bind(s.files), 'move')(source, destination));
    return { sandbox: handleOf(record), entry };
  }

  /** Removes a file, a symlink or a directory with everything in it. */
  async remove(owner: string, ref: SandboxRef, path: string): Promise<{ sandbox: SandboxHandle }> {
    checkText('path', path);
    const record = await this.access.resolve(owner, ref, false);
    await this.access.exclusive(record, (s) => fileOp(s.files.remove?.bind(s.files), 'remove')(path));
    return { sandbox: handleOf(record) };
  }
}

/** An optional file operation of the backend, or NOT_SUPPORTED naming it. */
function fileOp<F extends (...args: never[]) => unknown>(fn: F | undefined, name: string): F {
  if (!fn) throw new ServiceError(ErrorCode.NOT_SUPPORTED, `this backend cannot ${name} files`);
  return fn;
}
