/** Lifecycle routes: create, info, list, pause, resume, fork, stop. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponse, SandboxInfoSchema } from '../../api/schemas/common.js';
import {
  CreateSandboxBody,
  CreateSandboxResponse,
  ListSandboxesResponse,
  ForkSandboxResponse,
  PauseSandboxResponse,
  ResumeSandboxResponse,
  SandboxRefBody,
  StopSandboxResponse,
} from '../../api/schemas/sandboxes.js';
import type { SandboxService } from '../../service/sandbox-service.js';
import type { FastifyRequest } from 'fastify';
import type { Config } from '../../config.js';
import { forkedToWire, infoToWire, pausedToWire, refOf, resumedToWire } from '../../api/wire.js';
import {
  createSandbox,
  forkSandbox,
  listSandboxes,
  pauseSandbox,
  resumeSandbox,
  sandboxInfo,
  stopSandbox,
} from '../../api/sandbox-operations.js';
import { callerOf } from '../caller.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse };
/** A body that only names a sandbox (sandbox_id or conversation_id) needs no more: a larger one is a 413 at once. */
const REF_BODY_LIMIT = 64 * 1024;

export const sandboxRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (app, { service, config }) => {
  const caller = callerOf(service, config);
  app.post(
    '/create_sandbox',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'createSandbox',
        tags: ['sandboxes'],
        summary: "Create a sandbox (or return the conversation's live one)",
        description:
          "Starts an isolated sandbox with a stateful Python interpreter and a shell. With conversation_id, returns that conversation's live sandbox if there is one (reused: true).",
        body: CreateSandboxBody,
        response: { 200: CreateSandboxResponse, ...errors, 403: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse },
      },
    },
    async (req) => {
      const body = req.body;
      const { info, reused } = await createSandbox(caller(req), {
        conversationId: body.conversation_id,
        idleTimeoutS: body.idle_timeout_seconds,
        maxLifetimeS: body.max_lifetime_seconds,
        env: body.env,
        network: body.network,
      });
      return { sandbox_id: info.id, info: infoToWire(info), reused };
    },
  );

  app.post(
    '/get_sandbox_info',
    {
      bodyLimit: REF_BODY_LIMIT,
      schema: {
        operationId: 'getSandboxInfo',
        tags: ['sandboxes'],
        summary: 'Describe a sandbox',
        description: "Returns the sandbox's info object: status, backend, creation and expiry times.",
        body: SandboxRefBody,
        response: { 200: SandboxInfoSchema, ...errors },
      },
    },
    async (req) => infoToWire(await sandboxInfo(caller(req), refOf(req.body))),
  );

  const listSchema = {
    tags: ['sandboxes'],
    summary: 'List your live sandboxes',
    description: "Every live sandbox created with the caller's API key.",
    response: { 200: ListSandboxesResponse, 401: ErrorResponse },
  };
  const list = async (req: FastifyRequest) => ({ sandboxes: listSandboxes(caller(req)).map(infoToWire) });
  app.get('/sandboxes', { schema: { ...listSchema, operationId: 'listSandboxes' } }, list);
  app.post('/list_sandboxes', { bodyLimit: REF_BODY_LIMIT, schema: { ...listSchema, operationId: 'listSandboxesPost' } }, list);

  app.post(
    '/pause_sandbox',
    {
      bodyLimit: REF_BODY_LIMIT,
      schema: {
        operationId: 'pauseSandbox',
        tags: ['sandboxes'],
        summary: 'Pause a sandbox to disk',
        description:
          'Stores the workspace (byte for byte) and the variables that can be saved, then ends every process of the sandbox: it holds no memory until a call resumes it under the same id. Idle sandboxes are paused this way on their own (idle timeout). Lists what could not be saved (open files, generators…).',
        body: SandboxRefBody,
        response: { 200: PauseSandboxResponse, ...errors, 409: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse },
      },
    },
    async (req) => {
      const { info, kernels } = await pauseSandbox(caller(req), refOf(req.body));
      return pausedToWire(info, kernels);
    },
  );

  app.post(
    '/resume_sandbox',
    {
      bodyLimit: REF_BODY_LIMIT,
      schema: {
        operationId: 'resumeSandbox',
        tags: ['sandboxes'],
        summary: 'Resume a paused sandbox',
        description:
          'Brings a paused sandbox back now, under the same id, with its files and saved variables (any other call to it does the same). notice says what was not restored.',
        body: SandboxRefBody,
        response: { 200: ResumeSandboxResponse, ...errors, 429: ErrorResponse, 503: ErrorResponse },
      },
    },
    async (req) => {
      const { info, lifecycle } = await resumeSandbox(caller(req), refOf(req.body));
      return resumedToWire(info, lifecycle);
    },
  );

  app.post(
    '/fork_sandbox',
    {
      bodyLimit: REF_BODY_LIMIT,
      schema: {
        operationId: 'forkSandbox',
        tags: ['sandboxes'],
        summary: 'Fork a sandbox',
        description:
          'Makes a new sandbox (new id, same API key) with a copy of the files and of the variables that can be saved, to try something without touching the original. The fork starts paused: its first call resumes it. The two then diverge.',
        body: SandboxRefBody,
        response: { 200: ForkSandboxResponse, ...errors, 409: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse },
      },
    },
    async (req) => {
      const { source, info, kernels } = await forkSandbox(caller(req), refOf(req.body));
      return forkedToWire(source, info, kernels);
    },
  );

  app.post(
    '/stop_sandbox',
    {
      bodyLimit: REF_BODY_LIMIT,
      schema: {
        operationId: 'stopSandbox',
        tags: ['sandboxes'],
        summary: 'Stop a sandbox',
        description:
          'Kills every process of the sandbox and deletes its workspace, and its stored state if it was paused. Answers status not_found (HTTP 200) for an unknown id, as the original project did.',
        body: SandboxRefBody,
        response: { 200: StopSandboxResponse, 400: ErrorResponse, 401: ErrorResponse },
      },
    },
    async (req) => {
      const { status, sandboxId } = await stopSandbox(caller(req), refOf(req.body));
      return { status, sandbox_id: sandboxId };
    },
  );
};
