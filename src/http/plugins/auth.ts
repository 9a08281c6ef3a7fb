/**
 * API-key authentication: `Authorization: Bearer <key>` or `X-API-Key: <key>`, compared in constant time.
 * Each key owns the sandboxes it creates. With no key configured, everyone is the same owner (and the
 * server binds to loopback unless told otherwise, see config.ts).
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { syncHook } from './sync-hook.js';

declare module 'fastify' {
  interface FastifyRequest {
    /** Owner of the sandboxes this request may touch (a digest of its API key). */
    owner: string;
  }
  interface FastifyInstance {
    /** Checks the request's API key and sets req.owner; throws 401. For public routes that need it sometimes. */
    authenticate(req: FastifyRequest): void;
  }
  interface FastifyContextConfig {
    /** Routes that need no API key (health, docs). */
    public?: boolean;
    /**
     * Routes that authenticate by a secret of their own (E2B's per-sandbox access tokens) instead of an API
     * key: it sets req.owner or throws, before the body is read (so that body budgets apply to that owner).
     */
    authenticate?: (req: FastifyRequest) => void;
  }
}

const digest = (s: string) => createHash('sha256').update(s).digest();

function presentedKey(req: FastifyRequest): string | null {
  const auth = req.headers.authorization;
  if (typeof auth === 'string') {
    const m = /^Bearer\s+(.+)$/i.exec(auth.trim());
    if (m) return m[1].trim();
  }
  const x = req.headers['x-api-key'];
  if (typeof x === 'string' && x.trim()) return x.trim();
  return null;
}

export const authPlugin = fp(
  async (app: FastifyInstance, opts: { apiKeys: readonly string[] }) => {
    const keys = opts.apiKeys.map((k) => ({ digest: digest(k), owner: `key:${digest(k).toString('hex').slice(0, 16)}` }));
    // Keys already checked, so that each call does not hash again. Only valid keys go in: it holds at most
    // as many entries as there are keys.
    const checked = new Map<string, string>();
    app.decorateRequest('owner', '');
    const authenticate = (req: FastifyRequest): void => {
      if (keys.length === 0) {
        req.owner = 'anonymous';
        return;
      }
      const key = presentedKey(req);
      const known = key !== null ? checked.get(key) : undefined;
      if (known !== undefined) {
        req.owner = known;
        return;
      }
      if (key !== null) {
        const d = digest(key);
        let owner: string | null = null;
        for (const k of keys) if (timingSafeEqual(d, k.digest)) owner = k.owner;
        if (owner) {
          checked.set(key, owner);
          req.owner = owner;
          return;
        }
      }
      throw new ServiceError(
        ErrorCode.UNAUTHORIZED,
        key === null ? 'missing API key: send "Authorization: Bearer <key>" or "X-API-Key: <key>"' : 'invalid API key',
        { headers: { 'www-authenticate': 'Bearer' } },
      );
    };
    app.decorate('authenticate', authenticate);
    app.addHook(
      'onRequest',
      syncHook((req) => {
        const own = req.routeOptions.config?.authenticate;
        if (own) return own(req);
        if (keys.length > 0 && (req.routeOptions.config?.public || req.routeOptions.url?.startsWith('/docs'))) return;
        authenticate(req);
      }),
    );
  },
  { name: 'ciw-auth' },
);
