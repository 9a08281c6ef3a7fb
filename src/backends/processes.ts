/**
 * What runs beside a sandbox's calls: background processes (pipes or a terminal, stdin, signals, their end),
 * file watches, and code contexts (more interpreters in one sandbox). Backends whose sandboxes can offer them
 * (local) put a ProcessControl and a ContextControl on the Sandbox; the service keeps what the caller has not
 * read yet (service/sandbox-processes.ts).
 */

export interface ProcessConfig {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly envs: Readonly<Record<string, string>>;
  /** Working directory, absolute inside the sandbox. */
  readonly cwd?: string;
}

export interface StartProcessOptions extends ProcessConfig {
  /** A pseudo-terminal of this size instead of pipes (stdout and stderr come together, as "pty"). */
  readonly pty?: { readonly cols: number; readonly rows: number };
  /** Keep stdin open for input (otherwise it reads /dev/null). */
  readonly stdin?: boolean;
  /** A name of the caller's for the process. */
  readonly tag?: string;
}

export interface ProcessInfo {
  readonly pid: number;
  readonly tag?: string;
  readonly config: ProcessConfig;
  readonly pty: boolean;
}

/** How a process ended. */
export interface ProcessEnd {
  /** Exit status, or 128 + N when killed by signal N. */
  readonly exitCode: number;
  /** False when a signal ended it. */
  readonly exited: boolean;
  /** "exit status 0", "signal: SIGKILL". */
  readonly status: string;
  /** What else went wrong (its output passed the limit). */
  readonly error?: string;
}

/** Something a background process or a watch did, as the sandbox reports it. */
export type BackgroundEvent =
  | { readonly kind: 'output'; readonly pid: number; readonly stream: 'stdout' | 'stderr' | 'pty'; readonly data: Buffer }
  | { readonly kind: 'truncated'; readonly pid: number }
  | { readonly kind: 'end'; readonly pid: number; readonly end: ProcessEnd }
  | { readonly kind: 'watch'; readonly watchId: string; readonly events: readonly WatchEvent[] };

export type WatchEventType = 'create' | 'write' | 'remove' | 'rename' | 'chmod';

export interface WatchEvent {
  /** Path relative to the watched directory. */
  readonly name: string;
  readonly path: string;
  readonly type: WatchEventType;
}

export const SIGNALS = ['SIGTERM', 'SIGKILL', 'SIGINT', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGCONT', 'SIGSTOP'] as const;
export type SignalName = (typeof SIGNALS)[number];

export interface ProcessControl {
  start(options: StartProcessOptions): Promise<{ pid: number }>;
  input(pid: number, data: Uint8Array): Promise<void>;
  closeStdin(pid: number): Promise<void>;
  signal(pid: number, signal: SignalName): Promise<void>;
  resize(pid: number, size: { cols: number; rows: number }): Promise<void>;
  list(): Promise<ProcessInfo[]>;
  watch(path: string, recursive: boolean): Promise<{ watchId: string; path: string }>;
  unwatch(watchId: string): Promise<void>;
  /** Receives every background event of the sandbox (one listener: the service's). */
  onEvent(listener: (event: BackgroundEvent) => void): void;
}

export interface ContextInfo {
  readonly id: string;
  readonly language: 'python' | 'javascript';
  readonly cwd: string;
}

export interface ContextControl {
  create(id: string, language: 'python' | 'javascript', cwd?: string): Promise<ContextInfo>;
  restart(id: string): Promise<void>;
  remove(id: string): Promise<void>;
}
