/**
 * The E2B front end: E2B's control plane, envd and code interpreter, so that the unmodified E2B SDKs run
 * against this service with E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set (see docs/e2b.md). Requests
 * are recognised by e2bRewrite (app.ts) and land under /e2b/api and /e2b/sandbox; everything E2B answers
 * differently from our API lives here, on the same operations.
 */
import type { FastifyInstance } from 'fastify';
import type { Config } from '../config.js';
import type { SandboxService } from '../service/sandbox-service.js';
import { AccessTokens, CONTROL_PREFIX, SANDBOX_PREFIX } from './common.js';
import { controlRoutes } from './control.js';
import { envdRoutes } from './envd.js';
import { interpreterRoutes } from './interpreter.js';

export { e2bRewrite } from './common.js';

export async function e2bRoutes(app: FastifyInstance, { service, config }: { service: SandboxService; config: Config }): Promise<void> {
  const tokens = new AccessTokens(config);
  // E2B's routes are documented by E2B (and docs/e2b.md), not in this service's OpenAPI document.
  app.addHook('onRoute', (route) => {
    route.schema = { ...(route.schema ?? {}), hide: true };
  });
  await app.register(async (api) => controlRoutes(api, { service, config, tokens }), { prefix: CONTROL_PREFIX });
  await app.register(async (sandbox) => envdRoutes(sandbox, { service, config, tokens }), { prefix: SANDBOX_PREFIX });
  await app.register(async (sandbox) => interpreterRoutes(sandbox, { service, tokens }), { prefix: SANDBOX_PREFIX });
}
