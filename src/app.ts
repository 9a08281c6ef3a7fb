/**
 * buildApp: the Fastify instance with every route, the OpenAPI document and the error handler. It never
 * listens; server.ts does, and tests use app.inject().
 */
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance } from 'fastify';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import type { Config } from './config.js';
import { ServiceError, ErrorCode, describeError, errorBody } from './core/errors.js';
import type { SandboxService } from './service/sandbox-service.js';
import { authPlugin } from './http/plugins/auth.js';
import { bodiesPlugin } from './http/plugins/bodies.js';
import { bodyBudgetPlugin } from './http/plugins/body-budget.js';
import { idempotencyPlugin } from './http/plugins/idempotency.js';
import { metricsPlugin } from './http/plugins/metrics.js';
import { sandboxRoutes } from './http/routes/sandboxes.js';
import { executionRoutes } from './http/routes/execution.js';
import { fileRoutes } from './http/routes/files.js';
import { processRoutes } from './http/routes/processes.js';
import { checkpointRoutes } from './http/routes/checkpoints.js';
import { healthRoutes } from './http/routes/health.js';
import { difySandboxRoutes } from './dify/routes.js';
import { registerToolDocument } from './http/routes/tool-openapi.js';
import { registerMcp } from './mcp/route.js';
import { baseUrl } from './api/wire.js';
import { e2bRewrite, e2bRoutes } from './e2b/routes.js';

export interface AppDeps {
  readonly config: Config;
  readonly service: SandboxService;
  /** A pino logger, or false for none (tests). */
  readonly logger?: FastifyBaseLogger | boolean | Record<string, unknown>;
}

export async function buildApp({ config, service, logger = false }: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    ...(typeof logger === 'object' && 'child' in logger
      ? { loggerInstance: logger as FastifyBaseLogger }
      : { logger: logger as boolean | Record<string, unknown> }),
    // Two synchronous log lines per call are a large part of a sub-millisecond hot path: off unless asked.
    logController: new LogController({ disableRequestLogging: !config.LOG_REQUESTS }),
    // Without request logging, no child logger per request either (a pino child per call is measurable on
    // the hot path); the few error lines name the request id themselves.
    ...(config.LOG_REQUESTS ? {} : { childLoggerFactory: (parent: FastifyBaseLogger) => parent }),
    // base64 content is 4/3 of the bytes, plus the JSON around it.
    bodyLimit: Math.ceil((config.MAX_FILE_BYTES * 4) / 3) + 1024 * 1024,
    // Form, multipart and query fields arrive as strings: "30" must be a valid timeout.
    ajv: { customOptions: { coerceTypes: true, removeAdditional: false, useDefaults: true } },
    // Every connection is bounded in time: its headers, the whole request, idle keep-alive (Node's own
    // timers). Once a request is in, a call may run silently for up to EXEC_MAX_TIMEOUT_S: no idle timeout
    // on the socket then (downloads have their own watchdog, files.ts).
    requestTimeout: config.HTTP_REQUEST_TIMEOUT_S * 1000,
    keepAliveTimeout: config.HTTP_KEEPALIVE_TIMEOUT_S * 1000,
    // Node checks the header and request timeouts this often (30 s by default, which would stretch a 10 s limit).
    http: { connectionsCheckingInterval: Math.min(1000, config.HTTP_HEADERS_TIMEOUT_S * 1000) },
    // E2B's SDKs call one base URL for every sandbox, naming it in headers: their requests go to /e2b/….
    rewriteUrl: (req) => {
      const url = req.url ?? '/';
      return e2bRewrite(url, req.method ?? 'GET', req.headers) ?? url;
    },
  }).withTypeProvider<TypeBoxTypeProvider>();
  app.server.headersTimeout = config.HTTP_HEADERS_TIMEOUT_S * 1000;
  app.server.maxConnections = config.MAX_CONNECTIONS;
  // Node's header timeout starts with the first byte: a connection that sends nothing would be kept forever.
  // It gets the header timeout until its first request arrives.
  const silentMs = config.HTTP_HEADERS_TIMEOUT_S * 1000;
  app.server.on('connection', (socket: Socket) => socket.setTimeout(silentMs));
  app.server.on('request', (req: IncomingMessage) => {
    if (req.socket.timeout === silentMs) req.socket.setTimeout(0); // its first request: Node's timers from here on
  });

  app.setErrorHandler((err: FastifyError | ServiceError, req, reply) => {
    // No key, a body too large, or over the key's budget: the connection goes with the answer, instead of
    // staying open for whatever the client still sends. (Other early refusals, like a JSON body of a bad
    // shape from a valid key, let the rest of the body drain unread so that the client gets to read its 400.)
    const closing =
      err instanceof ServiceError
        ? err.code === ErrorCode.UNAUTHORIZED || (err.code === ErrorCode.CALL_LIMIT_REACHED && !req.raw.complete)
        : err.code === 'FST_ERR_CTP_BODY_TOO_LARGE';
    if (closing) reply.header('connection', 'close');
    const bodyLimitBytes = req.routeOptions.bodyLimit ?? app.initialConfig.bodyLimit;
    const e = describeError(err, { bodyLimitBytes, maxFileBytes: config.MAX_FILE_BYTES });
    if (e.internal) req.log.error({ err, reqId: req.id }, 'request failed');
    return reply.status(e.status).headers(e.headers).send(errorBody(e.code, e.message));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.status(404).send(errorBody(ErrorCode.ROUTE_NOT_FOUND, `no route ${req.method} ${req.url.split('?')[0]}; see /docs for the API`)),
  );

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Code Interpreter Wrapper',
        version: '0.1.0',
        description:
          'Isolated, stateful code-interpreter sandboxes over HTTP, for Dify and other LLM applications. ' +
          "Failures of the user's code are HTTP 200 with the failure in the body; 4xx means the request must change.",
      },
      components: {
        securitySchemes: {
          bearerAuth: { type: 'http', scheme: 'bearer' },
          apiKeyHeader: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
      security: config.apiKeys.length > 0 ? [{ bearerAuth: [] }, { apiKeyHeader: [] }] : [],
      tags: [
        { name: 'sandboxes', description: 'Create, inspect and stop sandboxes' },
        { name: 'execution', description: 'Run Python and shell commands' },
        { name: 'files', description: 'Move files in and out' },
        { name: 'processes', description: 'Background processes: start, follow, write to, signal' },
        { name: 'checkpoints', description: 'Undo: roll a sandbox back to before recent calls, variables and files together' },
        { name: 'health', description: 'Liveness' },
        { name: 'dify-sandbox', description: "dify-sandbox compatible API for Dify's Code node (CODE_EXECUTION_ENDPOINT)" },
      ],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs', uiConfig: { deepLinking: true } });
  app.get('/openapi.json', { config: { public: true }, schema: { hide: true } }, async (req) => ({
    ...app.swagger(),
    servers: [{ url: baseUrl(config, req) }],
  }));
  registerToolDocument(app, config);
  await app.register(authPlugin, { apiKeys: config.apiKeys });
  await app.register(metricsPlugin, { service });
  await app.register(bodyBudgetPlugin, {
    maxBytesPerKey: Math.max(config.MAX_BODY_BYTES_PER_KEY, app.initialConfig.bodyLimit!),
    bodyLimit: app.initialConfig.bodyLimit!,
  });
  await app.register(bodiesPlugin, { maxFileBytes: config.MAX_FILE_BYTES });
  await app.register(idempotencyPlugin, {
    ttlMs: config.IDEMPOTENCY_TTL_S * 1000,
    maxEntriesPerKey: config.IDEMPOTENCY_MAX_ENTRIES_PER_KEY,
    maxBytesPerKey: config.IDEMPOTENCY_MAX_BYTES_PER_KEY,
    maxAnswerBytes: config.IDEMPOTENCY_MAX_ANSWER_BYTES,
  });
  await app.register(healthRoutes, { service });
  await app.register(sandboxRoutes, { service, config });
  await app.register(executionRoutes, { service, config });
  await app.register(fileRoutes, { service, config });
  await app.register(processRoutes, { service, config });
  await app.register(checkpointRoutes, { service, config });
  await app.register(difySandboxRoutes, { service, config });
  await app.register(e2bRoutes, { service, config });
  registerMcp(app, service, config);
  return app;
}
