/** One live local sandbox: a bubblewrap process tree with the agent inside, reached over its pipes. */
import type { ChildProcess } from 'node:child_process';
import { AgentConnection, type FrameLimits } from './agent-connection.js';
import type { LimitCounters, SandboxCgroup } from './cgroups.js';
import { processTree } from './proc.js';
import { toArtifacts, toCodeError, toRunCodeResult } from '../agent-reply.js';
import type {
  CodeError, DirectoryListing, OutputListener, FileEntry, RunCodeOptions, RunCodeResult, RunCommandOptions,
  RunCommandResult, Sandbox, SandboxFiles,
} from '../types.js';

/** Slack on top of a call's own timeout before the agent is declared hung (it handles timeouts itself). */
const AGENT_SLACK_MS = 10_000;
/** Bound on a file operation's round trip; large files move at hundreds of MB/s, so this is generous. */
const FILE_OP_DEADLINE_MS = 120_000;

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
  readonly killTree?: () => void;
  /** Runs after the child has exited, before destroy() resolves: makes sure nothing is left behind. */
  readonly afterExit?: () => Promise<void>;
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
  private readonly killTree: () => void;
  private readonly exitListeners: Array<(reason: string) => void> = [];
  private destroying = false;
  private stderrTail = '';
  private readonly cgroup: SandboxCgroup | undefined;
  private lastCounters: LimitCounters = { oomKills: 0, pidsRefused: 0 };

  constructor(parts: LocalSandboxParts) {
    this.id = parts.id;
    this.workspace = parts.workspace;
    this.child = parts.child;
    this.graceMs = parts.graceMs;
    this.listPids = parts.listPids;
    this.killTree = parts.killTree ?? (() => this.child.kill('SIGKILL'));
    this.cgroup = parts.cgroup;
    if (this.cgroup && parts.child.pid) this.cgroup.addProcess(parts.child.pid);
    this.connection = new AgentConnection(parts.child, (reason) => this.kill(reason), parts.frameLimits);
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
    this.files = {
      write: async (path, data) => {
        const { header } = await this.connection.request({ op: 'write', path }, data, FILE_OP_DEADLINE_MS);
        return { path: String(header.path), size: Number(header.size) };
      },
      read: async (path, maxBytes) => {
        const { header, blob } = await this.connection.request({ op: 'read', path, max_bytes: maxBytes }, null, FILE_OP_DEADLINE_MS);
        return { path: String(header.path), data: blob };
      },
      stat: async (path) => toEntry((await this.connection.request({ op: 'stat', path }, null, FILE_OP_DEADLINE_MS)).header),
      list: async (path, options): Promise<DirectoryListing> => {
        const { header } = await this.connection.request(
          { op: 'list', path, recursive: options.recursive, limit: options.limit }, null, FILE_OP_DEADLINE_MS);
        return {
          path: String(header.path),
          entries: (Array.isArray(header.entries) ? header.entries as Record<string, unknown>[] : []).map(toEntry),
          truncated: header.truncated === true,
        };
      },
    };
  }

  /** Puts every process of the sandbox into its cgroups (call once it is ready, before user code runs). */
  joinLimits(): void {
    if (!this.cgroup || !this.child.pid) return;
    for (const pid of processTree(this.child.pid)) {
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
      return { name: 'MemoryLimitExceeded', value: 'the sandbox ran out of memory and the kernel killed a process (memory limit reached)', traceback: '' };
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
    const { header: h } = await this.connection.request(
      {
        op: 'exec', code: options.code, timeout_ms: options.timeoutMs, language: options.language ?? 'python',
        inline_images: options.inlineImages === true, stream: options.onOutput !== undefined,
      },
      null,
      options.timeoutMs + this.graceMs + AGENT_SLACK_MS,
      streamTo(options.onOutput),
    );
    const result = toRunCodeResult(h);
    const { error } = result;
    // Only a failed call needs explaining (two cgroup file reads are a tenth of the hot path). Commands,
    // below, always check: a shell's child can be OOM-killed while the command itself exits 0.
    const limit = error || !result.statePreserved ? this.limitHit() : null;
    return limit && error?.name !== 'MemoryLimitExceeded'
      ? { ...result, error: { ...limit, value: `${limit.value}${error ? `; ${error.value}` : ''}` } }
      : result;
  }

  async runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
    const { header: h } = await this.connection.request(
      {
        op: 'shell', command: options.command, timeout_ms: options.timeoutMs, cwd: options.cwd, env: options.env,
        stream: options.onOutput !== undefined,
      },
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

  onExit(listener: (reason: string) => void): void {
    this.exitListeners.push(listener);
  }

  /** Kills the whole tree: bubblewrap's pid namespace takes every process of the sandbox with it. */
  kill(reason: string): void {
    this.connection.close(reason);
    if (this.child.exitCode !== null || this.child.signalCode !== null) return;
    this.killTree();
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

function toEntry(h: Record<string, unknown>): FileEntry {
  return {
    name: String(h.name),
    path: String(h.path),
    type: (['file', 'directory', 'symlink'] as const).find((t) => t === h.type) ?? 'other',
    size: Number(h.size),
    modifiedMs: Number(h.modified_ms),
  };
}
