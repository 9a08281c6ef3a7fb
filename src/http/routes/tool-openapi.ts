/**
 * GET /dify/openapi.json: the API as a Dify custom tool (or any OpenAPI tool importer) wants it. Derived
 * from the generated document, so it never drifts: the RPC operations only, each with its operationId and
 * description, request bodies flattened to scalar parameters with descriptions (object and array options
 * such as `env` are left out), `servers[0]` the public base URL, bearer auth.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Config } from '../../config.js';
import { baseUrl } from '../../api/wire.js';

type Schema = Record<string, unknown> & { type?: string; properties?: Record<string, Schema>; anyOf?: Schema[]; description?: string };

const TOOL_OPERATIONS = new Set([
  'createSandbox',
  'runCode',
  'executeCommand',
  'writeFile',
  'uploadFile',
  'downloadFile',
  'listFiles',
  'getSandboxInfo',
  'pauseSandbox',
  'resumeSandbox',
  'forkSandbox',
  'stopSandbox',
  'startProcess',
  'processOutput',
  'sendInput',
  'signalProcess',
  'createContext',
  'moveFile',
  'removeFile',
  'listCheckpoints',
  'rollback',
]);
const TOOL_TIMEOUT_NOTE = ' Dify custom tools give up after about 60 s: keep `timeout` under 55 seconds for calls made as a tool.';

/** A scalar version of a property schema, or null when it is not a scalar (objects, arrays, unknown). */
function scalar(s: Schema): Schema | null {
  if (s.type === 'string' || s.type === 'number' || s.type === 'integer' || s.type === 'boolean') return s;
  const options = s.anyOf ?? [];
  if (options.length > 0 && options.every((o) => 'const' in o || 'enum' in o)) {
    return { type: 'string', enum: options.flatMap((o) => (o.enum as unknown[]) ?? [o.const]), description: s.description };
  }
  return null;
}

export function toolDocument(full: Record<string, unknown>, server: string): Record<string, unknown> {
  const paths: Record<string, unknown> = {};
  for (const [path, ops] of Object.entries(full.paths as Record<string, Record<string, Record<string, unknown>>>)) {
    const post = ops.post as
      (Record<string, unknown> & { operationId?: string; requestBody?: { content?: Record<string, { schema?: Schema }> } }) | undefined;
    if (!post || !TOOL_OPERATIONS.has(post.operationId ?? '')) continue;
    const body = post.requestBody?.content?.['application/json']?.schema ?? { properties: {} };
    const properties: Record<string, Schema> = {};
    for (const [name, prop] of Object.entries(body.properties ?? {})) {
      const flat = scalar(prop);
      if (flat) properties[name] = { ...flat, description: flat.description ?? prop.description ?? name.replace(/_/g, ' ') };
    }
    const required = ((body.required as string[] | undefined) ?? []).filter((r) => r in properties);
    paths[path] = {
      post: {
        operationId: post.operationId,
        summary: post.summary,
        description: `${post.description}${post.operationId === 'runCode' || post.operationId === 'executeCommand' ? TOOL_TIMEOUT_NOTE : ''}`,
        requestBody: {
          required: true,
          content: { 'application/json': { schema: { type: 'object', ...(required.length > 0 ? { required } : {}), properties } } },
        },
        responses: { 200: { description: 'The result, as JSON (failures of the code are reported here too).' } },
      },
    };
  }
  return {
    openapi: '3.0.3',
    info: { ...(full.info as object), title: 'Code Interpreter' },
    servers: [{ url: server }],
    components: { securitySchemes: { bearerAuth: { type: 'http', scheme: 'bearer' } } },
    security: [{ bearerAuth: [] }],
    paths,
  };
}

export function registerToolDocument(app: FastifyInstance, config: Config): void {
  app.get('/dify/openapi.json', { config: { public: true }, schema: { hide: true } }, async (req: FastifyRequest) =>
    toolDocument(app.swagger() as unknown as Record<string, unknown>, config.TOOL_SERVER_URL || baseUrl(config, req)),
  );
}
