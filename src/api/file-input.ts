/** File content and names as clients give them, read the same way by the HTTP routes and the MCP tools. */
import { posix } from 'node:path';
import { ServiceError, ErrorCode } from '../core/errors.js';

/**
 * Whether `text` is base64 (standard, or URL-safe with `urlSafe`), whitespace anywhere allowed. Linear in the
 * length: whitespace is dropped first, so no pattern can backtrack over it (a pattern with whitespace on both
 * sides of the padding took minutes on a megabyte of spaces).
 */
export function isBase64(text: string, urlSafe = false): boolean {
  const bare = text.replace(/\s+/g, '');
  return (urlSafe ? /^[A-Za-z0-9+/_-]*={0,2}$/ : /^[A-Za-z0-9+/]*={0,2}$/).test(bare);
}

/** The bytes of a `content` field: UTF-8 text, or base64 when `encoding` says so (checked, never guessed). */
export function decodeContent(content: string, encoding: string | undefined): Buffer {
  if (encoding !== 'base64') return Buffer.from(content, 'utf8');
  if (!isBase64(content)) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'content is not valid base64 (encoding=base64)');
  return Buffer.from(content, 'base64');
}

/** The file name at the end of a URL's path, if it has one (a bad URL is explained when it is fetched). */
export function urlFileName(url: string): string | undefined {
  try {
    return decodeURIComponent(posix.basename(new URL(url).pathname)) || undefined;
  } catch {
    return undefined;
  }
}
