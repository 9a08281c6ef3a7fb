/**
 * The use cases of background processes, file watches, code contexts and file moves, once for every front
 * end (HTTP routes, MCP tools; the E2B front end maps its own protocol onto the same service calls). Input is
 * validated by the front end; results are presented by process-presenters.ts.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { ProcessOutput, SandboxRef } from '../service/sandbox-service.js';
import type { Caller } from './caller.js';
import { isBase64 } from './file-input.js';

export interface StartProcessInput {
  readonly command?: string;
  readonly cmd?: string;
  readonly args?: readonly string[];
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  readonly stdin?: boolean;
  readonly pty?: { readonly cols: number; readonly rows: number };
  readonly tag?: string;
}

/** Starts a process that runs on its own; its output is read with processOutput, its end kept until read. */
export async function startProcess(caller: Caller, ref: SandboxRef, input: StartProcessInput): Promise<{ sandboxId: string; pid: number }> {
  if ((input.command === undefined) === (input.cmd === undefined)) {
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give either command (a shell command line) or cmd (a program, with args)');
  }
  const { pid, sandboxId } = await caller.service.processes.start(caller.owner, ref, {
    cmd: input.command !== undefined ? '/bin/bash' : input.cmd!,
    args: input.command !== undefined ? ['-c', input.command] : (input.args ?? []),
    envs: input.env ?? {},
    ...(input.cwd !== undefined ? { cwd: input.cwd } : {}),
    ...(input.stdin !== undefined ? { stdin: input.stdin } : {}),
    ...(input.pty ? { pty: input.pty } : {}),
    ...(input.tag !== undefined ? { tag: input.tag } : {}),
  });
  return { sandboxId, pid };
}

/**
 * The output from byte `since` on and whether it still runs; with `waitMs`, waits that long at most for
 * something new when there is nothing yet. An ended process's status is answered once, then forgotten.
 */
export async function processOutput(caller: Caller, ref: SandboxRef, pid: number, since = 0, waitMs = 0): Promise<ProcessOutput> {
  const processes = caller.service.processes;
  if (waitMs > 0) await processes.waitFor(caller.owner, ref, pid, since, waitMs);
  return processes.output(caller.owner, ref, pid, since);
}

export const listProcesses = (caller: Caller, ref: SandboxRef) => caller.service.processes.list(caller.owner, ref);

/** The bytes a send_input carries: text (`data`) or base64 (`dataBase64`, checked), never both. */
export function inputBytes(data: string | undefined, dataBase64: string | undefined): Buffer {
  if (data !== undefined && dataBase64 !== undefined)
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give data or data_base64, not both');
  if (dataBase64 === undefined) return Buffer.from(data ?? '', 'utf8');
  if (!isBase64(dataBase64)) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'data_base64 is not valid base64');
  return Buffer.from(dataBase64, 'base64');
}

export async function sendInput(caller: Caller, ref: SandboxRef, pid: number, data: Uint8Array, close: boolean): Promise<void> {
  if (data.length > 0) await caller.service.processes.input(caller.owner, ref, pid, data);
  if (close) await caller.service.processes.closeStdin(caller.owner, ref, pid);
}

export const signalProcess = (caller: Caller, ref: SandboxRef, pid: number, signal: string) =>
  caller.service.processes.signal(caller.owner, ref, pid, signal);

export const resizeTerminal = (caller: Caller, ref: SandboxRef, pid: number, size: { cols: number; rows: number }) =>
  caller.service.processes.resize(caller.owner, ref, pid, size);

export const makeDir = (caller: Caller, ref: SandboxRef, path: string) => caller.service.files.mkdir(caller.owner, ref, path);
export const moveFile = (caller: Caller, ref: SandboxRef, source: string, destination: string) =>
  caller.service.files.move(caller.owner, ref, source, destination);
export const removeFile = (caller: Caller, ref: SandboxRef, path: string) => caller.service.files.remove(caller.owner, ref, path);
/** The entry itself: a symlink is described (with what it holds), never followed. */
export const fileInfo = (caller: Caller, ref: SandboxRef, path: string) => caller.service.files.stat(caller.owner, ref, path, false);

export const watchDir = (caller: Caller, ref: SandboxRef, path: string, recursive: boolean) =>
  caller.service.processes.watch(caller.owner, ref, path, recursive);
export const watchEvents = (caller: Caller, ref: SandboxRef, watchId: string) =>
  caller.service.processes.watchEvents(caller.owner, ref, watchId);
export const unwatchDir = (caller: Caller, ref: SandboxRef, watchId: string) =>
  caller.service.processes.unwatch(caller.owner, ref, watchId);

export async function createContext(caller: Caller, ref: SandboxRef, language = 'python', cwd?: string) {
  const l = language.trim().toLowerCase();
  const known = l === 'python' || l === 'py' ? 'python' : l === 'javascript' || l === 'js' || l === 'node' ? 'javascript' : null;
  if (!known) throw new ServiceError(ErrorCode.UNSUPPORTED_LANGUAGE, `contexts run python or javascript, not '${language.slice(0, 50)}'`);
  const info = await caller.service.processes.createContext(caller.owner, ref, known, cwd);
  const handle = await caller.service.resolve(caller.owner, ref, false);
  return { sandboxId: handle.id, ...info };
}

export const listContexts = (caller: Caller, ref: SandboxRef) => caller.service.processes.contexts(caller.owner, ref);
export const restartContext = (caller: Caller, ref: SandboxRef, id: string) =>
  caller.service.processes.restartContext(caller.owner, ref, id);
export const removeContext = (caller: Caller, ref: SandboxRef, id: string) => caller.service.processes.removeContext(caller.owner, ref, id);
