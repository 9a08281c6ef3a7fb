/** Routes of checkpoints (undo): list what a sandbox kept, roll back to one. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponse } from '../../api/schemas/common.js';
import { SandboxRefBody } from '../../api/schemas/sandboxes.js';
import * as S from '../../api/schemas/checkpoints.js';
import type { SandboxService } from '../../service/sandbox-service.js';
import type { Config } from '../../config.js';
import { refOf } from '../../api/wire.js';
import { listCheckpoints, rollback } from '../../api/checkpoint-operations.js';
import { checkpointToWire, rollbackToWire } from '../../api/checkpoint-presenters.js';
import { callerOf } from '../caller.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse };
const SMALL_BODY = 64 * 1024;

export const checkpointRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (
  app,
  { service, config },
) => {
  const caller = callerOf(service, config);
  app.post(
    '/checkpoints',
    {
      bodyLimit: SMALL_BODY,
      schema: {
        operationId: 'listCheckpoints',
        tags: ['checkpoints'],
        summary: 'List the checkpoints a sandbox kept',
        description:
          'After every run_code and execute_command the sandbox keeps a checkpoint: its Python interpreter exactly as it was (a stopped copy-on-write fork: every variable, open file and generator) and its files. The newest CHECKPOINTS_KEPT are kept, oldest first here, each with the call it was taken after and the memory and file bytes it holds. A pause drops them.',
        body: SandboxRefBody,
        response: { 200: S.ListCheckpointsResponse, ...errors },
      },
    },
    async (req) => {
      const listing = await listCheckpoints(caller(req), refOf(req.body));
      return {
        sandbox_id: listing.sandbox.id,
        kept: listing.kept,
        checkpoints: listing.checkpoints.map(checkpointToWire),
        calls_since_newest: listing.callsSinceNewest,
        ...(listing.note ? { note: listing.note } : {}),
      };
    },
  );
  app.post(
    '/rollback',
    {
      bodyLimit: SMALL_BODY,
      schema: {
        operationId: 'rollback',
        tags: ['checkpoints'],
        summary: 'Undo the last calls: variables and files together',
        description:
          'Puts the sandbox back as it was at a checkpoint: the Python interpreter (the same objects, open files, generators and random state) and the workspace (changed files put back byte for byte, newer files removed). Give steps_back (1 undoes the last call; the default) or a checkpoint_id from /checkpoints. Later checkpoints are dropped; the answer lists what was restored and what could not be.',
        body: S.RollbackBody,
        response: { 200: S.RollbackResponse, ...errors },
      },
    },
    async (req) => {
      const { sandbox, result } = await rollback(caller(req), refOf(req.body), req.body.checkpoint_id, req.body.steps_back);
      return rollbackToWire(sandbox.id, result);
    },
  );
};
