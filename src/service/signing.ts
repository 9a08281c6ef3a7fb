/**
 * Signed, expiring file URLs: /files/{id}/{path}?exp=<unix s>&sig=<HMAC-SHA256>. A browser, a Dify Answer
 * node or Dify's HTTP node can fetch them without the API key; the signature binds the sandbox, the path and
 * the expiry, so it cannot be moved to another file or kept alive.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export type Verdict = 'ok' | 'expired' | 'invalid';

export interface UrlSigner {
  /** Query parameters that make /files/{sandboxId}/{path} fetchable without a key until `ttl` runs out. */
  sign(sandboxId: string, path: string): { exp: number; sig: string };
  verify(sandboxId: string, path: string, exp: string | undefined, sig: string | undefined): Verdict;
}

export function createUrlSigner(key: string, ttlS: number, now: () => number = Date.now): UrlSigner {
  const secret = key ? Buffer.from(key, 'utf8') : randomBytes(32);
  const mac = (sandboxId: string, path: string, exp: number) =>
    createHmac('sha256', secret).update(`${sandboxId}\n${path}\n${exp}`).digest('base64url');
  return {
    sign(sandboxId, path) {
      const exp = Math.floor(now() / 1000) + Math.ceil(ttlS);
      return { exp, sig: mac(sandboxId, path, exp) };
    },
    verify(sandboxId, path, exp, sig) {
      if (!exp || !sig || !/^\d{1,12}$/.test(exp)) return 'invalid';
      const expected = Buffer.from(mac(sandboxId, path, Number(exp)));
      const given = Buffer.from(sig);
      if (given.length !== expected.length || !timingSafeEqual(given, expected)) return 'invalid';
      return Number(exp) * 1000 < now() ? 'expired' : 'ok';
    },
  };
}
