/**
 * Streamed calls: output chunks as they happen, then rich results and files, then the same final object
 * the plain call returns. NDJSON (one JSON object per line, `type` field) or server-sent events (`event:`
 * lines), chosen by the request's `stream` field or its `Accept: text/event-stream` header. Works with
 * `curl -N`.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { describeError } from '../core/errors.js';

export type StreamFormat = 'ndjson' | 'sse';

/** The format a request asks for, or null for a plain JSON answer. */
export function streamFormat(req: FastifyRequest, flag: boolean | 'ndjson' | 'sse' | undefined): StreamFormat | null {
  const wantsSse = /\btext\/event-stream\b/.test(String(req.headers.accept ?? ''));
  if (flag === 'sse' || (flag === true && wantsSse) || (flag === undefined && wantsSse)) return 'sse';
  if (flag === true || flag === 'ndjson') return 'ndjson';
  return null;
}

export type Emit = (type: string, payload: Record<string, unknown>) => void;

/**
 * Answers with a stream. `run` gets an `emit` for events and returns the final response, sent as `end`.
 * A failure after the stream began becomes an `error` event (the status line is already sent).
 */
export async function streamReply(
  req: FastifyRequest,
  reply: FastifyReply,
  format: StreamFormat,
  run: (emit: Emit) => Promise<{ results?: unknown[]; files?: unknown[] } & Record<string, unknown>>,
): Promise<void> {
  reply.hijack();
  const raw = reply.raw;
  raw.writeHead(200, {
    'content-type': format === 'sse' ? 'text/event-stream; charset=utf-8' : 'application/x-ndjson; charset=utf-8',
    'cache-control': 'no-cache',
    'x-accel-buffering': 'no',
  });
  const emit: Emit = (type, payload) => {
    if (raw.writableEnded) return;
    raw.write(format === 'sse' ? `event: ${type}\ndata: ${JSON.stringify(payload)}\n\n` : `${JSON.stringify({ type, ...payload })}\n`);
  };
  try {
    const final = await run(emit);
    for (const result of final.results ?? []) emit('result', { result });
    for (const file of final.files ?? []) emit('file', { file });
    emit('end', { response: final });
  } catch (err) {
    const e = describeError(err);
    if (e.internal) req.log.error({ err, reqId: req.id }, 'streamed call failed');
    emit('error', { error: { code: e.code, message: e.message } });
  } finally {
    raw.end();
  }
}
