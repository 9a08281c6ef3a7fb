/**
 * Downloads a `file_url` for /upload_file: http(s) only, a size cap, a time limit, and the outbound
 * address policy (outbound.ts) on every connection, redirects included. A non-2xx answer is an error,
 * never a file holding an error page.
 */
import { Agent, request } from 'undici';
import { ServiceError, ErrorCode } from '../core/errors.js';
import { guardedLookup, literalDenied, type OutboundPolicy } from '../core/network-policy.js';

export interface FetchLimits {
  readonly maxBytes: number;
  readonly timeoutMs: number;
  readonly policy: OutboundPolicy;
}

const MAX_REDIRECTS = 5;

export function parseFileUrl(raw: string): URL {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new ServiceError(
      ErrorCode.FILE_URL_INVALID,
      `file_url '${raw.slice(0, 200)}' is not an absolute URL; give a full http(s):// URL (in Dify, set FILES_URL so file variables carry absolute URLs)`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new ServiceError(ErrorCode.FILE_URL_INVALID, `file_url must use http or https, not ${url.protocol.replace(':', '')}`);
  }
  return url;
}

/** Fetches `raw` and returns its bytes, or throws a ServiceError that says what to change. */
export async function fetchFileUrl(raw: string, limits: FetchLimits): Promise<{ data: Buffer; finalUrl: string }> {
  let url = parseFileUrl(raw);
  const agent = new Agent({ connect: { lookup: guardedLookup(limits.policy) as never } });
  const signal = AbortSignal.timeout(limits.timeoutMs);
  try {
    for (let hop = 0; ; hop++) {
      const why = literalDenied(limits.policy, url.hostname);
      if (why) throw new ServiceError(ErrorCode.FILE_URL_NOT_ALLOWED, `file_url points to a forbidden address: ${why}`);
      const res = await request(url, { method: 'GET', dispatcher: agent, signal, headers: { 'user-agent': 'code-interpreter-wrapper' } });
      if (res.statusCode >= 300 && res.statusCode < 400 && res.headers.location) {
        await res.body.dump();
        if (hop >= MAX_REDIRECTS)
          throw new ServiceError(ErrorCode.FILE_URL_FETCH_FAILED, `file_url redirected more than ${MAX_REDIRECTS} times`);
        url = parseFileUrl(new URL(String(res.headers.location), url).toString());
        continue;
      }
      if (res.statusCode < 200 || res.statusCode >= 300) {
        const snippet = (await res.body.text().catch(() => '')).slice(0, 200).replace(/\s+/g, ' ');
        const hint =
          res.statusCode === 403 || res.statusCode === 401
            ? ' (a signed URL may have expired: Dify file URLs are valid for 300 s, so fetch them promptly)'
            : res.statusCode === 404
              ? ' (check the URL)'
              : '';
        throw new ServiceError(
          ErrorCode.FILE_URL_FETCH_FAILED,
          `fetching file_url answered HTTP ${res.statusCode}${hint}${snippet ? `: ${snippet}` : ''}`,
        );
      }
      const declared = Number(res.headers['content-length']);
      if (Number.isFinite(declared) && declared > limits.maxBytes) {
        await res.body.destroy();
        throw new ServiceError(
          ErrorCode.FILE_TOO_LARGE,
          `file_url is ${declared} bytes, more than the ${limits.maxBytes}-byte limit (MAX_FILE_BYTES)`,
        );
      }
      const chunks: Buffer[] = [];
      let size = 0;
      for await (const chunk of res.body) {
        size += (chunk as Buffer).length;
        if (size > limits.maxBytes) {
          res.body.destroy();
          throw new ServiceError(ErrorCode.FILE_TOO_LARGE, `file_url is larger than the ${limits.maxBytes}-byte limit (MAX_FILE_BYTES)`);
        }
        chunks.push(chunk as Buffer);
      }
      return { data: Buffer.concat(chunks, size), finalUrl: url.toString() };
    }
  } catch (err) {
    if (err instanceof ServiceError) throw err;
    const e = err as Error & { code?: string; cause?: { code?: string; message?: string } };
    const code = e.code ?? e.cause?.code;
    if (code === 'CIW_ADDRESS_DENIED' || e.cause?.code === 'CIW_ADDRESS_DENIED') {
      throw new ServiceError(ErrorCode.FILE_URL_NOT_ALLOWED, `file_url is not allowed: ${e.cause?.message ?? e.message}`, { cause: err });
    }
    if (e.name === 'TimeoutError' || e.name === 'AbortError') {
      throw new ServiceError(
        ErrorCode.FILE_URL_FETCH_FAILED,
        `fetching file_url took longer than ${limits.timeoutMs / 1000} s (UPLOAD_TIMEOUT_S)`,
        { cause: err },
      );
    }
    throw new ServiceError(
      ErrorCode.FILE_URL_FETCH_FAILED,
      `could not fetch file_url: ${e.cause?.message ?? e.message}${code ? ` (${code})` : ''}`,
      { cause: err },
    );
  } finally {
    agent.close().catch(() => undefined);
  }
}
