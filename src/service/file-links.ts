/**
 * Signed, expiring file links, in one place — how they are built, and how one is checked:
 * `{base}/files/{sandbox id}/{path in the workspace}?exp=<unix s>&sig=<HMAC-SHA256>`. A browser, a Dify
 * Answer node or Dify's HTTP node can fetch one without the API key; the signature binds the sandbox, the
 * path and the expiry, so it cannot be moved to another file or kept alive.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { posix } from 'node:path';
import { ServiceError, ErrorCode } from '../core/errors.js';

export interface FileLinks {
  /** The absolute signed URL of `path` (absolute inside the sandbox, under `workspace`), valid for FILE_URL_TTL_S. */
  url(base: string, sandboxId: string, workspace: string, path: string): string;
  /** Checks the `exp` and `sig` of a link to `path` (relative to the workspace, as in the URL); 403 when they do not hold. */
  check(sandboxId: string, path: string, exp: string | undefined, sig: string | undefined): void;
}

/** URL-encodes each segment of a sandbox path for /files/{id}/{path}. */
function encodePath(path: string): string {
  return path.replace(/^\/+/, '').split('/').map(encodeURIComponent).join('/');
}

/** Links signed with `key` (URL_SIGNING_KEY; random when empty, so that they die with the process). */
export function createFileLinks(key: string, ttlS: number, now: () => number = Date.now): FileLinks {
  const secret = key ? Buffer.from(key, 'utf8') : randomBytes(32);
  const mac = (sandboxId: string, path: string, exp: number) =>
    createHmac('sha256', secret).update(`${sandboxId}\n${path}\n${exp}`).digest('base64url');
  return {
    url(base, sandboxId, workspace, path) {
      const rel = posix.relative(workspace, path);
      const exp = Math.floor(now() / 1000) + Math.ceil(ttlS);
      return `${base}/files/${encodeURIComponent(sandboxId)}/${encodePath(rel)}?exp=${exp}&sig=${mac(sandboxId, rel, exp)}`;
    },
    check(sandboxId, path, exp, sig) {
      const invalid = () =>
        new ServiceError(
          ErrorCode.URL_SIGNATURE_INVALID,
          "this file link's signature is not valid for this file; use the URL exactly as the service gave it",
        );
      if (!exp || !sig || !/^\d{1,12}$/.test(exp)) throw invalid();
      const expected = Buffer.from(mac(sandboxId, path, Number(exp)));
      const given = Buffer.from(sig);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) throw invalid();
      if (Number(exp) * 1000 < now()) {
        throw new ServiceError(
          ErrorCode.URL_SIGNATURE_INVALID,
          'this file link has expired; ask /download_file (or run the code again) for a fresh one',
        );
      }
    },
  };
}
