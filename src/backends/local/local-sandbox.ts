/**
 * One live local sandbox: a bubblewrap process tree with the agent inside, reached over its channel (FIFOs
 * that outlive the service, or pipes), and its Python kernel over the direct channel (fds 3 and 5).
 */
import type { SandboxProcess } from './sandbox-process.js';
import { AgentConnection, type FrameLimits } from './agent-connection.js';
import { KernelChannel } from './kernel-channel.js';
import { CONTROL_DEADLINE_MS, DirectKernel } from './direct-kernel.js';
import { agentFiles } from './agent-files.js';
import { agentContexts, agentProcesses } from './agent-processes.js';
import type { ContextControl, ProcessControl } from '../processes.js';
import { CheckpointTimer, localCheckpoints } from './checkpoints.js';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { limitErrorOf, type LimitCounters, type SandboxCgroup } from './cgroups.js';
import { processTree, residentBytes } from './proc.js';
import { toArtifacts, toCodeError, toKernelState, toRunCodeResult, usageOf } from '../agent/reply.js';
import { AGENT_STATE_DIR, agentRequest } from '../agent/protocol.js';
import type {
  CodeError,
  KernelState,
  OutputListener,
  RestoredState,
  RunCodeOptions,
  RunCodeResult,
  RunCommandOptions,
  RunCommandResult,
  Sandbox,
  SandboxFiles,
  StateSink,
} from '../types.js';

/** Slack on top of a call's own timeout before the agent is declared hung (it handles timeouts itself). */
const AGENT_SLACK_MS = 10_000;
/** Where the Python kernel saves its state for a pause (ciw_supervisor.op_state uses the same name). */
const PYTHON_STATE = `${AGENT_STATE_DIR}/python.pkl`;

export interface LocalSandboxParts {
  readonly id: string;
  /** The sandbox's cgroups (a no-op object when the host has none). */
  readonly cgroup?: SandboxCgroup;
  readonly workspace: string;
  /** The outer process, and the channels to the agent and the kernel. */
  readonly child: SandboxProcess;
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
  /** Largest snapshot the sandbox can make (its workspace and /tmp together, and some). */
  readonly maxStateBytes: number;
  /** Taken over from an earlier service process: its agent and kernel already run (see adopt()). */
  readonly adopted?: boolean;
  /** The agent keeps checkpoints (CHECKPOINTS_KEPT > 0): after how long without a next call (CHECKPOINT_WAIT_MS). */
  readonly checkpoints?: { readonly waitMs: number };
}

export class LocalSandbox implements Sandbox {
  readonly id: string;
  readonly workspace: string;
  readonly files: SandboxFiles;
  readonly processes: ProcessControl;
  readonly contexts: ContextControl;
  readonly checkpoints?: ReturnType<typeof localCheckpoints>;
  private checkpointTimer: CheckpointTimer | undefined;
  readonly connection: AgentConnection;
  readonly exited: Promise<void>;
  private readonly child: SandboxProcess;
  private readonly graceMs: number;
  private readonly listPids: () => number[];
  private readonly killTree: () => void | Promise<void>;
  private readonly exitListeners: Array<(reason: string) => void> = [];
  private destroying = false;
  private stderrTail = '';
  private readonly cgroup: SandboxCgroup | undefined;
  private lastCounters: LimitCounters = { oomKills: 0, pidsRefused: 0 };
  /** The Python kernel on the direct channel, once the agent said it serves one. */
  private kernel: DirectKernel | null = null;
  private readonly maxOutputBytes: number;
  private readonly maxStateBytes: number;
  private readonly frameLimits: FrameLimits;
  private readonly warm: boolean;
  private readonly adopted: boolean;
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
    this.warm = parts.warm === true;
    this.adopted = parts.adopted === true;
    // The agent is gone: close the kernel's channel too, so that a kernel left behind (unsandboxed mode
    // has no pid namespace to take it along) reads its end and exits, and 'close' can come.
    parts.child.once('exit', () => {
      parts.child.kernelIn?.destroy();
      parts.child.kernelOut?.destroy();
    });
    this.maxOutputBytes = parts.maxOutputBytes;
    this.maxStateBytes = parts.maxStateBytes;
    this.frameLimits = parts.frameLimits;
    this.connection.onNotice = (h) => {
      if (h.notice === 'kernel_exit') this.kernel?.exited(Number(h.status));
    };
    parts.child.once('error', (err) => {
      this.stderrTail += `${err.message}\n`;
    });
    this.exited = new Promise((resolve) => {
      parts.child.once('close', async (code, signal) => {
        await parts.afterExit?.();
        const tail = this.stderr.trim();
        const reason = this.destroying
          ? 'the sandbox was stopped'
          : `the sandbox's processes ended unexpectedly (${signal ?? `exit code ${code}`})` + (tail ? `: ${tail.split('\n').pop()}` : '');
        this.connection.close(reason);
        if (!this.destroying) for (const l of this.exitListeners) l(reason);
        resolve();
      });
    });
    const timer = new CheckpointTimer(() => this.kernel, parts.checkpoints?.waitMs ?? 0);
    const hooks = { before: () => this.beforeChange(), after: (kind: string, path: string) => timer.after(kind, path) }; // uploads, moves: calls too
    this.files = agentFiles(this.connection, () => this.look('agent'), parts.checkpoints ? hooks : undefined);
    this.processes = agentProcesses(this.connection, parts.maxOutputBytes, (what) =>
      this.kill(`the sandbox's agent sent ${what} and the sandbox was stopped`),
    );
    this.contexts = agentContexts(this.connection);
    if (parts.checkpoints) {
      this.checkpointTimer = timer;
      this.checkpoints = localCheckpoints(this.connection, () => this.kernel, timer, parts.child.pid);
    }
  }

  /** Waits for the agent to start; the direct kernel channel is used if it says it serves one. */
  async ready(timeoutMs: number): Promise<void> {
    const header = this.adopted ? await this.resync(timeoutMs) : await this.connection.ready(timeoutMs);
    const { kernelIn, kernelOut } = this.child;
    if (header.direct === true && kernelIn && kernelOut) {
      // A call's reply is at most one frame; its output events carry at most MAX_OUTPUT_BYTES more, JSON-escaped.
      const maxCallBytes = 2 * this.frameLimits.maxHeaderBytes;
      // Ends a call line an earlier service process left half-written (the kernel skips what is not JSON).
      if (this.adopted) kernelIn.write('#\n');
      const channel = new KernelChannel(kernelIn, kernelOut, this.frameLimits.maxHeaderBytes, maxCallBytes, (what) =>
        this.kill(`the sandbox's Python process sent ${what} and the sandbox was stopped`),
      );
      this.kernel = new DirectKernel({
        channel,
        connection: this.connection,
        workspace: this.workspace,
        graceMs: this.graceMs,
        maxOutputBytes: this.maxOutputBytes,
        warm: this.warm,
        running: header.direct_kernel === true,
        look: () => this.look('kernel'),
      });
    }
  }

  /** Whether the process about to run must look at the workspace afresh; it is the last to look after. */
  private look(who: 'kernel' | 'agent'): boolean {
    const stale = this.lastLook !== who;
    this.lastLook = who;
    return stale;
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
    const [before, now] = [this.lastCounters, this.cgroup.counters()];
    this.lastCounters = now;
    return limitErrorOf(before, now);
  }

  get stderr(): string {
    return `${this.child.stderrTail()}${this.stderrTail}`.slice(-4000);
  }

  /**
   * A sandbox taken over from an earlier service process: whatever that process left half-sent on the
   * channels is skipped, and the agent says whether its kernel runs. The header ready() would have had.
   */
  private async resync(timeoutMs: number): Promise<Record<string, unknown>> {
    const { header } = await this.connection.resync(agentRequest('ping', {}), timeoutMs);
    return { ready: true, direct: header.direct === true, direct_kernel: header.direct_kernel === true };
  }

  async runCode(options: RunCodeOptions): Promise<RunCodeResult> {
    const language = options.language ?? 'python';
    const direct = language === 'python' && this.kernel && options.context === undefined;
    // A call through the supervisor just before leaves no checkpoint: the kernel counts it with its own.
    this.checkpointTimer?.coalesce();
    const result = direct ? await this.kernel!.run(options, this.checkpointTimer?.take() ?? 0) : await this.runRelayed(options);
    const { error } = result;
    // Only a failed call needs explaining (two cgroup file reads are a tenth of the hot path). Commands,
    // below, always check: a shell's child can be OOM-killed while the command itself exits 0.
    const limit = error || !result.statePreserved ? this.limitHit() : null;
    return limit && error?.name !== 'MemoryLimitExceeded'
      ? { ...result, error: { ...limit, value: `${limit.value}${error ? `; ${error.value}` : ''}` } }
      : result;
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
        ...(options.context !== undefined ? { context: options.context } : {}),
        ...(options.env && Object.keys(options.env).length > 0 ? { env: options.env } : {}),
      }),
      null,
      options.timeoutMs + this.graceMs + AGENT_SLACK_MS,
      streamTo(options.onOutput),
    );
    return toRunCodeResult(h);
  }

  async runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
    await this.beforeChange();
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
    this.checkpointTimer?.after('execute_command', options.command);
    return {
      stdout: String(h.stdout),
      stderr: String(h.stderr),
      output: String(h.output),
      outputTruncated: h.output_truncated === true,
      exitCode: Number(h.exit_code),
      error: this.limitHit() ?? toCodeError(h.error),
      timedOut: h.timed_out === true,
      durationMs: Number(h.duration_ms),
      ...usageOf(h.usage),
      ...toArtifacts(h),
    };
  }

  /** Before a call through the supervisor: the last call's checkpoint is not asked for now, one being kept is awaited. */
  private async beforeChange(): Promise<void> {
    this.checkpointTimer?.coalesce();
    await this.kernel?.settle();
  }

  pids(): readonly number[] {
    return this.listPids();
  }

  cpuSeconds(): number | null {
    return this.cgroup?.cpuSeconds() ?? null;
  }

  /**
   * The resident memory of the sandbox's processes, or the cgroup's count when larger (it includes page cache,
   * but not what a process allocated before it joined the cgroup: charges do not move with it).
   */
  memoryBytes(): number | null {
    return Math.max(residentBytes(this.listPids()), this.cgroup?.active ? (this.cgroup.memoryBytes() ?? 0) : 0);
  }

  /** From the cgroup's files: a few reads, no scan of /proc (nothing without cgroups). */
  usageNow() {
    const active = this.cgroup?.active === true;
    return {
      cpuSeconds: active ? this.cgroup!.cpuSeconds() : null,
      memoryBytes: active ? this.cgroup!.memoryBytes() : null,
      memoryPeakBytes: active ? this.cgroup!.memoryPeakBytes() : null,
    };
  }

  onExit(listener: (reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  /**
   * Saves the state for a pause: the kernels save theirs inside the sandbox (the direct Python kernel on its
   * own channel, the others through the supervisor), then the supervisor sends the workspace and that state
   * as one tar, streamed into `sink` as it comes.
   */
  async saveState(sink: StateSink): Promise<{ kernels: KernelState[] }> {
    await this.connection.request(agentRequest('state', { action: 'clear' }), null, CONTROL_DEADLINE_MS);
    const kernels: KernelState[] = [];
    const python = await this.kernelState('save', 'python');
    const javascript = await this.kernelState('save', 'javascript');
    for (const [language, report] of [
      ['python', python],
      ['javascript', javascript],
    ] as const) {
      const state = toKernelState(language, report);
      if (state) kernels.push(state);
    }
    // A state the sink refuses (too large for STATE_MAX_BYTES) still comes out whole, and is dropped: the
    // protocol stays in step and the sandbox keeps running.
    let refused: unknown = null;
    await this.connection.request(agentRequest('snapshot', {}), null, CONTROL_DEADLINE_MS, undefined, {
      maxBytes: this.maxStateBytes,
      start: (_header, length) => {
        try {
          sink.start(length);
        } catch (err) {
          refused = err;
        }
      },
      chunk: (data) => (refused ? null : sink.write(data)),
    });
    if (refused) throw refused;
    return { kernels };
  }

  /** Restores a state saveState() saved: the files first, then each kernel that saved something. */
  async restoreState(state: Buffer): Promise<RestoredState> {
    const { header } = await this.connection.request(agentRequest('restore', {}), state, CONTROL_DEADLINE_MS);
    const saved = Array.isArray(header.state) ? header.state.map(String) : [];
    const kernels: KernelState[] = [];
    for (const [language, file] of [
      ['python', 'python.pkl.json'],
      ['javascript', 'javascript.json'],
    ] as const) {
      const k = saved.includes(file) ? toKernelState(language, await this.kernelState('load', language)) : null;
      if (k) kernels.push(k);
    }
    const skippedFiles = Array.isArray(header.skipped) ? header.skipped.slice(0, 1000).map(String) : [];
    return { kernels, skippedFiles };
  }

  /** A kernel's report on saving or loading its state: the direct Python kernel on its channel, others through the supervisor. */
  private async kernelState(action: 'save' | 'load', language: 'python' | 'javascript'): Promise<unknown> {
    if (language === 'python' && this.kernel) return this.kernel.state(action, PYTHON_STATE);
    return (await this.connection.request(agentRequest('state', { action, language }), null, CONTROL_DEADLINE_MS)).header.state;
  }

  /** Kills the whole tree: bubblewrap's pid namespace takes every process of the sandbox with it. */
  kill(reason: string): void {
    this.connection.close(reason);
    this.kernel?.abandon(new ServiceError(ErrorCode.SANDBOX_LOST, reason));
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

function streamTo(listener: OutputListener | undefined) {
  if (!listener) return undefined;
  return (event: string, data: string) => {
    if (event === 'stdout' || event === 'stderr') listener(event, data);
  };
}
