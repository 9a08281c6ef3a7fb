/** Running code and commands. A failure of the user's code is HTTP 200 with the failure in the body. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Config } from '../../config.js';
import type { FastifyRequest } from 'fastify';
import { outcomeOf } from '../../api/outcome.js';
import { ErrorResponse } from '../../api/schemas/common.js';
import { ExecuteCommandBody, ExecuteCommandResponse, RunCodeBody, RunCodeResponse } from '../../api/schemas/execution.js';
import type { SandboxService } from '../../service/sandbox-service.js';
import { refOf } from '../../api/wire.js';
import { commandToWire, runCodeToWire } from '../../api/run-presenters.js';
import { resolveSandbox, runCode, runCommand, type OutputListener } from '../../api/sandbox-operations.js';
import { streamFormat, streamReply, type Emit } from '../streaming.js';
import { callerOf } from '../caller.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 410: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse };
const STREAM_NOTE =
  ' With `stream` (true / "ndjson" / "sse", or `Accept: text/event-stream`) the answer is a stream of ' +
  'stdout/stderr events, then result and file events, then `end` carrying this same object.';

const toEmit =
  (emit: Emit): OutputListener =>
  (stream, text) =>
    emit(stream, { data: text });

export const executionRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (app, { service, config }) => {
  const caller = callerOf(service, config);
  app.post(
    '/run_code',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'runCode',
        tags: ['execution'],
        summary: 'Run code in a sandbox',
        description:
          'Runs Python or JavaScript (stateful: variables, imports and functions survive between calls) or a shell ' +
          'command line. Errors in the code, timeouts and limits are reported in the body with HTTP 200. Figures and other ' +
          'files the code creates come back in `files` with signed URLs, and `markdown` shows it all in a chat.' +
          STREAM_NOTE,
        body: RunCodeBody,
        response: { 200: RunCodeResponse, ...errors },
      },
    },
    async (req, reply) => {
      const { code, language, timeout, inline_images: inlineImages } = req.body;
      const extra = { ...(req.body.context_id ? { context: req.body.context_id } : {}), ...(req.body.env ? { env: req.body.env } : {}) };
      const format = streamFormat(req, req.body.stream);
      if (format) {
        // Problems with the request itself (unknown sandbox, bad timeout) are still plain 4xx answers.
        const ref = await resolveSandbox(caller(req), refOf(req.body));
        return streamReply(req, reply, format, async (emit) => {
          const { outcome, link } = await runCode(
            caller(req),
            ref,
            {
              code,
              language,
              timeoutS: timeout,
              inlineImages,
              onOutput: toEmit(emit),
              ...extra,
            },
            config.REPLY_MAX_BYTES,
          );
          return runCodeToWire(outcome, link);
        });
      }
      const { outcome, link } = await runCode(
        caller(req),
        refOf(req.body),
        { code, language, timeoutS: timeout, inlineImages, ...extra },
        config.REPLY_MAX_BYTES,
      );
      return counted(req, runCodeToWire(outcome, link));
    },
  );

  app.post(
    '/execute_command',
    {
      config: { idempotent: true },
      schema: {
        operationId: 'executeCommand',
        tags: ['execution'],
        summary: 'Run a shell command in a sandbox',
        description:
          'Runs the command line with bash -c in the workspace, sharing files with Python. A non-zero exit, a timeout ' +
          'or a limit is HTTP 200 with exit_code / timed_out / error.' +
          STREAM_NOTE,
        body: ExecuteCommandBody,
        response: { 200: ExecuteCommandResponse, ...errors },
      },
    },
    async (req, reply) => {
      const { command, timeout, cwd, env } = req.body;
      const format = streamFormat(req, req.body.stream);
      if (format) {
        const ref = await resolveSandbox(caller(req), refOf(req.body));
        return streamReply(req, reply, format, async (emit) => {
          const { sandboxId, result, link, lifecycle, usage } = await runCommand(
            caller(req),
            ref,
            {
              command,
              timeoutS: timeout,
              cwd,
              env,
              onOutput: toEmit(emit),
            },
            config.REPLY_MAX_BYTES,
          );
          return commandToWire(sandboxId, result, link, lifecycle, usage);
        });
      }
      const { sandboxId, result, link, lifecycle, usage } = await runCommand(
        caller(req),
        refOf(req.body),
        {
          command,
          timeoutS: timeout,
          cwd,
          env,
        },
        config.REPLY_MAX_BYTES,
      );
      return counted(req, commandToWire(sandboxId, result, link, lifecycle, usage));
    },
  );
};

/** Tells the metrics what came of the code (its outcome, and whether its interpreter was restarted). */
function counted<W extends { error: { name: string } | null; timed_out: boolean; state_preserved?: boolean }>(
  req: FastifyRequest,
  wire: W,
): W {
  req.outcome = outcomeOf(wire.error, wire.timed_out);
  req.restarted = wire.state_preserved === false;
  return wire;
}
