/**
 * The file use cases, written once for every front end (the HTTP routes and the MCP tools; issue 14 moves
 * the others here too). Each takes input already validated by its front end's schema, in the service's
 * terms, and returns a domain result that the front end presents (file-presenters.ts). Whatever differs
 * between front ends is only how they parse and present: naming, URL rewriting and path defaults live here.
 */
import type { DirectoryListing, FileEntry } from '../backends/types.js';
import { linksOf } from './run-presenters.js';
import type { OpenedFile, SandboxRef } from '../service/sandbox-service.js';

export type { OpenedFile } from '../service/sandbox-service.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import { urlFileName } from './file-input.js';
import type { Caller } from './caller.js';

export type { Caller } from './caller.js';

/** A file that was stored in a sandbox. */
export interface StoredFile {
  readonly sandboxId: string;
  /** Absolute path inside the sandbox. */
  readonly path: string;
  readonly size: number;
}

/** A directory listing of a sandbox. */
export interface Listing extends DirectoryListing {
  readonly sandboxId: string;
}

/** Fallback name of a stored file that has none of its own. */
const DEFAULT_NAME = 'upload.bin';

/** The first path given, or a 400 saying what to give. */
export function requirePath(...candidates: Array<string | undefined>): string {
  const path = candidates.find((p) => p !== undefined && p !== '');
  if (!path)
    throw new ServiceError(
      ErrorCode.VALIDATION_FAILED,
      'give remote_path: where the file is in the sandbox (relative paths are inside /workspace)',
    );
  return path;
}

/** Applies DIFY_FILES_URL_REWRITE ("public-prefix=internal-prefix,…") so the service can reach Dify's files. */
export function rewriteFilesUrl(rules: string, url: string): string {
  for (const rule of rules.split(',')) {
    const eq = rule.indexOf('=');
    if (eq <= 0) continue;
    const from = rule.slice(0, eq).trim();
    const to = rule.slice(eq + 1).trim();
    if (from && url.startsWith(from)) return to + url.slice(from.length);
  }
  return url;
}

/**
 * Fetches `url` into the sandbox, after DIFY_FILES_URL_REWRITE: at `target` when given, else under the
 * file's own name (`suggestedName`, e.g. a Dify file object's filename), else the URL's file name.
 */
export async function uploadFromUrl(
  caller: Caller,
  ref: SandboxRef,
  input: { url: string; target?: string; suggestedName?: string },
): Promise<StoredFile> {
  const url = rewriteFilesUrl(caller.config.DIFY_FILES_URL_REWRITE, input.url);
  const name = input.target || input.suggestedName || urlFileName(url) || DEFAULT_NAME;
  const w = await caller.service.files.uploadFromUrl(caller.owner, ref, url, name);
  return { sandboxId: w.sandbox.id, path: w.path, size: w.size };
}

/** Writes bytes at `path`. */
export async function writeFile(caller: Caller, ref: SandboxRef, input: { path: string; data: Uint8Array }): Promise<StoredFile> {
  const w = await caller.service.files.write(caller.owner, ref, input.path, input.data);
  return { sandboxId: w.sandbox.id, path: w.path, size: w.size };
}

/** Lists a directory (default: the workspace), optionally recursively, up to 10,000 entries. */
export async function listFiles(caller: Caller, ref: SandboxRef, input: { path?: string; recursive?: boolean }): Promise<Listing> {
  const { sandbox, listing } = await caller.service.files.list(caller.owner, ref, input.path ?? '.', input.recursive ?? false);
  return { sandboxId: sandbox.id, ...listing };
}

/** A file of the sandbox (not a directory) and its signed download link. */
export async function fileLink(
  caller: Caller,
  ref: SandboxRef,
  path: string,
): Promise<{ sandboxId: string; entry: FileEntry; url: string }> {
  const { sandbox, entry } = await caller.service.files.stat(caller.owner, ref, path);
  if (entry.type === 'directory') throw new ServiceError(ErrorCode.IS_A_DIRECTORY, `${entry.path} is a directory, not a file`);
  const url = linksOf(caller, sandbox)(entry.path);
  return { sandboxId: sandbox.id, entry, url };
}

/** Opens a file of the caller's sandbox, to send it as it comes out. */
export function openFile(caller: Caller, ref: SandboxRef, path: string): Promise<OpenedFile> {
  return caller.service.files.open(caller.owner, ref, path);
}

/**
 * Opens a file through a signed link (`exp` and `sig` of a URL the service handed out): no API key, the
 * signature stands in for it; 403 when it does not hold for this sandbox and path, or has expired.
 */
export function openFileByLink(caller: Caller, sandboxId: string, path: string, link: { exp?: string; sig?: string }): Promise<OpenedFile> {
  caller.service.links.check(sandboxId, path, link.exp, link.sig);
  return caller.service.files.openBySignature(sandboxId, path);
}

/** A file's bytes, whole, refused with FILE_TOO_LARGE past `maxBytes`: for answers that carry the file itself. */
export function readFile(caller: Caller, ref: SandboxRef, path: string, maxBytes: number): Promise<{ path: string; data: Buffer }> {
  return caller.service.files.read(caller.owner, ref, path, maxBytes);
}
