/** One live local sandbox: a bubblewrap process tree with the agent inside, reached over its pipes, and its Python kernel over the direct channel (fd 3). */
import type { ChildProcess } from 'node:child_process';
import { posix } from 'node:path';
import type { Duplex } from 'node:stream';
import { AgentConnection, AgentFailure, type FrameLimits } from './agent-connection.js';
import { KernelChannel } from './kernel-channel.js';
import { agentFiles } from './agent-files.js';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import type { LimitCounters, SandboxCgroup } from './cgroups.js';
import { processTree } from './proc.js';
import { toArtifacts, toCodeError, toRunCodeResult } from '../agent/reply.js';
import { agentRequest } from '../agent/protocol.js';
import type {
  CodeError,
  OutputListener,
  RunCodeOptions,
  RunCodeResult,
  RunCommandOptions,
  RunCommandResult,
  Sandbox,
  SandboxFiles,
} from '../types.js';

/** Slack on top of a call's own timeout before the agent is declared hung (it handles timeouts itself). */
const AGENT_SLACK_MS = 10_000;
/** Bound on a control operation of the supervisor (start, interrupt or restart the kernel). */
const CONTROL_DEADLINE_MS = 70_000;

/** Why a call on the direct channel ended without a reply. */
class KernelGone extends Error {
  constructor(
    readonly why: 'hung' | 'exited',
    message: string,
  ) {
    super(message);
  }
}

const STATE_LOST = 'the Python process was restarted and its state (variables, imports) is lost';

export interface LocalSandboxParts {
  readonly id: string;
  /** The sandbox's cgroups (a no-op object when the host has none). */
  readonly cgroup?: SandboxCgroup;
  readonly workspace: string;
  readonly child: ChildProcess;
  readonly graceMs: number;
  readonly listPids: () => number[];
  /** Bounds on the agent's frames. */
  readonly frameLimits: FrameLimits;
  /** Kills every process of the sandbox (default: SIGKILL to the child, enough under bubblewrap). */
  readonly killTree?: () => void | Promise<void>;
  /** Runs after the child has exited, before destroy() resolves: makes sure nothing is left behind. */
  readonly afterExit?: () => Promise<void>;
  /** Started for the pool, with its Python kernel already running. */
  readonly warm?: boolean;
  /** The output cap of a call (MAX_OUTPUT_BYTES), for messages. */
  readonly maxOutputBytes: number;
  /** The sandbox's fd 3, the direct channel to its Python kernel (used if the agent says it serves it). */
  readonly kernelSocket?: Duplex;
}

export class LocalSandbox implements Sandbox {
  readonly id: string;
  readonly workspace: string;
  readonly files: SandboxFiles;
  readonly connection: AgentConnection;
  readonly exited: Promise<void>;
  private readonly child: ChildProcess;
  private readonly graceMs: number;
  private readonly listPids: () => number[];
  private readonly killTree: () => void | Promise<void>;
  private readonly exitListeners: Array<(reason: string) => void> = [];
  private destroying = false;
  private stderrTail = '';
  private readonly cgroup: SandboxCgroup | undefined;
  private lastCounters: LimitCounters = { oomKills: 0, pidsRefused: 0 };
  /** The direct channel to the Python kernel, once the agent said it serves one. */
  private channel: KernelChannel | null = null;
  private readonly kernelSocket: Duplex | undefined;
  private readonly maxOutputBytes: number;
  private readonly frameLimits: FrameLimits;
  private kernelRunning = false;
  /** Whether a kernel was ever asked for (or started warm, for the pool). */
  private kernelEverStarted: boolean;
  /** Why the kernel is gone, if it ended between calls (said in the next result). */
  private kernelLost: string | null = null;
  /**
   * Who saw the workspace last, the kernel or the supervisor: each lists the files a call created or
   * changed against its own picture of the workspace, and must look again when the other ran since.
   */
  private lastLook: 'kernel' | 'agent' = 'agent';

  constructor(parts: LocalSandboxParts) {
    this.id = parts.id;
    this.workspace = parts.workspace;
    this.child = parts.child;
    this.graceMs = parts.graceMs;
    this.listPids = parts.listPids;
    this.killTree = parts.killTree ?? (() => void this.child.kill('SIGKILL'));
    this.cgroup = parts.cgroup;
    if (this.cgroup && parts.child.pid) this.cgroup.addProcess(parts.child.pid);
    this.connection = new AgentConnection(parts.child, (reason) => this.kill(reason), parts.frameLimits);
    this.kernelSocket = parts.kernelSocket;
    this.kernelEverStarted = parts.warm === true;
    // The agent is gone: close the kernel's channel too, so that a kernel left behind (unsandboxed mode
    // has no pid namespace to take it along) reads its end and exits, and 'close' can come.
    parts.child.once('exit', () => this.kernelSocket?.destroy());
    this.maxOutputBytes = parts.maxOutputBytes;
    this.frameLimits = parts.frameLimits;
    this.connection.onNotice = (h) => {
      if (h.notice === 'kernel_exit') this.kernelExited(Number(h.status));
    };
    parts.child.stderr!.on('data', (chunk: Buffer) => {
      this.stderrTail = (this.stderrTail + chunk.toString('utf8')).slice(-4000);
    });
    // 'close', not 'exit': a child that failed to spawn emits 'error' and 'close' but never 'exit'.
    parts.child.once('error', (err) => {
      this.stderrTail += `${err.message}\n`;
    });
    this.exited = new Promise((resolve) => {
      parts.child.once('close', async (code, signal) => {
        await parts.afterExit?.();
        const reason = this.destroying
          ? 'the sandbox was stopped'
          : `the sandbox's processes ended unexpectedly (${signal ?? `exit code ${code}`})` +
            (this.stderrTail ? `: ${this.stderrTail.trim().split('\n').pop()}` : '');
        this.connection.close(reason);
        if (!this.destroying) for (const l of this.exitListeners) l(reason);
        resolve();
      });
    });
    this.files = agentFiles(this.connection, () => this.look('agent'));
  }

  /** Waits for the agent to start; the direct kernel channel is used if it says it serves one. */
  async ready(timeoutMs: number): Promise<void> {
    const header = await this.connection.ready(timeoutMs);
    if (header.direct === true && this.kernelSocket) {
      // A call's reply is at most one frame; its output events carry at most MAX_OUTPUT_BYTES more, JSON-escaped.
      const maxCallBytes = 2 * this.frameLimits.maxHeaderBytes;
      this.channel = new KernelChannel(this.kernelSocket, this.frameLimits.maxHeaderBytes, maxCallBytes, (what) =>
        this.kill(`the sandbox's Python process sent ${what} and the sandbox was stopped`),
      );
    }
  }

  /** Whether the process about to run must look at the workspace afresh; it is the last to look after. */
  private look(who: 'kernel' | 'agent'): boolean {
    const stale = this.lastLook !== who;
    this.lastLook = who;
    return stale;
  }

  private kernelExited(status: number): void {
    this.kernelRunning = false;
    const how = Number.isFinite(status) && status < 0 ? `signal ${-status}` : `code ${status}`;
    if (this.channel) this.channel.abandon(new KernelGone('exited', how));
    this.kernelLost = `the Python process ended between calls (${how}); its state (variables, imports) is lost`;
  }

  /** Puts every process of the sandbox into its cgroups (call once it is ready, before user code runs). */
  async joinLimits(): Promise<void> {
    if (!this.cgroup?.active || !this.child.pid) return;
    for (const pid of await processTree(this.child.pid)) {
      try {
        this.cgroup.addProcess(pid);
      } catch {
        // ended meanwhile
      }
    }
  }

  /**
   * The kernel-enforced limit this call ran into, if the cgroup counters moved: the OOM killer or a refused
   * fork explain a dead interpreter or a failed command better than the symptom does.
   */
  private limitHit(): CodeError | null {
    if (!this.cgroup) return null;
    const now = this.cgroup.counters();
    const before = this.lastCounters;
    this.lastCounters = now;
    if (now.oomKills > before.oomKills) {
      return {
        name: 'MemoryLimitExceeded',
        value: 'the sandbox ran out of memory and the kernel killed a process (memory limit reached)',
        traceback: '',
      };
    }
    if (now.pidsRefused > before.pidsRefused) {
      return { name: 'ProcessLimitExceeded', value: 'the sandbox tried to start more processes than its limit allows', traceback: '' };
    }
    return null;
  }

  get stderr(): string {
    return this.stderrTail;
  }

  async runCode(options: RunCodeOptions): Promise<RunCodeResult> {
    const language = options.language ?? 'python';
    const result = language === 'python' && this.channel ? await this.runDirect(options, this.channel) : await this.runRelayed(options);
    const { error } = result;
    // Only a failed call needs explaining (two cgroup file reads are a tenth of the hot path). Commands,
    // below, always check: a shell's child can be OOM-killed while the command itself exits 0.
    const limit = error || !result.statePreserved ? this.limitHit() : null;
    return limit && error?.name !== 'MemoryLimitExceeded'
      ? { ...result, error: { ...limit, value: `${limit.value}${error ? `; ${error.value}` : ''}` } }
      : result;
  }

  /**
   * Python on the direct channel. The supervisor is asked to start the kernel when there is none, to
   * interrupt it at the timeout or when its output passed the cap, and to restart it when the interrupt
   * did not stop it within the grace period; it tells of the kernel's death on its own.
   */
  private async runDirect(options: RunCodeOptions, channel: KernelChannel): Promise<RunCodeResult> {
    const lostBefore = this.kernelLost;
    this.kernelLost = null;
    // No kernel: ask for one. The very first time, the call goes right behind the request (the kernel reads
    // it once it is up); after a kernel has lived, the supervisor first throws away whatever its predecessor
    // left unread on the channel, so the call must wait until the new kernel is there.
    const starting = this.kernelRunning ? null : this.connection.request(agentRequest('kernel_start', {}), null, CONTROL_DEADLINE_MS);
    starting?.catch(() => undefined);
    const pipelined = !this.kernelEverStarted;
    this.kernelEverStarted = true;
    this.kernelRunning = true;
    if (starting && !pipelined) {
      try {
        await starting;
      } catch (err) {
        return this.notStarted(err);
      }
    }
    // What arrived as output events: held to MAX_OUTPUT_BYTES here too, since the kernel runs user code.
    const streamed: Array<['stdout' | 'stderr', string]> = [];
    let streamedBytes = 0;
    let stopped: 'timeout' | 'output' | null = null;
    let interrupting: Promise<unknown> | null = null;
    let graceTimer: NodeJS.Timeout | undefined;
    const stop = (why: 'timeout' | 'output') => {
      if (stopped) return;
      stopped = why;
      interrupting = this.connection.request(agentRequest('kernel_interrupt', {}), null, CONTROL_DEADLINE_MS).then(() => {
        graceTimer = setTimeout(() => channel.abandon(new KernelGone('hung', 'did not stop')), this.graceMs);
      });
      interrupting.catch(() => undefined);
    };
    const call = channel.send(
      {
        code: options.code,
        inline_images: options.inlineImages === true,
        stream: options.onOutput !== undefined,
        rebase: this.look('kernel'),
      },
      (event, data) => {
        if (event === 'stdout' || event === 'stderr') {
          streamedBytes += Buffer.byteLength(data);
          if (streamedBytes > this.maxOutputBytes) {
            stop('output');
            return;
          }
          streamed.push([event, data]);
          options.onOutput?.(event, data);
        } else if (event === 'output_limit') {
          stop('output');
        }
      },
    );
    if (starting && pipelined) {
      try {
        await starting;
      } catch (err) {
        channel.abandon(new KernelGone('exited', 'not started'));
        await call.catch(() => undefined);
        return this.notStarted(err);
      }
    }
    const timer = setTimeout(() => stop('timeout'), options.timeoutMs);
    let reply: Record<string, unknown> | null = null;
    let gone: KernelGone | null = null;
    try {
      reply = await call;
    } catch (err) {
      if (!(err instanceof KernelGone)) throw err;
      gone = err;
    } finally {
      clearTimeout(timer);
      // The interrupt must land before anything else reaches the kernel, or it would hit the next call.
      if (interrupting) await (interrupting as Promise<unknown>).catch(() => undefined);
      clearTimeout(graceTimer);
    }
    const joined = (stream?: 'stdout' | 'stderr') =>
      streamed.length === 0
        ? ''
        : streamed
            .filter(([s]) => stream === undefined || s === stream)
            .map(([, t]) => t)
            .join('');
    const out = joined('stdout');
    const err = joined('stderr');
    const both = joined();
    const seconds = `${options.timeoutMs / 1000}`;
    if (reply) {
      const r = toRunCodeResult(reply);
      const files = r.files.filter((f) => this.inWorkspace(f.path));
      const results = r.results.map((x) => (x.path === undefined || this.inWorkspace(x.path) ? x : { type: x.type, data: x.data }));
      let error = r.error;
      const overflow = streamedBytes > this.maxOutputBytes;
      if (stopped === 'output' && (!error || error.name === 'KeyboardInterrupt')) {
        error = { name: 'OutputLimitExceeded', traceback: '', value: this.outputLimitMessage() };
      }
      if (stopped === 'timeout') {
        error = {
          name: 'ExecutionTimeout',
          traceback: error?.traceback ?? '',
          value: `execution exceeded the ${seconds} s timeout and was interrupted; the Python state is preserved`,
        };
      }
      return {
        ...r,
        files,
        results,
        error,
        timedOut: stopped === 'timeout',
        outputTruncated: r.outputTruncated || overflow,
        stdout: out + r.stdout,
        stderr: err + r.stderr,
        output: both + r.output,
        ...(lostBefore ? { statePreserved: false, notice: lostBefore } : {}),
      };
    }
    // No reply: the kernel is gone, or hung and is restarted now. Its state is lost.
    let error: CodeError;
    if (gone!.why === 'hung') {
      try {
        await this.connection.request(agentRequest('kernel_restart', {}), null, CONTROL_DEADLINE_MS);
      } catch (e) {
        if (e instanceof ServiceError && e.code === ErrorCode.SANDBOX_LOST) throw e;
        this.kernelRunning = false; // tried again on the next call
      }
      error =
        stopped === 'timeout'
          ? {
              name: 'ExecutionTimeout',
              value: `execution exceeded the ${seconds} s timeout and did not stop when interrupted; ${STATE_LOST}`,
              traceback: '',
            }
          : {
              name: 'OutputLimitExceeded',
              value: `${this.outputLimitMessage()}; it did not stop when interrupted, so ${STATE_LOST}`,
              traceback: '',
            };
    } else {
      this.kernelLost = null;
      error = {
        name: 'KernelDied',
        traceback: '',
        value: `the Python process exited (${gone!.message}) while running this code; its state (variables, imports) is lost and the next call starts a new one`,
      };
    }
    return {
      ...failedCall(error, false),
      timedOut: stopped === 'timeout',
      outputTruncated: stopped === 'output',
      stdout: out,
      stderr: err,
      output: both,
    };
  }

  /** The result of a call whose kernel could not be started. */
  private notStarted(err: unknown): RunCodeResult {
    this.kernelRunning = false;
    if (err instanceof ServiceError && err.code === ErrorCode.SANDBOX_LOST) throw err;
    const name = err instanceof AgentFailure && err.agentCode === 'PROCESS_LIMIT' ? 'ProcessLimitExceeded' : 'KernelDied';
    return failedCall({ name, value: (err as Error).message, traceback: '' }, false);
  }

  /** The agent's wording (ciw_common.output_limit_error), for what the service decides itself. */
  private outputLimitMessage(): string {
    return `the output passed the ${this.maxOutputBytes}-byte limit; the call was stopped and the rest of the output dropped`;
  }

  private inWorkspace(path: string): boolean {
    return path.startsWith(`${this.workspace}/`) && posix.normalize(path) === path;
  }

  private async runRelayed(options: RunCodeOptions): Promise<RunCodeResult> {
    const { header: h } = await this.connection.request(
      agentRequest('exec', {
        code: options.code,
        timeout_ms: options.timeoutMs,
        language: options.language ?? 'python',
        inline_images: options.inlineImages === true,
        stream: options.onOutput !== undefined,
        rebase: this.look('agent'),
      }),
      null,
      options.timeoutMs + this.graceMs + AGENT_SLACK_MS,
      streamTo(options.onOutput),
    );
    return toRunCodeResult(h);
  }

  async runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
    const { header: h } = await this.connection.request(
      agentRequest('shell', {
        command: options.command,
        timeout_ms: options.timeoutMs,
        cwd: options.cwd,
        env: options.env,
        stream: options.onOutput !== undefined,
        rebase: this.look('agent'),
      }),
      null,
      options.timeoutMs + AGENT_SLACK_MS,
      streamTo(options.onOutput),
    );
    return {
      stdout: String(h.stdout),
      stderr: String(h.stderr),
      output: String(h.output),
      outputTruncated: h.output_truncated === true,
      exitCode: Number(h.exit_code),
      error: this.limitHit() ?? toCodeError(h.error),
      timedOut: h.timed_out === true,
      durationMs: Number(h.duration_ms),
      ...toArtifacts(h),
    };
  }

  pids(): readonly number[] {
    return this.listPids();
  }

  cpuSeconds(): number | null {
    return this.cgroup?.cpuSeconds() ?? null;
  }

  onExit(listener: (reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  /** Kills the whole tree: bubblewrap's pid namespace takes every process of the sandbox with it. */
  kill(reason: string): void {
    this.connection.close(reason);
    this.channel?.abandon(new ServiceError(ErrorCode.SANDBOX_LOST, reason));
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    void Promise.resolve(this.killTree()).catch(() => undefined);
    // If the tree could not be found (still starting, say), the outer process goes too.
    setTimeout(() => {
      if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill('SIGKILL');
    }, 1000).unref();
  }

  async destroy(): Promise<void> {
    this.destroying = true;
    this.kill('the sandbox was stopped');
    await this.exited;
  }
}

function failedCall(error: CodeError, statePreserved: boolean): RunCodeResult {
  return {
    stdout: '',
    stderr: '',
    output: '',
    outputTruncated: false,
    results: [],
    error,
    timedOut: false,
    statePreserved,
    durationMs: 0,
    files: [],
    filesTruncated: false,
  };
}

function streamTo(listener: OutputListener | undefined) {
  if (!listener) return undefined;
  return (event: string, data: string) => {
    if (event === 'stdout' || event === 'stderr') listener(event, data);
  };
}
