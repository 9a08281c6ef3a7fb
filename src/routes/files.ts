/** File routes: write, upload from a URL, download link, list, and the raw bytes at /files/{id}/{path}. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { posix } from 'node:path';
import { Type } from 'typebox';
import { ErrorResponse } from '../schemas/common.js';
import {
  DownloadFileBody, DownloadFileResponse, FileParams, FileQuery, FileWrittenResponse, ListFilesBody, ListFilesResponse, UploadFileBody, WriteFileBody,
} from '../schemas/files.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../errors.js';
import { mimeTypeOf } from '../service/mime.js';
import { baseUrl, refOf } from './wire.js';
import { linker } from './responses.js';
import type { FastifyReply } from 'fastify';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 410: ErrorResponse, 413: ErrorResponse };

function requirePath(...candidates: Array<string | undefined>): string {
  const path = candidates.find((p) => p !== undefined && p !== '');
  if (!path) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give remote_path: where the file is in the sandbox (relative paths are inside /workspace)');
  return path;
}

const BASE64 = /^[A-Za-z0-9+/\s]*={0,2}\s*$/;

function sendFile(reply: FastifyReply, path: string, data: Buffer) {
  const name = posix.basename(path);
  return reply
    .header('content-type', mimeTypeOf(name))
    .header('content-disposition', contentDisposition(name))
    .header('content-length', data.length)
    .header('x-content-type-options', 'nosniff')
    // A sandbox's HTML must not run scripts in the service's origin.
    .header('content-security-policy', "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox")
    .send(data);
}

/** RFC 6266 header that keeps non-ASCII names intact and ASCII clients working. */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

export const fileRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (app, { service, config }) => {
  app.post('/write_file', {
    schema: {
      operationId: 'writeFile',
      tags: ['files'],
      summary: 'Write a file into a sandbox',
      description: 'Writes text (or base64-decoded bytes with encoding=base64) to remote_path, creating parent directories.',
      body: WriteFileBody,
      response: { 200: FileWrittenResponse, ...errors },
    },
  }, async (req) => {
    const { content, encoding } = req.body;
    const path = requirePath(req.body.remote_path, req.body.path);
    let data: Buffer;
    if (encoding === 'base64') {
      if (!BASE64.test(content)) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'content is not valid base64 (encoding=base64)');
      data = Buffer.from(content, 'base64');
    } else {
      data = Buffer.from(content, 'utf8');
    }
    const w = await service.writeFile(req.owner, refOf(req.body), path, data);
    return { status: 'success' as const, sandbox_id: w.record.id, remote_path: w.path, size: w.size };
  });

  app.post('/upload_file', {
    schema: {
      operationId: 'uploadFile',
      tags: ['files'],
      summary: 'Download a URL into a sandbox',
      description: 'Fetches file_url (http/https, size- and time-limited, no link-local or loopback targets) and stores it at remote_filename (default: the URL\'s file name). A non-2xx answer is a 422, never a file holding an error page.',
      body: UploadFileBody,
      response: { 200: FileWrittenResponse, ...errors, 403: ErrorResponse, 422: ErrorResponse },
    },
  }, async (req) => {
    const { file_url: fileUrl } = req.body;
    let fallback: string | undefined;
    try {
      fallback = decodeURIComponent(posix.basename(new URL(fileUrl).pathname)) || undefined;
    } catch {
      fallback = undefined; // fetchFileUrl explains the bad URL
    }
    const path = req.body.remote_filename || req.body.remote_path || fallback || 'upload.bin';
    const w = await service.uploadFromUrl(req.owner, refOf(req.body), fileUrl, path);
    return { status: 'success' as const, sandbox_id: w.record.id, remote_path: w.path, size: w.size };
  });

  app.post('/download_file', {
    schema: {
      operationId: 'downloadFile',
      tags: ['files'],
      summary: 'Get a download link for a file in a sandbox',
      description: 'Checks that remote_path is a file and returns download_url: an absolute, signed, time-limited URL that serves its bytes '
        + 'with Content-Disposition: attachment, no API key needed. With as_file=true the answer is the file itself (Dify\'s HTTP node then puts it in `files`).',
      body: DownloadFileBody,
      response: { 200: DownloadFileResponse, ...errors },
      produces: ['application/json', 'application/octet-stream'],
    },
  }, async (req, reply) => {
    const path = requirePath(req.body.remote_path, req.body.path);
    if (req.body.as_file) {
      const { data, path: real } = await service.readFile(req.owner, refOf(req.body), path);
      return sendFile(reply, real, data);
    }
    const { record, entry } = await service.statFile(req.owner, refOf(req.body), path);
    if (entry.type === 'directory') throw new ServiceError(ErrorCode.IS_A_DIRECTORY, `${entry.path} is a directory, not a file`);
    const url = linker(service, baseUrl(config, req), record.id, record.sandbox.workspace)(entry.path);
    return { sandbox_id: record.id, filename: entry.name, remote_path: entry.path, download_url: url, size: entry.size, mime_type: mimeTypeOf(entry.name) };
  });

  app.post('/list_files', {
    schema: {
      operationId: 'listFiles',
      tags: ['files'],
      summary: 'List a directory in a sandbox',
      description: 'Lists path (default: the workspace), optionally recursively, up to 10,000 entries.',
      body: ListFilesBody,
      response: { 200: ListFilesResponse, ...errors },
    },
  }, async (req) => {
    const { record, listing } = await service.listFiles(req.owner, refOf(req.body), req.body.path ?? '.', req.body.recursive ?? false);
    return {
      sandbox_id: record.id,
      path: listing.path,
      truncated: listing.truncated,
      entries: listing.entries.map((e) => ({ name: e.name, path: e.path, type: e.type, size: e.size, modified_at: new Date(e.modifiedMs).toISOString() })),
    };
  });

  app.get('/files/:sandbox_id/*', {
    config: { public: true },
    schema: {
      operationId: 'getFile',
      tags: ['files'],
      summary: 'The bytes of a file in a sandbox',
      description: 'Serves the file with its Content-Type and Content-Disposition: attachment, so Dify\'s HTTP Request node exposes it as a file. '
        + 'The path is relative to the workspace. With the exp and sig of a signed URL (download_url, files[].url) no API key is needed; '
        + 'a bad or expired signature is 403. Without them, the API key is.',
      params: FileParams,
      querystring: FileQuery,
      response: {
        200: Type.Unsafe<Buffer>({ type: 'string', format: 'binary', description: 'The file\'s bytes.' }),
        400: ErrorResponse, 401: ErrorResponse, 403: ErrorResponse, 404: ErrorResponse, 413: ErrorResponse,
      },
    },
  }, async (req, reply) => {
    const { sandbox_id: sandboxId, '*': path } = req.params;
    const { exp, sig } = req.query;
    if (exp !== undefined || sig !== undefined) {
      const verdict = service.signer.verify(sandboxId, path, exp, sig);
      if (verdict !== 'ok') {
        throw new ServiceError(ErrorCode.URL_SIGNATURE_INVALID, verdict === 'expired'
          ? 'this file link has expired; ask /download_file (or run the code again) for a fresh one'
          : 'this file link\'s signature is not valid for this file; use the URL exactly as the service gave it');
      }
      const { data, path: real } = await service.readFileBySignature(sandboxId, path);
      return sendFile(reply, real, data);
    }
    app.authenticate(req);
    const { data, path: real } = await service.readFile(req.owner, { sandboxId }, path);
    return sendFile(reply, real, data);
  });
};
