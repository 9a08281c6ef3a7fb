/** The local backend's settings (from config.ts; tests build their own). */
import type { OutboundPolicy } from '../../core/network-policy.js';

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
  /** Whether to use cgroups when the host allows. */
  readonly cgroups: boolean;
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
