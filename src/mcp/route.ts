/**
 * The MCP endpoint (Streamable HTTP) at /mcp, built with the official SDK, stateless: every request gets
 * its own server and transport, so any client — Dify opens a new session per call — works without session
 * affinity, and several service instances can sit behind a load balancer. Protected by the same API keys
 * (Authorization: Bearer). Answers are JSON, or an SSE stream with `?sse=1` (or MCP_SSE=true).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { errorBody } from '../core/errors.js';
import { Server } from '@modelcontextprotocol/sdk/server/index.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import { CallToolRequestSchema, ListToolsRequestSchema } from '@modelcontextprotocol/sdk/types.js';
import type { Config } from '../config.js';
import type { SandboxService } from '../service/sandbox-service.js';
import { TOOLS, callTool } from './tools.js';
import { baseUrl } from '../api/wire.js';

const INSTRUCTIONS =
  'Isolated, stateful code-interpreter sandboxes. Call create_sandbox once (or pass a conversation_id to any tool), ' +
  'then run_code repeatedly with the returned sandbox_id: variables persist between calls. Charts come back as images.';

export function registerMcp(app: FastifyInstance, service: SandboxService, config: Config): void {
  const handler = async (req: import('fastify').FastifyRequest, reply: import('fastify').FastifyReply) => {
    const server = new Server(
      { name: 'code-interpreter-wrapper', title: 'Code Interpreter', version: '0.1.0' },
      { capabilities: { tools: {} }, instructions: INSTRUCTIONS },
    );
    const ctx = { service, config, owner: req.owner, baseUrl: baseUrl(config, req) };
    server.setRequestHandler(ListToolsRequestSchema, async () => ({
      tools: TOOLS.map((t) => ({
        name: t.name,
        title: t.title,
        description: t.description,
        inputSchema: t.inputSchema as never,
        ...(t.outputSchema ? { outputSchema: t.outputSchema as never } : {}),
      })),
    }));
    server.setRequestHandler(
      CallToolRequestSchema,
      async (request) => callTool(request.params.name, request.params.arguments, ctx) as never,
    );
    const sse = config.MCP_SSE || (req.query as Record<string, string>).sse === '1';
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: !sse });
    reply.hijack();
    reply.raw.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(req.raw, reply.raw, req.body);
  };
  const schema = {
    hide: true,
  };
  // `/mcp/` too: FastMCP servers are reached there, and users paste that URL into Dify.
  for (const url of ['/mcp', '/mcp/']) {
    app.post(url, { schema, config: { rawBody: true } }, handler);
    // Stateless: no server-initiated stream, no session to delete.
    app.get(url, { schema }, async (_req, reply) =>
      reply
        .status(405)
        .header('allow', 'POST')
        .send({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this server is stateless; POST to /mcp' }, id: null }),
    );
    app.delete(url, { schema }, async (_req, reply) =>
      reply
        .status(405)
        .header('allow', 'POST')
        .send({ jsonrpc: '2.0', error: { code: -32000, message: 'Method not allowed: this server is stateless' }, id: null }),
    );
  }
  // OAuth discovery (Dify probes it when a server is added): there is none, so a plain 404 — not the 401 of a
  // missing key, which a client would take as "log in with OAuth".
  const noOAuth = async (_req: FastifyRequest, reply: FastifyReply) =>
    reply.status(404).send(errorBody('ROUTE_NOT_FOUND', 'this server has no OAuth: send the API key as "Authorization: Bearer <key>"'));
  for (const url of [
    '/.well-known/oauth-protected-resource',
    '/.well-known/oauth-authorization-server',
    '/.well-known/openid-configuration',
  ]) {
    app.get(url, { schema, config: { public: true } }, noOAuth);
    app.get(`${url}/*`, { schema, config: { public: true } }, noOAuth);
  }
}
