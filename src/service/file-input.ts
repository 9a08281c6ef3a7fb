/** File content and names as clients give them, read the same way by the HTTP routes and the MCP tools. */
import { posix } from 'node:path';
import { ServiceError, ErrorCode } from '../errors.js';

const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

/** The bytes of a `content` field: UTF-8 text, or base64 when `encoding` says so (checked, never guessed). */
export function decodeContent(content: string, encoding: string | undefined): Buffer {
  if (encoding !== 'base64') return Buffer.from(content, 'utf8');
  if (!BASE64.test(content)) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'content is not valid base64 (encoding=base64)');
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
