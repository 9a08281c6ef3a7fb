/**
 * Idempotency-Key: Dify retries 429/5xx at two layers, and a client may time out and send again. A call
 * that runs code, with an Idempotency-Key header, runs once per (API key, route, Idempotency-Key) within
 * IDEMPOTENCY_TTL_S: a repeat gets the first answer (header `Idempotent-Replayed: true`), waiting for it if
 * the first call is still running. The same key with a different body is a 422. Only 2xx answers are kept,
 * so a retry after a failure runs again. Streamed calls are not covered (their answer is not a single body).
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServiceError, ErrorCode } from '../errors.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Calls to this route honour the Idempotency-Key header. */
    idempotent?: boolean;
  }
}

interface Stored {
  status: number;
  contentType: string;
  payload: string | Buffer;
}

interface Entry {
  fingerprint: string;
  expiresAt: number;
  result: Promise<Stored | null>;
  settle: (s: Stored | null) => void;
}

const MAX_ENTRIES = 10_000;
const KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;

export const idempotencyPlugin = fp(async (app: FastifyInstance, opts: { ttlMs: number; now?: () => number }) => {
  const now = opts.now ?? Date.now;
  const entries = new Map<string, Entry>();
  const pending = new WeakMap<FastifyRequest, { key: string; entry: Entry }>();

  const settle = (req: FastifyRequest, stored: Stored | null) => {
    const p = pending.get(req);
    if (!p) return;
    pending.delete(req);
    if (!stored) entries.delete(p.key);
    p.entry.settle(stored);
  };

  // Callback hooks, not async ones: they run on every call of the hot path, almost always with nothing to do.
  app.addHook('preHandler', (req: FastifyRequest, reply: FastifyReply, done: (err?: Error) => void) => {
    if (!req.routeOptions.config?.idempotent || req.headers['idempotency-key'] === undefined) {
      done();
      return;
    }
    replayOrRecord(req, reply).then(() => done(), done);
  });

  const replayOrRecord = async (req: FastifyRequest, reply: FastifyReply) => {
    const header = req.headers['idempotency-key'];
    const body = (req.body ?? {}) as Record<string, unknown>;
    if (body.stream) return;
    if (typeof header !== 'string' || !KEY_PATTERN.test(header)) {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'Idempotency-Key must be 1 to 200 printable ASCII characters');
    }
    const key = `${req.owner}\n${req.routeOptions.url}\n${header}`;
    const fingerprint = createHash('sha256').update(JSON.stringify(body)).update(String(req.uploadedFiles?.map((f) => f.data.length))).digest('hex');
    const t = now();
    for (const [k, e] of entries) {
      if (e.expiresAt > t && entries.size < MAX_ENTRIES) break;
      entries.delete(k); // oldest first: Map keeps insertion order
    }
    const existing = entries.get(key);
    if (existing && existing.expiresAt > t) {
      if (existing.fingerprint !== fingerprint) {
        throw new ServiceError(ErrorCode.IDEMPOTENCY_KEY_REUSED, 'this Idempotency-Key was already used with a different request; use a new key for a new request');
      }
      const stored = await existing.result;
      if (stored) {
        return reply.status(stored.status).header('content-type', stored.contentType).header('idempotent-replayed', 'true').send(stored.payload);
      }
      // The first call failed: this one runs.
    }
    let resolve!: (s: Stored | null) => void;
    const result = new Promise<Stored | null>((r) => (resolve = r));
    const entry: Entry = { fingerprint, expiresAt: t + opts.ttlMs, result, settle: resolve };
    entries.set(key, entry);
    pending.set(req, { key, entry });
  };

  app.addHook('onSend', (req, reply, payload, done) => {
    if (pending.has(req)) {
      const ok = reply.statusCode >= 200 && reply.statusCode < 300 && (typeof payload === 'string' || Buffer.isBuffer(payload));
      settle(req, ok ? { status: reply.statusCode, contentType: String(reply.getHeader('content-type') ?? 'application/json'), payload: payload as string | Buffer } : null);
    }
    done(null, payload);
  });
  // Hijacked or aborted requests never reach onSend: release whoever waits on them.
  app.addHook('onResponse', (req, _reply, done) => {
    settle(req, null);
    done();
  });
  app.addHook('onRequestAbort', (req, done) => {
    settle(req, null);
    done();
  });
}, { name: 'ciw-idempotency' });
