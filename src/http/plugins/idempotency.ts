/**
 * Idempotency-Key: Dify retries 429/5xx at two layers, and a client may time out and send again. A call
 * that runs code, with an Idempotency-Key header, runs once per (API key, route, Idempotency-Key, request)
 * within IDEMPOTENCY_TTL_S: a repeat gets the first answer (header `Idempotent-Replayed: true`), waiting for it
 * if the first call is still running. The same key with a different body is a different call, and runs: Dify's
 * Loop and Iteration nodes send one key (`{{#sys.workflow_run_id#}}-run`) on every iteration, each with its own
 * code; iterations that send the same code must put the iteration's index in the key (docs/dify.md). Only 2xx answers are kept,
 * so a retry after a failure runs again. Streamed calls are not covered (their answer is not a single body).
 * Memory is bounded per API key (entries and bytes, oldest forgotten first), so no tenant can push out
 * another's; an answer too large to keep is remembered as "ran" and a repeat gets 409, never a second run.
 */
import { createHash } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import { ServiceError, ErrorCode } from '../../core/errors.js';

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

/** What a first call left for its repeats: its answer, a note that the answer was too large to keep, or nothing (it failed). */
type Outcome = Stored | 'not-kept' | null;

interface Entry {
  fingerprint: string;
  expiresAt: number;
  /** Bytes of the kept answer (0 until it is there). */
  bytes: number;
  result: Promise<Outcome>;
  settle: (s: Outcome) => void;
}

/** One API key's remembered calls, oldest first (a Map keeps insertion order), and the bytes they hold. */
interface OwnerEntries {
  entries: Map<string, Entry>;
  bytes: number;
}

export interface IdempotencyOptions {
  readonly ttlMs: number;
  /** Calls remembered per API key. */
  readonly maxEntriesPerKey: number;
  /** Bytes of kept answers per API key. */
  readonly maxBytesPerKey: number;
  /** Largest answer kept. */
  readonly maxAnswerBytes: number;
  readonly now?: () => number;
}

const KEY_PATTERN = /^[\x21-\x7e]{1,200}$/;
/** Files are hashed in slices, the event loop free between them. */
const HASH_SLICE_BYTES = 4 * 1024 * 1024;

/** The request's fingerprint: its fields and the bytes of every file it carries. */
async function fingerprintOf(body: unknown, files: readonly { data: Buffer }[] | undefined): Promise<string> {
  const hash = createHash('sha256').update(JSON.stringify(body));
  for (const file of files ?? []) {
    hash.update(`\0${file.data.length}\0`);
    for (let at = 0; at < file.data.length; at += HASH_SLICE_BYTES) {
      if (at > 0) await new Promise((r) => setImmediate(r));
      hash.update(file.data.subarray(at, at + HASH_SLICE_BYTES));
    }
  }
  return hash.digest('hex');
}

export const idempotencyPlugin = fp(
  async (app: FastifyInstance, opts: IdempotencyOptions) => {
    const now = opts.now ?? Date.now;
    // Per API key: one key's calls never push out another's. There are as many owners as configured keys.
    const owners = new Map<string, OwnerEntries>();
    const pending = new WeakMap<FastifyRequest, { owner: OwnerEntries; key: string; entry: Entry }>();

    const forget = (owner: OwnerEntries, key: string, entry: Entry) => {
      if (owner.entries.get(key) !== entry) return;
      owner.entries.delete(key);
      owner.bytes -= entry.bytes;
    };

    const settle = (req: FastifyRequest, stored: Stored | null) => {
      const p = pending.get(req);
      if (!p) return;
      pending.delete(req);
      if (!stored) {
        forget(p.owner, p.key, p.entry);
        p.entry.settle(null);
        return;
      }
      const size = typeof stored.payload === 'string' ? Buffer.byteLength(stored.payload) : stored.payload.length;
      if (size > opts.maxAnswerBytes || p.owner.entries.get(p.key) !== p.entry) {
        // The call ran: its repeats must not run it again, but its answer is not worth the memory.
        p.entry.settle('not-kept');
        return;
      }
      p.entry.bytes = size;
      p.owner.bytes += size;
      p.entry.settle(stored);
      for (const [k, e] of p.owner.entries) {
        if (p.owner.bytes <= opts.maxBytesPerKey) break;
        if (e !== p.entry) forget(p.owner, k, e);
      }
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
      const fingerprint = await fingerprintOf(body, req.uploadedFiles);
      const key = `${req.routeOptions.url}\n${header}\n${fingerprint}`;
      let owner = owners.get(req.owner);
      if (!owner) owners.set(req.owner, (owner = { entries: new Map(), bytes: 0 }));
      const t = now();
      for (const [k, e] of owner.entries) {
        if (e.expiresAt > t && owner.entries.size < opts.maxEntriesPerKey) break;
        forget(owner, k, e); // oldest first
      }
      const existing = owner.entries.get(key);
      if (existing && existing.expiresAt > t) {
        const stored = await existing.result;
        if (stored === 'not-kept') {
          throw new ServiceError(
            ErrorCode.IDEMPOTENT_ANSWER_NOT_KEPT,
            `a call with this Idempotency-Key already ran, and its answer was larger than IDEMPOTENCY_MAX_ANSWER_BYTES=${opts.maxAnswerBytes} so it was not kept; it is not run again. Use a new key to run it again`,
          );
        }
        if (stored) {
          return reply
            .status(stored.status)
            .header('content-type', stored.contentType)
            .header('idempotent-replayed', 'true')
            .send(stored.payload);
        }
        // The first call failed: this one runs.
      }
      let resolve!: (s: Outcome) => void;
      const result = new Promise<Outcome>((r) => (resolve = r));
      const entry: Entry = { fingerprint, expiresAt: t + opts.ttlMs, bytes: 0, result, settle: resolve };
      if (existing) forget(owner, key, existing); // expired, or its first call failed
      owner.entries.set(key, entry);
      pending.set(req, { owner, key, entry });
    };

    app.addHook('onSend', (req, reply, payload, done) => {
      if (pending.has(req)) {
        const ok = reply.statusCode >= 200 && reply.statusCode < 300 && (typeof payload === 'string' || Buffer.isBuffer(payload));
        settle(
          req,
          ok
            ? {
                status: reply.statusCode,
                contentType: String(reply.getHeader('content-type') ?? 'application/json'),
                payload: payload as string | Buffer,
              }
            : null,
        );
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
  },
  { name: 'ciw-idempotency' },
);
