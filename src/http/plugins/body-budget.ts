/**
 * Request bodies in flight per API key: each request reserves its declared Content-Length (a chunked body,
 * which declares none, reserves the largest body allowed) from its key's budget until its answer is sent,
 * so that one key cannot make the service hold a body for every connection it opens. Over the budget the
 * request gets 429 before its body is read (and the connection is closed with the answer). Bodies up to
 * SMALL_BODY_BYTES are not counted (the calls of the hot path): MAX_CONNECTIONS of them are a bounded few MiB.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { syncHook } from './sync-hook.js';

const SMALL_BODY_BYTES = 64 * 1024;

export const bodyBudgetPlugin = fp(
  async (app: FastifyInstance, opts: { maxBytesPerKey: number; bodyLimit: number }) => {
    const inFlight = new Map<string, number>();
    const release = (owner: string, bytes: number) => {
      const left = (inFlight.get(owner) ?? bytes) - bytes;
      if (left > 0) inFlight.set(owner, left);
      else inFlight.delete(owner);
    };
    app.addHook(
      'onRequest',
      syncHook((req: FastifyRequest) => {
        if (!req.owner) return; // a public route
        const length = req.headers['content-length'];
        const declared =
          length !== undefined
            ? Math.min(Number(length) || 0, opts.bodyLimit)
            : req.headers['transfer-encoding'] !== undefined
              ? opts.bodyLimit
              : 0;
        if (declared <= SMALL_BODY_BYTES) return;
        const held = inFlight.get(req.owner) ?? 0;
        if (held + declared > opts.maxBytesPerKey) {
          throw new ServiceError(
            ErrorCode.CALL_LIMIT_REACHED,
            `this API key has ${held} bytes of request bodies in flight; this one would pass MAX_BODY_BYTES_PER_KEY=${opts.maxBytesPerKey}; retry when they are done`,
            { headers: { 'retry-after': '1' } },
          );
        }
        inFlight.set(req.owner, held + declared);
        const owner = req.owner;
        req.raw.once('close', () => release(owner, declared));
      }),
    );
  },
  { name: 'ciw-body-budget', dependencies: ['ciw-auth'] },
);
