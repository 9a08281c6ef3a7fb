/** Builds a real app over a chosen backend for app.inject() tests, and tears everything down. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { loadConfig, type Config } from '../../src/config.js';
import { buildApp } from '../../src/app.js';
import { createBackend } from '../../src/backends/index.js';
import { SandboxService } from '../../src/service/sandbox-service.js';
import type { SandboxBackend } from '../../src/backends/types.js';

export interface TestApp {
  app: FastifyInstance;
  service: SandboxService;
  backend: SandboxBackend;
  config: Config;
  /** POST a JSON body and return status and parsed body. */
  post(
    path: string,
    body: unknown,
    headers?: Record<string, string>,
  ): Promise<{ status: number; body: any; headers: Record<string, unknown> }>;
  close(): Promise<void>;
}

export async function startTestApp(env: Record<string, string> = {}, now?: () => number): Promise<TestApp> {
  const config = loadConfig({ SANDBOX_BACKEND: 'memory', STATE_DIR: mkdtempSync(join(tmpdir(), 'ciw-state-')), ...env });
  const backend = createBackend(config);
  const status = await backend.init();
  if (!status.ready) throw new Error(`backend not ready: ${status.problem}`);
  const service = new SandboxService({ backend, config, now });
  await service.open();
  const app = await buildApp({ config, service });
  await app.ready();
  return {
    app,
    service,
    backend,
    config,
    async post(path, body, headers = {}) {
      const res = await app.inject({ method: 'POST', url: path, payload: body as object, headers });
      let parsed: unknown = res.body;
      try {
        parsed = JSON.parse(res.body);
      } catch {
        // not JSON
      }
      return { status: res.statusCode, body: parsed, headers: res.headers };
    },
    async close() {
      await app.close();
      await service.close();
    },
  };
}

/** A body as it arrives over a socket: 64 KiB chunks past that size (app.inject would hand it over in one piece). */
const CHUNK = 64 * 1024;

/** POSTs raw bytes with their Content-Length, a large body in 64 KiB chunks. */
export function postChunked(app: FastifyInstance, url: string, payload: string | Buffer, headers: Record<string, string>) {
  const bytes = Buffer.from(payload);
  const body =
    bytes.length <= CHUNK
      ? bytes
      : Readable.from(Array.from({ length: Math.ceil(bytes.length / CHUNK) }, (_, i) => bytes.subarray(i * CHUNK, (i + 1) * CHUNK)));
  return app.inject({ method: 'POST', url, payload: body, headers: { 'content-length': String(bytes.length), ...headers } });
}
