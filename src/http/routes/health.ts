/** Liveness and service facts; no API key needed. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from 'typebox';
import type { FastifyRequest } from 'fastify';
import type { SandboxService } from '../../service/sandbox-service.js';

const HealthResponse = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('degraded')]),
  message: Type.String(),
  backend: Type.String(),
  backend_ready: Type.Boolean(),
  isolation: Type.String(),
  problem: Type.Optional(Type.String()),
  live_sandboxes: Type.Optional(
    Type.Integer({ description: 'Live sandboxes of all keys; only for a caller with a valid API key (or when none is configured).' }),
  ),
  pool: Type.Optional(
    Type.Object({
      target: Type.Integer({ description: 'POOL_SIZE' }),
      ready: Type.Integer({ description: 'Sandboxes ready to hand out now' }),
      preload: Type.Array(Type.String()),
      network: Type.Optional(
        Type.Object({
          target: Type.Integer({ description: 'POOL_NETWORK_SIZE' }),
          ready: Type.Integer({ description: 'Sandboxes with network ready to hand out now' }),
        }),
      ),
    }),
  ),
});

export const healthRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService }> = async (app, { service }) => {
  const handler = async (req: FastifyRequest) => {
    let trusted = true;
    try {
      app.authenticate(req);
    } catch {
      trusted = false;
    }
    const s = service.backend.status();
    return {
      status: s.ready ? ('ok' as const) : ('degraded' as const),
      message: 'Code Interpreter Wrapper is running',
      backend: s.name,
      backend_ready: s.ready,
      isolation: s.isolation,
      ...(s.problem ? { problem: s.problem } : {}),
      ...(trusted ? { live_sandboxes: service.size } : {}),
      ...(s.pool ? { pool: { ...s.pool, preload: [...s.pool.preload] } } : {}),
    };
  };
  const schema = {
    tags: ['health'],
    summary: 'Liveness',
    description: 'Always 200 while the process serves HTTP; backend_ready says whether code can run.',
    response: { 200: HealthResponse },
  };
  app.get('/health', { config: { public: true }, schema: { ...schema, operationId: 'health' } }, handler);
  app.get('/', { config: { public: true }, schema: { ...schema, operationId: 'root' } }, handler);
};
