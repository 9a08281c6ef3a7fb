/**
 * One AgentCube session as a Sandbox. Python and JavaScript run in the wrapper's own agent, started in the
 * pod as a daemon beside PicoD (PicoD runs each command to completion, so a stateful interpreter must live
 * detached from it); each call is one PicoD execute of `agent.py --call`. Shell commands are PicoD executes
 * of `bash -c`; files go through PicoD's file API. When the agent cannot run in the image, code runs as one
 * script per call, as AgentCube itself does, and every result says the state was not kept and why.
 */
import { posix } from 'node:path';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import type {
  CodeError,
  DirectoryListing,
  FileEntry,
  RunCodeOptions,
  RunCodeResult,
  RunCommandOptions,
  RunCommandResult,
  Sandbox,
  SandboxFiles,
} from '../types.js';
import type { AgentCubeClient } from './client.js';
import { toRunCodeResult } from '../agent/reply.js';
import { agentRequest, type AgentRequest } from '../agent/protocol.js';

export const AGENT_DIR = '.ciw';
export const AGENT_SOCKET = 'agent.sock';
/** Agent requests up to this size travel as a command-line argument; larger ones as an uploaded file. */
const ARGV_MAX = 96 * 1024;
const SLACK_MS = 15_000;

export interface SandboxState {
  /** The pod's workspace (PicoD's working directory), absolute. */
  readonly workspace: string;
  /** 'agent' when the stateful agent runs; 'script' when each call is a new process. */
  readonly mode: 'agent' | 'script';
  /** Why the agent is not used, in script mode. */
  readonly reason?: string;
  readonly owner: string;
}

export interface AgentCubeSandboxOptions {
  readonly maxOutputBytes: number;
  readonly graceMs: number;
  /** Restarts the agent daemon (after it died); resolves to true when it answers again. */
  readonly restartAgent: (s: AgentCubeSandbox) => Promise<boolean>;
}

const cap = (text: string, max: number) =>
  Buffer.byteLength(text) <= max ? { text, cut: false } : { text: Buffer.from(text).subarray(0, max).toString('utf8'), cut: true };

export class AgentCubeSandbox implements Sandbox {
  readonly workspace: string;
  readonly files: SandboxFiles;
  destroyed = false;
  private sequence = 0;

  constructor(
    readonly id: string,
    readonly sessionId: string,
    public state: SandboxState,
    private readonly client: AgentCubeClient,
    private readonly opts: AgentCubeSandboxOptions,
  ) {
    this.workspace = state.workspace;
    this.files = {
      write: async (path, data) => {
        const w = await this.client.writeFile(this.live(), this.rel(path), data);
        return { path: this.abs(w.path), size: w.size };
      },
      read: async (path, maxBytes) => {
        const entry = await this.files.stat(path);
        if (entry.type === 'directory') throw new ServiceError(ErrorCode.IS_A_DIRECTORY, `${entry.path} is a directory, not a file`);
        if (entry.size > maxBytes)
          throw new ServiceError(ErrorCode.FILE_TOO_LARGE, `${entry.path} is ${entry.size} bytes, more than the ${maxBytes}-byte limit`);
        return { path: entry.path, data: await this.client.download(this.live(), this.rel(path)) };
      },
      stat: async (path) => {
        const rel = this.rel(path);
        if (rel === '.') return { name: posix.basename(this.workspace), path: this.workspace, type: 'directory', size: 0, modifiedMs: 0 };
        const parent = posix.dirname(rel);
        const name = posix.basename(rel);
        const found = (await this.client.listDir(this.live(), parent)).find((e) => e.name === name);
        if (!found) throw new ServiceError(ErrorCode.FILE_NOT_FOUND, `no such file or directory in the sandbox: ${this.abs(rel)}`);
        return {
          name,
          path: this.abs(rel),
          type: found.isDir ? 'directory' : 'file',
          size: found.size,
          modifiedMs: Date.parse(found.modified) || 0,
        };
      },
      list: async (path, options): Promise<DirectoryListing> => {
        const root = this.rel(path);
        const entries: FileEntry[] = [];
        const queue = [root];
        let truncated = false;
        while (queue.length > 0 && !truncated) {
          const dir = queue.shift()!;
          for (const e of await this.client.listDir(this.live(), dir)) {
            if (dir === '.' && e.name === AGENT_DIR) continue; // the agent's own files
            if (entries.length >= options.limit) {
              truncated = true;
              break;
            }
            const rel = dir === '.' ? e.name : `${dir}/${e.name}`;
            entries.push({
              name: e.name,
              path: this.abs(rel),
              type: e.isDir ? 'directory' : 'file',
              size: e.size,
              modifiedMs: Date.parse(e.modified) || 0,
            });
            if (e.isDir && options.recursive) queue.push(rel);
          }
        }
        return { path: this.abs(root), entries, truncated };
      },
    };
  }

  private live(): string {
    if (this.destroyed) throw new ServiceError(ErrorCode.SANDBOX_LOST, 'the sandbox was stopped');
    return this.sessionId;
  }

  /** A sandbox path as PicoD wants it: relative to the workspace (PicoD also maps absolute paths there). */
  rel(path: string): string {
    if (path === '' || path.includes('\0')) throw new ServiceError(ErrorCode.BAD_PATH, 'path must be a non-empty string without NUL bytes');
    let p = path;
    if (posix.isAbsolute(p)) {
      if (p !== this.workspace && !p.startsWith(`${this.workspace}/`)) {
        throw new ServiceError(ErrorCode.PATH_OUTSIDE_WORKSPACE, `path '${path}' is outside the workspace ${this.workspace}`);
      }
      p = posix.relative(this.workspace, p) || '.';
    }
    const norm = posix.normalize(p);
    if (norm === '..' || norm.startsWith('../'))
      throw new ServiceError(ErrorCode.PATH_OUTSIDE_WORKSPACE, `path '${path}' resolves outside the workspace ${this.workspace}`);
    return norm.replace(/\/$/, '') || '.';
  }

  private abs(rel: string): string {
    return rel === '.' ? this.workspace : posix.join(this.workspace, rel);
  }

  /** Ends the AgentCube session (its pod). Idempotent. */
  async destroy(): Promise<void> {
    if (this.destroyed) return;
    this.destroyed = true;
    await this.client.deleteSession(this.sessionId);
  }

  /** One request to the agent daemon, through PicoD. Null when the daemon is not running. */
  async agent(request: AgentRequest, timeoutMs: number): Promise<Record<string, unknown> | null> {
    const id = this.live();
    const json = JSON.stringify({ id: ++this.sequence, ...request });
    let arg = json;
    if (Buffer.byteLength(json) > ARGV_MAX) {
      const file = `${AGENT_DIR}/request-${this.sequence}.json`;
      await this.client.writeFile(id, file, Buffer.from(json));
      arg = `@${this.abs(file)}`;
    }
    const r = await this.client.execute(
      id,
      ['python3', '-S', `${this.workspace}/${AGENT_DIR}/agent.py`, '--call', `${this.workspace}/${AGENT_DIR}/${AGENT_SOCKET}`, arg],
      { timeoutMs },
    );
    const line = r.stdout.trim().split('\n').pop() ?? '';
    let reply: Record<string, unknown>;
    try {
      reply = JSON.parse(line) as Record<string, unknown>;
    } catch {
      return null;
    }
    if (reply.ok === false && reply.code === 'AGENT_NOT_RUNNING') return null;
    if (reply.ok !== true) {
      throw new ServiceError(ErrorCode.INTERNAL_ERROR, `the sandbox agent failed: ${String(reply.message ?? line).slice(0, 300)}`);
    }
    return reply;
  }

  async runCode(options: RunCodeOptions): Promise<RunCodeResult> {
    if (this.state.mode === 'script') return this.runScript(options);
    const request = agentRequest('exec', {
      code: options.code,
      timeout_ms: options.timeoutMs,
      language: options.language ?? 'python',
      inline_images: options.inlineImages === true,
    });
    const deadline = options.timeoutMs + this.opts.graceMs + SLACK_MS;
    let h = await this.agent(request, deadline);
    let restarted = false;
    if (!h) {
      // The daemon is gone (killed by user code, or the pod restarted): start it again; the state is lost.
      if (!(await this.opts.restartAgent(this))) return this.runScript(options);
      restarted = true;
      h = await this.agent(request, deadline);
      if (!h) return this.runScript(options);
    }
    const result = toRunCodeResult(h);
    if (options.onOutput && result.output) options.onOutput('stdout', result.output);
    return restarted
      ? {
          ...result,
          statePreserved: false,
          notice: 'the agent in the sandbox had stopped and was restarted: variables from earlier calls are lost',
        }
      : result;
  }

  /** AgentCube's own model: the code as a file, one new process. */
  private async runScript(options: RunCodeOptions): Promise<RunCodeResult> {
    const id = this.live();
    const js = options.language === 'javascript';
    const file = `script_${Date.now()}_${++this.sequence}.${js ? 'js' : 'py'}`;
    await this.client.writeFile(id, file, Buffer.from(options.code, 'utf8'));
    const started = Date.now();
    const r = await this.client.execute(id, [js ? 'node' : 'python3', file], { timeoutMs: options.timeoutMs });
    const timedOut = r.exitCode === 124;
    const out = cap(r.stdout, this.opts.maxOutputBytes);
    const err = cap(r.stderr, this.opts.maxOutputBytes);
    const error: CodeError | null = timedOut
      ? { name: 'ExecutionTimeout', value: `the script exceeded the ${options.timeoutMs / 1000} s timeout`, traceback: '' }
      : r.exitCode !== 0
        ? { name: 'ScriptFailed', value: `exit code ${r.exitCode}`, traceback: r.stderr }
        : null;
    if (options.onOutput && (out.text || err.text)) options.onOutput('stdout', out.text + err.text);
    return {
      stdout: out.text,
      stderr: err.text,
      output: out.text + err.text,
      outputTruncated: out.cut || err.cut,
      results: [],
      error,
      timedOut,
      statePreserved: false,
      durationMs: Date.now() - started,
      files: [],
      filesTruncated: false,
      notice: `no state between calls: ${this.state.reason ?? 'the stateful agent is not running'}; each call runs as a new process`,
    };
  }

  async runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
    const id = this.live();
    const started = Date.now();
    const r = await this.client.execute(id, ['bash', '-c', options.command], {
      timeoutMs: options.timeoutMs,
      workingDir: options.cwd ? this.rel(options.cwd) : undefined,
      env: options.env,
    });
    const timedOut = r.exitCode === 124;
    const out = cap(r.stdout, this.opts.maxOutputBytes);
    const err = cap(r.stderr, this.opts.maxOutputBytes);
    // PicoD answers when the command has ended: "streaming" delivers everything at once.
    if (options.onOutput) {
      if (out.text) options.onOutput('stdout', out.text);
      if (err.text) options.onOutput('stderr', err.text);
    }
    const error: CodeError | null = timedOut
      ? { name: 'ExecutionTimeout', value: 'the command exceeded its timeout and was killed', traceback: '' }
      : r.exitCode !== 0
        ? { name: 'CommandFailed', value: `exit code ${r.exitCode}`, traceback: '' }
        : null;
    return {
      stdout: out.text,
      stderr: err.text,
      output: out.text + err.text,
      outputTruncated: out.cut || err.cut,
      exitCode: r.exitCode,
      error,
      timedOut,
      durationMs: Date.now() - started,
      files: [],
      filesTruncated: false,
      notice:
        'on the AgentCube backend commands run through PicoD: files they change are not listed, and streamed output arrives when the command ends',
    };
  }

  pids(): readonly number[] {
    return [];
  }

  onExit(): void {
    // AgentCube ends sessions on its own schedule; the next call then says SANDBOX_NOT_FOUND.
  }
}
