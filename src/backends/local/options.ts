/** The local backend's settings (from config.ts; tests build their own), and the bounds that follow from them. */
import type { OutboundPolicy } from '../../core/network-policy.js';
import type { FrameLimits } from './agent-connection.js';
import type { AgentSettings } from '../agent/settings.js';
import type { CreateSandboxOptions } from '../types.js';

export interface LocalBackendOptions {
  /** Host directory for the runtime files. */
  readonly rootDir: string;
  readonly python: string;
  readonly workspaceBytes: number;
  readonly maxOutputBytes: number;
  /** Largest file read out of a sandbox. */
  readonly maxFileBytes: number;
  readonly interruptGraceMs: number;
  /** Idle time after which a sandbox's supervisor hibernates (becomes ciw-idle); 0: never. */
  readonly supervisorIdleMs?: number;
  readonly uidBase: number;
  readonly uidCount: number;
  readonly allowUnsandboxed: boolean;
  readonly limits: SandboxLimits;
  /** What sandboxes with network may reach. */
  readonly outbound: OutboundPolicy;
  /** Host directories of extra Python packages for every sandbox. */
  readonly extraPythonPaths?: readonly string[];
  /**
   * Sandboxes keep running when the service process dies (kill -9, a crash), and the next service process
   * with the same rootDir takes them over (adopt()); without it they die with the service.
   */
  readonly outliveService?: boolean;
  /** How long such a sandbox waits for the next service process before it ends (default 600 s). */
  readonly orphanTimeoutS?: number;
  /** Whether to use cgroups when the host allows. */
  readonly cgroups: boolean;
  /** Checkpoints (undo) each sandbox without network keeps: CHECKPOINTS_KEPT (0: none), CHECKPOINT_MAX_FILE_BYTES, CHECKPOINT_WAIT_MS. */
  readonly checkpoints?: { readonly kept: number; readonly maxFileBytes: number; readonly waitMs: number };
  readonly log?: (level: 'info' | 'warn' | 'error', message: string) => void;
}

/** Resource limits of every sandbox. */
export interface SandboxLimits {
  /** Memory of all processes and tmpfs files of a sandbox, in bytes. */
  readonly memoryBytes: number;
  /** Processes (and threads) at once. */
  readonly maxProcesses: number;
  /** CPU cores' worth of time a sandbox may use at once; 0 for no cap. */
  readonly cpus: number;
  /** CPU seconds per call; 0 for no limit. */
  readonly cpuSecondsPerCall: number;
  /** CPU seconds each process of a sandbox may use in its life (a hard RLIMIT_CPU code cannot raise); 0 or absent for none. */
  readonly cpuSecondsPerSandbox?: number;
}

/** Bounds on the agent's frames: stdout, stderr and output each hold at most maxOutputBytes, and JSON escaping can grow text 6-fold. */
export function frameLimitsOf(options: LocalBackendOptions): FrameLimits {
  return {
    maxHeaderBytes: 3 * 6 * options.maxOutputBytes + 4 * 1024 * 1024,
    maxBlobBytes: options.maxFileBytes,
    // stdout and stderr events of one call: the agent stops a call once its output passes the cap.
    maxEventBytes: 2 * options.maxOutputBytes + 64 * 1024,
  };
}

/** The largest snapshot a sandbox can make: its workspace, the kernels' state (in /tmp, as large), tar's headers. */
export function maxStateBytesOf(options: LocalBackendOptions): number {
  return 2 * options.workspaceBytes + 64 * 1024 * 1024;
}

/** The agent's settings for a sandbox of this backend (its CIW_* environment: backends/agent/settings.ts). */
export function agentSettingsOf(
  options: LocalBackendOptions,
  opts: CreateSandboxOptions,
  /** The kernel's channel fds (requests, and replies when they have their own), the lifeline's, and what the host allows. */
  sandbox: { kernelFds: readonly number[]; lifelineFd?: number; nproc: boolean; hibernate: boolean },
): Omit<AgentSettings, 'workspace' | 'userEnv' | 'proxy'> {
  const { memoryBytes, maxProcesses, cpuSecondsPerCall, cpuSecondsPerSandbox } = options.limits;
  const rlimits: Record<string, number> = { data: memoryBytes };
  // A hard limit no process can raise: per process, over the sandbox's life (the service's cgroup accounting
  // counts the whole sandbox and stops it at the same budget).
  if (cpuSecondsPerSandbox) rlimits.cpu = Math.ceil(cpuSecondsPerSandbox);
  // Without a pids cgroup, RLIMIT_NPROC is the process cap (exact with a uid per sandbox).
  if (sandbox.nproc) rlimits.nproc = maxProcesses;
  return {
    maxOutputBytes: options.maxOutputBytes,
    interruptGraceMs: options.interruptGraceMs,
    cpuSecondsPerCall,
    rlimits,
    kernelFd: sandbox.kernelFds[0],
    kernelOutFd: sandbox.kernelFds[1],
    idleMs: sandbox.hibernate ? (options.supervisorIdleMs ?? 0) : undefined,
    warm: opts.warm,
    ...(options.checkpoints && sandbox.kernelFds.length > 0 ? { checkpoints: options.checkpoints } : {}),
    ...(sandbox.lifelineFd !== undefined ? { lifelineFd: sandbox.lifelineFd, orphanMs: (options.orphanTimeoutS ?? 600) * 1000 } : {}),
  };
}
