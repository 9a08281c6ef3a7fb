/** Running code and commands. A failure of the user's code is HTTP 200 with the failure in the body. */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { ErrorResponse } from '../schemas/common.js';
import { ExecuteCommandBody, ExecuteCommandResponse, RunCodeBody, RunCodeResponse } from '../schemas/execution.js';
import type { SandboxService } from '../service/sandbox-service.js';
import type { RunCodeResult, RunCommandResult } from '../backends/types.js';
import { refOf } from './wire.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 410: ErrorResponse, 429: ErrorResponse, 503: ErrorResponse };

export const executionRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService }> = async (app, { service }) => {
  app.post('/run_code', {
    schema: {
      operationId: 'runCode',
      tags: ['execution'],
      summary: 'Run code in a sandbox',
      description: 'Runs Python (stateful: variables, imports and functions survive between calls) or a shell command line. '
        + 'Errors in the code, timeouts and non-zero exits are reported in the body with HTTP 200.',
      body: RunCodeBody,
      response: { 200: RunCodeResponse, ...errors },
    },
  }, async (req) => {
    const { code, language, timeout } = req.body;
    const { record, result, runtime } = await service.runCode(req.owner, refOf(req.body), { code, language, timeoutS: timeout });
    if (runtime === 'shell') {
      const r = result as RunCommandResult;
      return {
        sandbox_id: record.id, output: r.output, stdout: r.stdout, stderr: r.stderr, error: r.error, results: [],
        exit_code: r.exitCode, timed_out: r.timedOut, state_preserved: true, output_truncated: r.outputTruncated, duration_ms: r.durationMs,
      };
    }
    const r = result as RunCodeResult;
    const shown = r.results.find((x) => x.type === 'execute_result')?.data['text/plain'];
    const output = shown === undefined ? r.output : `${r.output}${r.output && !r.output.endsWith('\n') ? '\n' : ''}${shown}\n`;
    return {
      sandbox_id: record.id,
      output: r.error ? `${output}${output && !output.endsWith('\n') ? '\n' : ''}${r.error.traceback || `${r.error.name}: ${r.error.value}\n`}` : output,
      stdout: r.stdout, stderr: r.stderr, error: r.error, results: [...r.results], exit_code: null,
      timed_out: r.timedOut, state_preserved: r.statePreserved, output_truncated: r.outputTruncated, duration_ms: r.durationMs,
    };
  });

  app.post('/execute_command', {
    schema: {
      operationId: 'executeCommand',
      tags: ['execution'],
      summary: 'Run a shell command in a sandbox',
      description: 'Runs the command line with bash -c in the workspace, sharing files with Python. A non-zero exit or a timeout is HTTP 200 with exit_code / timed_out.',
      body: ExecuteCommandBody,
      response: { 200: ExecuteCommandResponse, ...errors },
    },
  }, async (req) => {
    const { command, timeout, cwd, env } = req.body;
    const { record, result: r } = await service.runCommand(req.owner, refOf(req.body), { command, timeoutS: timeout, cwd, env });
    return {
      sandbox_id: record.id, output: r.output, stdout: r.stdout, stderr: r.stderr, exit_code: r.exitCode, error: r.error,
      timed_out: r.timedOut, output_truncated: r.outputTruncated, duration_ms: r.durationMs,
    };
  });
};
