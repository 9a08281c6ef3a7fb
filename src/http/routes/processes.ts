/**
 * Routes of what runs beside calls: background processes (start, output, input, signals, terminal size,
 * list), file watches, code contexts, and file moves (make_dir, move_file, remove_file, file_info).
 */
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { Static, TSchema } from 'typebox';
import type { FastifyRequest } from 'fastify';
import { ErrorResponse } from '../../api/schemas/common.js';
import { SandboxRefBody } from '../../api/schemas/sandboxes.js';
import * as S from '../../api/schemas/processes.js';
import type { SandboxService } from '../../service/sandbox-service.js';
import type { Config } from '../../config.js';
import { refOf } from '../../api/wire.js';
import * as ops from '../../api/process-operations.js';
import { contextToWire, entryToWire, outputToWire, processToWire } from '../../api/process-presenters.js';
import { callerOf } from '../caller.js';

const errors = { 400: ErrorResponse, 401: ErrorResponse, 404: ErrorResponse, 409: ErrorResponse, 413: ErrorResponse, 429: ErrorResponse };
const SMALL_BODY = 64 * 1024;

export const processRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (app, { service, config }) => {
  const caller = callerOf(service, config);
  const route = <B extends TSchema, R extends TSchema>(
    path: string,
    operationId: string,
    tag: string,
    summary: string,
    description: string,
    body: B,
    response: R,
    handler: (req: FastifyRequest & { body: Static<B> }) => Promise<unknown>,
    bodyLimit = SMALL_BODY,
  ) =>
    app.post(
      path,
      { bodyLimit, schema: { operationId, tags: [tag], summary, description, body, response: { 200: response, ...errors } } },
      (req) => handler(req as never) as never,
    );
  const ok = async (req: FastifyRequest & { body: { sandbox_id?: string; conversation_id?: string } }) => ({
    sandbox_id: (await service.resolve(req.owner, refOf(req.body), false)).id,
    status: 'ok' as const,
  });

  route(
    '/start_process',
    'startProcess',
    'processes',
    'Start a background process',
    'Starts a command that runs on its own (a server, a long job): the call answers at once with its pid. Read its output with /process_output, write to it with /send_input, stop it with /signal_process. Limits as for commands: output past MAX_OUTPUT_BYTES is dropped, CPU per process, 32 processes per sandbox. A pause or stop of the sandbox ends it.',
    S.StartProcessBody,
    S.StartProcessResponse,
    async (req) => {
      const { sandboxId, pid } = await ops.startProcess(caller(req), refOf(req.body), req.body);
      return { sandbox_id: sandboxId, pid };
    },
    256 * 1024,
  );
  route(
    '/process_output',
    'processOutput',
    'processes',
    "Read a background process's output",
    'Output from byte `since` on (the last 64 KiB are kept) and whether it still runs; once it ended, its exit status (answered once, then forgotten). With wait_ms, waits that long at most for something new.',
    S.ProcessOutputBody,
    S.ProcessOutputResponse,
    async (req) =>
      outputToWire(await ops.processOutput(caller(req), refOf(req.body), req.body.pid, req.body.since ?? 0, req.body.wait_ms ?? 0)),
  );
  route(
    '/list_processes',
    'listProcesses',
    'processes',
    'List running background processes',
    'Processes started with /start_process that still run.',
    SandboxRefBody,
    S.ListProcessesResponse,
    async (req) => {
      const processes = await ops.listProcesses(caller(req), refOf(req.body));
      return { sandbox_id: (await service.resolve(req.owner, refOf(req.body), false)).id, processes: processes.map(processToWire) };
    },
  );
  route(
    '/send_input',
    'sendInput',
    'processes',
    "Write to a background process's stdin",
    'Text (data) or bytes (data_base64) to its stdin, or its terminal; close_stdin ends its input. The process must have been started with stdin: true or a pty.',
    S.SendInputBody,
    S.OkResponse,
    async (req) => {
      const data = ops.inputBytes(req.body.data, req.body.data_base64);
      await ops.sendInput(caller(req), refOf(req.body), req.body.pid, data, req.body.close_stdin === true);
      return ok(req);
    },
    2 * 1024 * 1024,
  );
  route(
    '/signal_process',
    'signalProcess',
    'processes',
    'Signal a background process',
    'Sends a signal (default SIGTERM; SIGKILL to be sure) to the process and everything it started.',
    S.SignalProcessBody,
    S.OkResponse,
    async (req) => {
      await ops.signalProcess(caller(req), refOf(req.body), req.body.pid, req.body.signal ?? 'SIGTERM');
      return ok(req);
    },
  );
  route(
    '/resize_terminal',
    'resizeTerminal',
    'processes',
    "Resize a process's terminal",
    'For a process started with a pty.',
    S.ResizeTerminalBody,
    S.OkResponse,
    async (req) => {
      await ops.resizeTerminal(caller(req), refOf(req.body), req.body.pid, { cols: req.body.cols, rows: req.body.rows });
      return ok(req);
    },
  );

  route(
    '/make_dir',
    'makeDir',
    'files',
    'Make a directory',
    'Makes a directory and its parents; created is false when it was there already.',
    S.PathBody,
    S.EntryResponse,
    async (req) => {
      const made = await ops.makeDir(caller(req), refOf(req.body), req.body.path);
      return { sandbox_id: made.sandbox.id, entry: entryToWire(made.entry), created: made.created };
    },
  );
  route(
    '/move_file',
    'moveFile',
    'files',
    'Move or rename a file or directory',
    'Inside the workspace; a symlink is moved as itself, never followed.',
    S.MoveFileBody,
    S.EntryResponse,
    async (req) => {
      const moved = await ops.moveFile(caller(req), refOf(req.body), req.body.source, req.body.destination);
      return { sandbox_id: moved.sandbox.id, entry: entryToWire(moved.entry) };
    },
  );
  route(
    '/remove_file',
    'removeFile',
    'files',
    'Remove a file or directory',
    'A file, a symlink (not what it points to), or a directory with everything in it.',
    S.PathBody,
    S.OkResponse,
    async (req) => {
      const { sandbox } = await ops.removeFile(caller(req), refOf(req.body), req.body.path);
      return { sandbox_id: sandbox.id, status: 'ok' as const };
    },
  );
  route(
    '/file_info',
    'fileInfo',
    'files',
    'Facts of a file',
    'Type, size, time, permissions, owner; a symlink as itself, with what it holds.',
    S.PathBody,
    S.EntryResponse,
    async (req) => {
      const { sandbox, entry } = await ops.fileInfo(caller(req), refOf(req.body), req.body.path);
      return { sandbox_id: sandbox.id, entry: entryToWire(entry) };
    },
  );

  route(
    '/watch_dir',
    'watchDir',
    'files',
    'Watch a directory for changes',
    'Starts recording what changes in a directory (create, write, remove, rename, chmod); read them with /watch_events. At most 16 watches per sandbox; a pause ends them.',
    S.WatchDirBody,
    S.WatchDirResponse,
    async (req) => {
      const w = await ops.watchDir(caller(req), refOf(req.body), req.body.path, req.body.recursive === true);
      return { sandbox_id: w.sandboxId, watch_id: w.watchId, path: w.path };
    },
  );
  route(
    '/watch_events',
    'watchEvents',
    'files',
    "A watch's events since the last look",
    'At most the last 1000.',
    S.WatchRefBody,
    S.WatchEventsResponse,
    async (req) => ops.watchEvents(caller(req), refOf(req.body), req.body.watch_id),
  );
  route('/unwatch_dir', 'unwatchDir', 'files', 'Stop watching a directory', '', S.WatchRefBody, S.OkResponse, async (req) => {
    await ops.unwatchDir(caller(req), refOf(req.body), req.body.watch_id);
    return ok(req);
  });

  route(
    '/create_context',
    'createContext',
    'execution',
    'Create a code context',
    'Another interpreter in the same sandbox (python or javascript) with its own variables and working directory: pass its context_id to /run_code. At most 8 per sandbox; they are not kept across a pause (the resume says so).',
    S.CreateContextBody,
    S.CreateContextResponse,
    async (req) => {
      const { sandboxId, ...info } = await ops.createContext(caller(req), refOf(req.body), req.body.language, req.body.cwd);
      return { sandbox_id: sandboxId, ...contextToWire(info) };
    },
  );
  route('/list_contexts', 'listContexts', 'execution', 'List code contexts', '', SandboxRefBody, S.ListContextsResponse, async (req) => ({
    sandbox_id: (await service.resolve(req.owner, refOf(req.body), false)).id,
    contexts: (await ops.listContexts(caller(req), refOf(req.body))).map(contextToWire),
  }));
  route(
    '/restart_context',
    'restartContext',
    'execution',
    'Restart a code context',
    'Its variables are gone; its next call starts a new interpreter.',
    S.ContextRefBody,
    S.OkResponse,
    async (req) => {
      await ops.restartContext(caller(req), refOf(req.body), req.body.context_id);
      return ok(req);
    },
  );
  route('/remove_context', 'removeContext', 'execution', 'Remove a code context', '', S.ContextRefBody, S.OkResponse, async (req) => {
    await ops.removeContext(caller(req), refOf(req.body), req.body.context_id);
    return ok(req);
  });
};
