/**
 * MCP tools for what runs beside calls — background processes an agent starts and comes back to (a server, a
 * long job), code contexts, and moving or removing files — over the same operations as the HTTP routes.
 */
import { Type, type TSchema } from 'typebox';
import * as S from '../api/schemas/processes.js';
import * as ops from '../api/process-operations.js';
import { contextToWire, entryToWire, outputToWire, processToWire } from '../api/process-presenters.js';
import { SandboxRefBody } from '../api/schemas/sandboxes.js';
import { type Tool, caller, ref, text } from './tool.js';

// Tool UIs map parameters to flat fields: no object-valued options (env, pty) here; HTTP has them.
const StartInput = Type.Omit(S.StartProcessBody, ['env', 'pty', 'cmd', 'args']);
const startProcess: Tool<typeof StartInput> = {
  name: 'start_process',
  title: 'Start a background process',
  description:
    'Starts a shell command that keeps running on its own (a web server, a long computation, a watcher) and answers at ' +
    'once with its pid. Use process_output to see what it printed and whether it ended, send_input to type into it ' +
    '(start it with stdin true), signal_process to stop it. For commands that finish quickly, use run_code with language ' +
    '"bash" instead. Give sandbox_id or conversation_id.',
  inputSchema: StartInput,
  async run(a, ctx) {
    if (a.command === undefined) return { content: [text('VALIDATION_FAILED: command is required')], isError: true };
    const { sandboxId, pid } = await ops.startProcess(caller(ctx), ref(a), a);
    return { content: [text(`started pid ${pid} in ${sandboxId}`)], structuredContent: { sandbox_id: sandboxId, pid } };
  },
};

const processOutput: Tool<typeof S.ProcessOutputBody> = {
  name: 'process_output',
  title: "Read a background process's output",
  description:
    "What a process started with start_process printed, from byte `since` on (pass the previous answer's `next` to get " +
    'only what is new), and whether it still runs or how it ended. wait_ms (up to 30000) waits for something new first.',
  inputSchema: S.ProcessOutputBody,
  async run(a, ctx) {
    const wire = outputToWire(await ops.processOutput(caller(ctx), ref(a), a.pid, a.since ?? 0, a.wait_ms ?? 0));
    const state = wire.running ? 'still running' : `ended: ${wire.status}${wire.error ? ` (${wire.error})` : ''}`;
    return { content: [text(`${wire.output || '(no new output)'}\n[${state}; next: ${wire.next}]`)], structuredContent: wire };
  },
};

const sendInput: Tool<typeof S.SendInputBody> = {
  name: 'send_input',
  title: 'Type into a background process',
  description:
    'Writes text to the stdin of a process started with start_process and stdin true (remember the trailing newline); ' +
    'close_stdin true ends its input.',
  inputSchema: S.SendInputBody,
  async run(a, ctx) {
    const data = ops.inputBytes(a.data, a.data_base64);
    await ops.sendInput(caller(ctx), ref(a), a.pid, data, a.close_stdin === true);
    return { content: [text(`wrote ${data.length} bytes to pid ${a.pid}${a.close_stdin ? ' and closed its stdin' : ''}`)] };
  },
};

const signalProcess: Tool<typeof S.SignalProcessBody> = {
  name: 'signal_process',
  title: 'Stop a background process',
  description: 'Sends SIGTERM (default) or another signal (SIGKILL to be sure, SIGINT like Ctrl-C) to a process and all it started.',
  inputSchema: S.SignalProcessBody,
  async run(a, ctx) {
    await ops.signalProcess(caller(ctx), ref(a), a.pid, a.signal ?? 'SIGTERM');
    return { content: [text(`sent ${a.signal ?? 'SIGTERM'} to pid ${a.pid}`)] };
  },
};

const listProcesses: Tool<typeof SandboxRefBody> = {
  name: 'list_processes',
  title: 'List background processes',
  description: 'The processes started with start_process that still run in the sandbox.',
  inputSchema: SandboxRefBody,
  async run(a, ctx) {
    const processes = (await ops.listProcesses(caller(ctx), ref(a))).map(processToWire);
    const lines = processes.map((p) => `${p.pid}: ${[p.cmd, ...p.args].join(' ')}`);
    return { content: [text(lines.join('\n') || '(none)')], structuredContent: { processes } };
  },
};

const createContext: Tool<typeof S.CreateContextBody> = {
  name: 'create_context',
  title: 'Create a separate interpreter',
  description:
    'Another Python (or JavaScript) interpreter in the same sandbox, with its own variables: pass its context_id to ' +
    "run_code to try something without touching the main interpreter's variables. Files are shared.",
  inputSchema: S.CreateContextBody,
  async run(a, ctx) {
    const { sandboxId, ...info } = await ops.createContext(caller(ctx), ref(a), a.language, a.cwd);
    const wire = { sandbox_id: sandboxId, ...contextToWire(info) };
    return { content: [text(`context_id: ${wire.context_id} (${wire.language})`)], structuredContent: wire };
  },
};

const moveFile: Tool<typeof S.MoveFileBody> = {
  name: 'move_file',
  title: 'Move or rename a file',
  description: 'Moves or renames a file or directory inside the sandbox.',
  inputSchema: S.MoveFileBody,
  async run(a, ctx) {
    const { sandbox, entry } = await ops.moveFile(caller(ctx), ref(a), a.source, a.destination);
    return { content: [text(`moved to ${entry.path}`)], structuredContent: { sandbox_id: sandbox.id, entry: entryToWire(entry) } };
  },
};

const removeFile: Tool<typeof S.PathBody> = {
  name: 'remove_file',
  title: 'Remove a file or directory',
  description: 'Deletes a file or a whole directory in the sandbox. It cannot be undone.',
  inputSchema: S.PathBody,
  async run(a, ctx) {
    await ops.removeFile(caller(ctx), ref(a), a.path);
    return { content: [text(`removed ${a.path}`)] };
  },
};

export const PROCESS_TOOLS = [
  startProcess,
  processOutput,
  sendInput,
  signalProcess,
  listProcesses,
  createContext,
  moveFile,
  removeFile,
] as Tool<TSchema>[];
