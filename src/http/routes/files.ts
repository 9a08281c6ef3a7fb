/** File routes: write, upload from a URL, download link, list, and the raw bytes at /files/{id}/{path}. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { posix } from 'node:path';
import { Type } from 'typebox';
import { ErrorResponse } from '../../api/schemas/common.js';
import {
  DownloadFileBody,
  DownloadFileResponse,
  FileParams,
  FileQuery,
  FileWrittenResponse,
  ListFilesBody,
  ListFilesResponse,
  UploadFileBody,
  WriteFileBody,
} from '../../api/schemas/files.js';
import type { SandboxService } from '../../service/sandbox-service.js';
import type { Config } from '../../config.js';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { mimeTypeOf } from '../../service/mime.js';
import { decodeContent } from '../../api/file-input.js';
import {
  fileLink,
  listFiles,
  openFile,
  openFileByLink,
  requirePath,
  uploadFromUrl,
  writeFile,
  type StoredFile,
} from '../../api/file-operations.js';
import { listingToWire, storedToWire } from '../../api/file-presenters.js';
import { refOf } from '../../api/wire.js';
import type { FastifyReply } from 'fastify';
import type { Readable } from 'node:stream';
import { callerOf } from '../caller.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 410: ErrorResponse, 413: ErrorResponse };

/** A Dify file object (or its JSON text, as form fields carry it): url, remote_url, filename. */
function difyFile(value: unknown): { url?: string; remote_url?: string; filename?: string } | null {
  let v = value;
  if (typeof v === 'string') {
    try {
      v = JSON.parse(v);
    } catch {
      return null;
    }
  }
  if (Array.isArray(v)) v = v[0];
  return typeof v === 'object' && v !== null ? (v as { url?: string; remote_url?: string; filename?: string }) : null;
}

function urlOf(body: { file_url?: string; file?: unknown }): string {
  const file = difyFile(body.file);
  for (const field of ['url', 'remote_url'] as const) {
    if (file?.[field] !== undefined && file[field] !== null && typeof file[field] !== 'string') {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, `file.${field} must be a string (the file's URL), not ${typeof file[field]}`);
    }
  }
  const candidates = [body.file_url, file?.url ?? undefined, file?.remote_url ?? undefined];
  // The first non-empty one; else '' if any was given empty (Dify without FILES_URL), so the error can say so.
  const url = candidates.find((c) => c) ?? candidates.find((c) => c !== undefined);
  if (url === undefined) {
    throw new ServiceError(
      ErrorCode.VALIDATION_FAILED,
      'give the file: file_url, a Dify file object in `file`, or the file itself as a multipart part or binary body',
    );
  }
  if (url === '' || url.startsWith('/')) {
    throw new ServiceError(
      ErrorCode.FILE_URL_INVALID,
      url === ''
        ? 'the file URL is empty: Dify gives file variables a URL only when FILES_URL is set in its .env (e.g. FILES_URL=http://api:5001); set it, or send the file as form-data instead'
        : `the file URL '${url.slice(0, 100)}' is relative: set FILES_URL in Dify's .env so file variables carry absolute URLs, or send the file as form-data instead`,
    );
  }
  return url;
}

/**
 * A download whose client takes nothing for `idleMs` is ended: a watchdog looks at the bytes the socket has
 * sent, and destroys it when they stopped moving (a socket timeout would not do: Node holds it back while a
 * write is pending, and the server keeps none once a request is in, for calls that run silently). The
 * body's back-pressure reaches the sandbox (see BlobSink), so meanwhile the service holds little of the file.
 */
function holdBackSlowReader(reply: FastifyReply, body: Readable, idleMs: number): void {
  const socket = reply.raw.socket;
  if (!socket) return; // app.inject(): no socket
  let sent = -1;
  let still = 0;
  const step = Math.max(50, Math.floor(idleMs / 4));
  const watchdog = setInterval(() => {
    if (socket.bytesWritten !== sent) {
      sent = socket.bytesWritten;
      still = 0;
    } else if ((still += step) >= idleMs) {
      socket.destroy();
    }
  }, step);
  watchdog.unref();
  reply.raw.once('close', () => {
    clearInterval(watchdog);
    body.destroy();
  });
}

/** A file as the answer: its bytes (streamed as they come out of the sandbox) with download headers. */
function sendFile(reply: FastifyReply, file: { path: string; size: number; body: Readable }, sendIdleTimeoutMs: number) {
  const name = posix.basename(file.path);
  holdBackSlowReader(reply, file.body, sendIdleTimeoutMs);
  return (
    reply
      .header('content-type', mimeTypeOf(name))
      .header('content-disposition', contentDisposition(name))
      .header('content-length', file.size)
      .header('x-content-type-options', 'nosniff')
      // A sandbox's HTML must not run scripts in the service's origin.
      .header('content-security-policy', "default-src 'none'; img-src data:; style-src 'unsafe-inline'; sandbox")
      .send(file.body)
  );
}

/** RFC 6266 header that keeps non-ASCII names intact and ASCII clients working. */
export function contentDisposition(filename: string): string {
  const ascii = filename.replace(/[^\x20-\x7e]|["\\]/g, '_');
  return `attachment; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(filename)}`;
}

export const fileRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (app, { service, config }) => {
  const sendIdleMs = config.FILE_SEND_IDLE_TIMEOUT_S * 1000;
  const caller = callerOf(service, config);
  app.post(
    '/write_file',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'writeFile',
        tags: ['files'],
        summary: 'Write a file into a sandbox',
        description: 'Writes text (or base64-decoded bytes with encoding=base64) to remote_path, creating parent directories.',
        body: WriteFileBody,
        response: { 200: FileWrittenResponse, ...errors },
      },
    },
    async (req) => {
      const { content, encoding } = req.body;
      const path = requirePath(req.body.remote_path, req.body.path, req.uploadedFiles[0]?.filename);
      let data: Buffer;
      if (req.uploadedFiles.length > 0) {
        data = req.uploadedFiles[0].data;
      } else if (content === undefined) {
        throw new ServiceError(
          ErrorCode.VALIDATION_FAILED,
          'give content (text, or base64 with encoding=base64), or the file as a multipart part',
        );
      } else {
        data = decodeContent(content, encoding);
      }
      return storedToWire(await writeFile(caller(req), refOf(req.body), { path, data }));
    },
  );

  app.post(
    '/upload_file',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'uploadFile',
        tags: ['files'],
        summary: 'Put a file into a sandbox, from a URL or from the request',
        description:
          "Stores a file at remote_filename (default: the file's own name). The file comes from: a multipart file part " +
          '(a Dify file variable in a form-data body), a raw binary body, file_url, or a Dify file object in `file` (its url or ' +
          'remote_url). URLs are fetched with size and time limits and only from public addresses unless allow-listed; a non-2xx ' +
          'answer is a 422, never a file holding an error page. Dify signs file URLs for 300 s: fetch them in the same run.',
        body: UploadFileBody,
        response: { 200: FileWrittenResponse, ...errors, 403: ErrorResponse, 422: ErrorResponse },
      },
    },
    async (req) => {
      const target = req.body.remote_filename || req.body.remote_path;
      const ref = refOf(req.body);
      if (req.uploadedFiles.length > 0) {
        const written: StoredFile[] = [];
        for (const f of req.uploadedFiles) {
          const name = posix.basename(f.filename) || 'upload.bin';
          const path = !target ? name : req.uploadedFiles.length === 1 ? target : posix.join(target, name);
          written.push(await writeFile(caller(req), ref, { path, data: f.data }));
        }
        return { ...storedToWire(written[0]), files: written.map((w) => ({ remote_path: w.path, size: w.size })) };
      }
      const w = await uploadFromUrl(caller(req), ref, { url: urlOf(req.body), target, suggestedName: difyFile(req.body.file)?.filename });
      return { ...storedToWire(w), files: [{ remote_path: w.path, size: w.size }] };
    },
  );

  app.post(
    '/download_file',
    {
      schema: {
        operationId: 'downloadFile',
        tags: ['files'],
        summary: 'Get a download link for a file in a sandbox',
        description:
          'Checks that remote_path is a file and returns download_url: an absolute, signed, time-limited URL that serves its bytes ' +
          "with Content-Disposition: attachment, no API key needed. With as_file=true the answer is the file itself (Dify's HTTP node then puts it in `files`).",
        body: DownloadFileBody,
        response: { 200: DownloadFileResponse, ...errors },
        produces: ['application/json', 'application/octet-stream'],
      },
    },
    async (req, reply) => {
      const path = requirePath(req.body.remote_path, req.body.path);
      if (req.body.as_file) {
        return sendFile(reply, await openFile(caller(req), refOf(req.body), path), sendIdleMs);
      }
      const { sandboxId, entry, url } = await fileLink(caller(req), refOf(req.body), path);
      return {
        sandbox_id: sandboxId,
        filename: entry.name,
        remote_path: entry.path,
        download_url: url,
        size: entry.size,
        mime_type: mimeTypeOf(entry.name),
      };
    },
  );

  app.post(
    '/list_files',
    {
      schema: {
        operationId: 'listFiles',
        tags: ['files'],
        summary: 'List a directory in a sandbox',
        description: 'Lists path (default: the workspace), optionally recursively, up to 10,000 entries.',
        body: ListFilesBody,
        response: { 200: ListFilesResponse, ...errors },
      },
    },
    async (req) => {
      return listingToWire(await listFiles(caller(req), refOf(req.body), { path: req.body.path, recursive: req.body.recursive }));
    },
  );

  app.get(
    '/files/:sandbox_id/*',
    {
      config: { public: true },
      schema: {
        operationId: 'getFile',
        tags: ['files'],
        summary: 'The bytes of a file in a sandbox',
        description:
          "Serves the file with its Content-Type and Content-Disposition: attachment, so Dify's HTTP Request node exposes it as a file. " +
          'The path is relative to the workspace. With the exp and sig of a signed URL (download_url, files[].url) no API key is needed; ' +
          'a bad or expired signature is 403. Without them, the API key is.',
        params: FileParams,
        querystring: FileQuery,
        response: {
          200: Type.Unsafe<Buffer>({ type: 'string', format: 'binary', description: "The file's bytes." }),
          400: ErrorResponse,
          401: ErrorResponse,
          403: ErrorResponse,
          404: ErrorResponse,
          413: ErrorResponse,
        },
      },
    },
    async (req, reply) => {
      const { sandbox_id: sandboxId, '*': path } = req.params;
      const { exp, sig } = req.query;
      if (exp !== undefined || sig !== undefined) {
        return sendFile(reply, await openFileByLink(caller(req), sandboxId, path, { exp, sig }), sendIdleMs);
      }
      app.authenticate(req);
      return sendFile(reply, await openFile(caller(req), { sandboxId }, path), sendIdleMs);
    },
  );
};
