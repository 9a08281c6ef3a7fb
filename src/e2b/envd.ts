/**
 * E2B's envd (port 49983) on our sandboxes: /health, /files (read and write: multipart or octet-stream,
 * gzip; signed URLs), and the Connect RPC services process.Process and filesystem.Filesystem.
 */
import { gunzip } from 'node:zlib';
import { promisify } from 'node:util';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { SandboxService } from '../service/sandbox-service.js';
import {
  type AccessTokens,
  type SandboxTarget,
  authenticator,
  fromSandboxPath,
  HOME,
  restError,
  targetOf,
  toSandboxPath,
} from './common.js';
import { STREAM_TYPE, unaryError } from './connect.js';
import { processMethods } from './rpc-process.js';
import { AlreadyExists, filesystemMethods } from './rpc-filesystem.js';

const gunzipAsync = promisify(gunzip);
/** A streaming call's request is one small envelope. */
const STREAM_REQUEST_LIMIT = 1024 * 1024;
/** A unary call's request: SendInput's bytes (1 MiB, base64) at most. */
const UNARY_BODY_LIMIT = 2 * 1024 * 1024;

export interface EnvdDeps {
  readonly service: SandboxService;
  readonly config: Config;
  readonly tokens: AccessTokens;
}

type Query = Record<string, string | undefined>;

export async function envdRoutes(app: FastifyInstance, deps: EnvdDeps): Promise<void> {
  await app.register(async (rest) => restRoutes(rest, deps));
  await app.register(async (rpc) => rpcRoutes(rpc, deps));
}

async function restRoutes(app: FastifyInstance, { service, config, tokens }: EnvdDeps): Promise<void> {
  app.setErrorHandler((err, req, reply) => {
    const { status, body } = restError(err);
    if (!req.raw.complete) reply.header('connection', 'close'); // refused before its body was read
    return reply.status(status).send(body);
  });

  app.get('/health', { config: { authenticate: authenticator(service, tokens) } }, async (req, reply) => {
    const t = targetOf(req);
    const info = await service.info(t.owner, { sandboxId: t.id });
    return reply.status(info.status === 'running' ? 204 : 502).send();
  });

  app.get('/files', { config: { authenticate: authenticator(service, tokens, 'read') } }, async (req, reply) => {
    const t = targetOf(req);
    const path = (req.query as Query).path;
    if (!path) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'path is required');
    const file = await service.files.open(t.owner, { sandboxId: t.id }, toSandboxPath(path));
    return reply
      .header('content-type', 'application/octet-stream')
      .header('content-length', String(file.size))
      .header('content-disposition', `attachment; filename="${encodeURIComponent(file.path.split('/').pop() ?? 'file')}"`)
      .send(file.body);
  });

  app.post('/files', { config: { authenticate: authenticator(service, tokens, 'write'), rawBody: true } }, async (req, reply) => {
    const t = targetOf(req);
    const q = req.query as Query;
    const parts: Array<{ path: string; data: Buffer }> = [];
    if (Buffer.isBuffer(req.body)) {
      if (!q.path) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'path is required for an octet-stream upload');
      let data = req.body;
      if (String(req.headers['content-encoding'] ?? '').toLowerCase() === 'gzip') {
        data = await gunzipAsync(data, { maxOutputLength: config.MAX_FILE_BYTES }).catch((err: Error) => {
          throw new ServiceError(
            (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE' ? ErrorCode.FILE_TOO_LARGE : ErrorCode.VALIDATION_FAILED,
            `the gzip body could not be decompressed within MAX_FILE_BYTES (${config.MAX_FILE_BYTES}): ${err.message}`,
          );
        });
      }
      parts.push({ path: q.path, data });
    } else {
      for (const f of req.uploadedFiles) {
        // The SDK names each part by its full path; a single part may leave that to ?path=.
        const path = req.uploadedFiles.length === 1 && q.path ? q.path : f.filename;
        if (!path) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'each file part needs its path as the filename');
        parts.push({ path, data: f.data });
      }
    }
    if (parts.length === 0)
      throw new ServiceError(
        ErrorCode.VALIDATION_FAILED,
        'no file in the request: send multipart parts named "file", or an octet-stream body with ?path=',
      );
    const written = [];
    for (const p of parts) {
      const w = await service.files.write(
        t.owner,
        { sandboxId: t.id },
        toSandboxPath(p.path.startsWith('/') ? p.path : `${HOME}/${p.path}`),
        p.data,
      );
      written.push({ name: w.path.split('/').pop(), type: 'file', path: fromSandboxPath(w.path) });
    }
    return reply.status(200).send(written);
  });
}

async function rpcRoutes(app: FastifyInstance, { service, tokens }: EnvdDeps): Promise<void> {
  const auth = authenticator(service, tokens);
  app.addContentTypeParser(STREAM_TYPE, { parseAs: 'buffer', bodyLimit: STREAM_REQUEST_LIMIT }, (_req, body, done) => done(null, body));
  app.addHook('onRoute', (route) => {
    route.bodyLimit ??= UNARY_BODY_LIMIT;
  });
  app.setErrorHandler((err, req, reply) => {
    if (!req.raw.complete) reply.header('connection', 'close');
    if (err instanceof AlreadyExists) return reply.status(409).send({ code: 'already_exists', message: err.message });
    const { status, body } = unaryError(err);
    return reply.status(status).send(body);
  });
  const services = {
    'process.Process': processMethods(service),
    'filesystem.Filesystem': filesystemMethods(service),
  } as const;
  for (const [name, methods] of Object.entries(services)) {
    for (const [method, fn] of Object.entries(methods.unary)) {
      app.post(`/${name}/${method}`, { config: { authenticate: auth, rawBody: true } }, async (req) => {
        const t = targetOf(req);
        const body = req.body;
        const message = typeof body === 'object' && body !== null && !Array.isArray(body) && !Buffer.isBuffer(body) ? body : {};
        return (fn as (t: SandboxTarget, m: Record<string, unknown>) => Promise<unknown>)(t, message as Record<string, unknown>);
      });
    }
    for (const [method, fn] of Object.entries(methods.stream)) {
      app.post(
        `/${name}/${method}`,
        { config: { authenticate: auth, rawBody: true }, bodyLimit: STREAM_REQUEST_LIMIT },
        async (req, reply) => {
          const t = targetOf(req);
          await (fn as (t: SandboxTarget, req: FastifyRequest, reply: FastifyReply) => Promise<void>)(t, req, reply);
        },
      );
    }
  }
  // connect-web never calls the client-streaming StreamInput over HTTP/1.1; say so instead of a bare 404.
  app.post('/process.Process/StreamInput', { config: { authenticate: auth, rawBody: true } }, async (_req, reply) =>
    reply.status(404).send({ code: 'unimplemented', message: 'StreamInput is not served; use SendInput' }),
  );
}
