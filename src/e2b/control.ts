/**
 * E2B's control plane (api.e2b.app, spec/openapi.yml) on our sandboxes: create, connect (resumes a paused
 * one), kill, timeout, info, list, pause, metrics. API keys are ours (X-API-KEY); a sandbox of another key is
 * a 404 like one that never existed. Answers and errors in E2B's shapes ({code, message}).
 */
import { cpus } from 'node:os';
import type { FastifyInstance, FastifyReply } from 'fastify';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { SandboxService, SandboxInfo } from '../service/sandbox-service.js';
import { AccessTokens, ENVD_VERSION, TEMPLATES, bad, objectBody, restError, stringMap } from './common.js';

const CLIENT_ID = 'code-interpreter-wrapper';
const DEFAULT_TIMEOUT_S = 300;
const MAX_PAGE = 100;
const CONTROL_BODY_LIMIT = 64 * 1024;

export interface ControlDeps {
  readonly service: SandboxService;
  readonly config: Config;
  readonly tokens: AccessTokens;
}

type Body = Record<string, unknown>;

export async function controlRoutes(app: FastifyInstance, { service, config, tokens }: ControlDeps): Promise<void> {
  /** Templates asked for, by sandbox (the answer names it again); both are the same sandbox here. */
  const templates = new Map<string, string>();
  /** The last CPU reading of each sandbox, for the percentage between two metrics calls. */
  const lastCpu = new Map<string, { atMs: number; seconds: number }>();
  const cpuCount = config.SANDBOX_CPUS > 0 ? Math.ceil(config.SANDBOX_CPUS) : cpus().length;
  const memoryMB = Math.round(config.SANDBOX_MEMORY_BYTES / 1048576);
  const diskSizeMB = Math.round(config.SANDBOX_DISK_BYTES / 1048576);

  app.setErrorHandler((err, req, reply) => {
    const { status, body } = restError(err);
    if (!req.raw.complete) reply.header('connection', 'close'); // refused before its body was read
    return reply.status(status).send(body);
  });
  // Control-plane bodies are a few fields: anything larger is refused at once.
  app.addHook('onRoute', (route) => {
    route.bodyLimit ??= CONTROL_BODY_LIMIT;
  });

  const sandboxOf = (info: SandboxInfo, owner: string) => ({
    sandboxID: info.id,
    templateID: templates.get(info.id) ?? 'code-interpreter-v1',
    alias: templates.get(info.id) ?? 'code-interpreter-v1',
    clientID: CLIENT_ID,
    envdVersion: ENVD_VERSION,
    envdAccessToken: tokens.token(info.id, owner),
    trafficAccessToken: tokens.token(info.id, owner),
    domain: null,
  });
  const listedOf = (info: SandboxInfo) => ({
    sandboxID: info.id,
    templateID: templates.get(info.id) ?? 'code-interpreter-v1',
    alias: templates.get(info.id) ?? 'code-interpreter-v1',
    clientID: CLIENT_ID,
    startedAt: info.createdAt.toISOString(),
    endAt: info.expiresAt.toISOString(),
    state: info.status,
    cpuCount,
    memoryMB,
    diskSizeMB,
    envdVersion: ENVD_VERSION,
    metadata: info.metadata,
    allowInternetAccess: info.network,
  });

  const create = async (owner: string, body: Body, reply: FastifyReply) => {
    const template = body.templateID ?? 'code-interpreter-v1';
    if (typeof template !== 'string' || !(TEMPLATES as readonly string[]).includes(template)) {
      throw bad(
        `template '${String(template).slice(0, 100)}' does not exist here; use one of ${TEMPLATES.join(', ')} (both are this service's sandbox)`,
      );
    }
    const timeout = body.timeout === undefined || body.timeout === null ? DEFAULT_TIMEOUT_S : body.timeout;
    if (typeof timeout !== 'number') throw bad('timeout must be a number of seconds');
    const { info } = await service.create(owner, {
      idleTimeoutS: Math.max(1, Math.min(timeout, config.SANDBOX_MAX_LIFETIME_S)),
      env: stringMap(body.envVars, 'envVars'),
      metadata: stringMap(body.metadata, 'metadata'),
      // E2B's default is on (the Python SDK always sends true): where this service gives no network, the sandbox
      // has none, and its info says so (allowInternetAccess: false).
      network: body.allow_internet_access === true && config.SANDBOX_NETWORK_ALLOWED,
    });
    templates.set(info.id, template);
    if (templates.size > 10_000) templates.delete(templates.keys().next().value as string);
    return reply.status(201).send(sandboxOf(info, owner));
  };
  app.post('/sandboxes', { config: { rawBody: true } }, (req, reply) => create(req.owner, objectBody(req.body), reply));
  app.post('/v2/sandboxes', { config: { rawBody: true } }, (req, reply) => create(req.owner, objectBody(req.body), reply));

  const connect = async (owner: string, id: string, body: Body, reply: FastifyReply) => {
    const before = await service.info(owner, { sandboxId: id });
    let info = before;
    if (before.status === 'paused') info = (await service.resume(owner, { sandboxId: id })).info;
    if (typeof body.timeout === 'number') info = await service.setIdleTimeout(owner, { sandboxId: id }, body.timeout);
    return reply.status(before.status === 'paused' ? 201 : 200).send(sandboxOf(info, owner));
  };
  for (const path of ['/sandboxes/:id/connect', '/v2/sandboxes/:id/connect', '/sandboxes/:id/resume']) {
    app.post<{ Params: { id: string } }>(path, { config: { rawBody: true } }, (req, reply) =>
      connect(req.owner, req.params.id, objectBody(req.body), reply),
    );
  }

  app.delete<{ Params: { id: string } }>('/sandboxes/:id', async (req, reply) => {
    const result = await service.stop(req.owner, req.params.id);
    if (result === 'not_found') throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `sandbox '${req.params.id.slice(0, 64)}' not found`);
    templates.delete(req.params.id);
    lastCpu.delete(req.params.id);
    return reply.status(204).send();
  });

  app.post<{ Params: { id: string } }>('/sandboxes/:id/timeout', { config: { rawBody: true } }, async (req, reply) => {
    const body = objectBody(req.body);
    if (typeof body.timeout !== 'number') throw bad('timeout must be a number of seconds');
    await service.setIdleTimeout(req.owner, { sandboxId: req.params.id }, body.timeout);
    return reply.status(204).send();
  });

  app.get<{ Params: { id: string } }>('/sandboxes/:id', async (req) => {
    const info = await service.info(req.owner, { sandboxId: req.params.id });
    return { ...listedOf(info), envdAccessToken: tokens.token(info.id, req.owner), domain: null };
  });

  app.post<{ Params: { id: string } }>('/sandboxes/:id/pause', { config: { rawBody: true } }, async (req, reply) => {
    const info = await service.info(req.owner, { sandboxId: req.params.id });
    if (info.status === 'paused') return reply.status(409).send({ code: 409, message: `sandbox '${info.id}' is already paused` });
    await service.pause(req.owner, { sandboxId: req.params.id });
    return reply.status(204).send();
  });

  app.get<{ Params: { id: string } }>('/sandboxes/:id/metrics', async (req) => {
    const usage = await service.processes.usage(req.owner, { sandboxId: req.params.id });
    const now = Date.now();
    let cpuUsedPct = 0;
    if (usage.cpuSeconds !== null) {
      const last = lastCpu.get(req.params.id);
      if (last && now > last.atMs)
        cpuUsedPct = Math.max(0, ((usage.cpuSeconds - last.seconds) / ((now - last.atMs) / 1000) / cpuCount) * 100);
      lastCpu.set(req.params.id, { atMs: now, seconds: usage.cpuSeconds });
      if (lastCpu.size > 10_000) lastCpu.delete(lastCpu.keys().next().value as string);
    }
    return [
      {
        timestamp: new Date(now).toISOString(),
        timestampUnix: Math.floor(now / 1000),
        cpuCount,
        cpuUsedPct: Math.round(cpuUsedPct * 100) / 100,
        memUsed: usage.memoryBytes ?? 0,
        memTotal: config.SANDBOX_MEMORY_BYTES,
        memCache: 0,
        diskUsed: 0,
        diskTotal: config.SANDBOX_DISK_BYTES,
      },
    ];
  });

  const list = (owner: string, query: Record<string, unknown>, reply: FastifyReply, defaultStates: readonly string[]) => {
    const states = listOf(query.state).flatMap((s) => s.split(','));
    for (const s of states) if (s !== 'running' && s !== 'paused') throw bad(`state must be running or paused, not '${s.slice(0, 50)}'`);
    const wanted = states.length > 0 ? states : defaultStates;
    const filter = metadataFilter(query.metadata);
    const limit = query.limit === undefined ? MAX_PAGE : Number(query.limit);
    if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw bad(`limit must be 1 to ${MAX_PAGE}`);
    const start = query.nextToken === undefined ? 0 : Number(Buffer.from(String(query.nextToken), 'base64url').toString());
    if (!Number.isInteger(start) || start < 0) throw bad('nextToken is not one this service gave');
    const all = service
      .list(owner)
      .filter((i) => wanted.includes(i.status) && Object.entries(filter).every(([k, v]) => i.metadata[k] === v))
      .sort((a, b) => a.createdAt.getTime() - b.createdAt.getTime() || a.id.localeCompare(b.id));
    const page = all.slice(start, start + limit);
    if (start + limit < all.length) reply.header('x-next-token', Buffer.from(String(start + limit)).toString('base64url'));
    return page.map(listedOf);
  };
  app.get('/v2/sandboxes', (req, reply) => list(req.owner, req.query as Record<string, unknown>, reply, ['running', 'paused']));
  app.get('/sandboxes', (req, reply) => list(req.owner, req.query as Record<string, unknown>, reply, ['running']));
}

function listOf(v: unknown): string[] {
  if (v === undefined) return [];
  return (Array.isArray(v) ? v : [v]).map(String);
}

/** `metadata=k1%3Dv1%26k2%3Dv2`: the SDK sends the pairs as one URL-encoded query string. */
function metadataFilter(v: unknown): Record<string, string> {
  if (v === undefined || v === '') return {};
  if (typeof v !== 'string') throw bad('metadata must be one URL-encoded string of key=value pairs');
  return Object.fromEntries([...new URLSearchParams(v)].map(([k, val]) => [decodeSafe(k), decodeSafe(val)]));
}

function decodeSafe(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
