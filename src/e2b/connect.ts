/**
 * The Connect protocol as E2B's envd speaks it to the SDKs (connect-web, JSON codec, HTTP/1.1): unary calls
 * are plain JSON; server-streaming calls send and receive envelopes (1 flag byte, 4-byte big-endian length,
 * JSON), the stream ending with an envelope of flag 0x02 that carries {} or {"error": {code, message}}.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { describeError } from '../core/errors.js';
import { connectCode, bad } from './common.js';

export const STREAM_TYPE = 'application/connect+json';
const END_STREAM = 0x02;
const KEEPALIVE_HEADER = 'keepalive-ping-interval';
const DEFAULT_KEEPALIVE_S = 50;
/** Whatever a client does not read of a stream is dropped past this, and the stream ends. */
const MAX_UNREAD_BYTES = 4 * 1024 * 1024;

/** The request message: the JSON body of a unary call, or the one envelope of a streaming call. */
export function requestMessage(req: FastifyRequest): Record<string, unknown> {
  const body = req.body;
  if (Buffer.isBuffer(body)) {
    if (body.length < 5) throw bad('a Connect streaming request must hold one envelope (5-byte prefix, then JSON)');
    const length = body.readUInt32BE(1);
    if (body[0] !== 0 || 5 + length > body.length) throw bad('malformed Connect envelope');
    return objectOf(parse(body.subarray(5, 5 + length).toString('utf8')));
  }
  return objectOf(body ?? {});
}

function parse(text: string): unknown {
  try {
    return text.trim() === '' ? {} : JSON.parse(text);
  } catch {
    throw bad('the Connect message is not JSON');
  }
}

function objectOf(v: unknown): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw bad('the Connect message must be a JSON object');
  return v as Record<string, unknown>;
}

/** Connect's error body for any error, and its HTTP status (unary calls). */
export function unaryError(err: unknown): { status: number; body: { code: string; message: string } } {
  const e = describeError(err);
  return { status: e.status, body: { code: connectCode(e.status), message: e.message } };
}

function envelope(flags: number, message: unknown): Buffer {
  const json = Buffer.from(JSON.stringify(message), 'utf8');
  const out = Buffer.allocUnsafe(5 + json.length);
  out[0] = flags;
  out.writeUInt32BE(json.length, 1);
  json.copy(out, 5);
  return out;
}

/** A server stream being answered: messages as they come, keepalives while quiet, one end. */
export interface ServerStream {
  send(message: unknown): void;
  /** Ends the stream, with the error if one is given. Idempotent. */
  end(err?: unknown): void;
  /** Called once when the stream ends, by us or because the client went away. */
  onClose(listener: () => void): void;
  readonly closed: boolean;
}

export function openStream(req: FastifyRequest, reply: FastifyReply, keepaliveMessage: unknown): ServerStream {
  reply.hijack();
  const res = reply.raw;
  res.writeHead(200, { 'content-type': STREAM_TYPE, 'cache-control': 'no-store' });
  const asked = Number(req.headers[KEEPALIVE_HEADER]);
  const intervalS = Number.isFinite(asked) && asked > 0 ? Math.min(asked, DEFAULT_KEEPALIVE_S) : DEFAULT_KEEPALIVE_S;
  const listeners: Array<() => void> = [];
  let closed = false;
  const close = () => {
    if (closed) return;
    closed = true;
    clearInterval(timer);
    for (const l of listeners.splice(0)) l();
  };
  const write = (flags: number, message: unknown) => {
    if (closed || res.destroyed) return;
    if (res.writableLength > MAX_UNREAD_BYTES) {
      // A client that does not read: it is not followed further.
      res.end(envelope(END_STREAM, { error: { code: 'resource_exhausted', message: 'the client did not read the stream' } }));
      close();
      return;
    }
    res.write(envelope(flags, message));
  };
  const timer = setInterval(() => write(0, keepaliveMessage), intervalS * 1000);
  res.on('close', close);
  return {
    send: (message) => write(0, message),
    end: (err) => {
      if (closed) return;
      if (!res.destroyed) {
        if (err === undefined) res.end(envelope(END_STREAM, {}));
        else {
          const e = describeError(err);
          res.end(envelope(END_STREAM, { error: { code: connectCode(e.status), message: e.message } }));
        }
      }
      close();
    },
    onClose: (l) => {
      if (closed) l();
      else listeners.push(l);
    },
    get closed() {
      return closed;
    },
  };
}
