/**
 * The one interface every sandbox backend implements. No HTTP types here: the service and the routes
 * translate at their edges. Lifecycle (create/destroy) lives on the backend; what runs inside lives on
 * the Sandbox it returns.
 */
import type { Readable } from 'node:stream';
import type { ContextControl, ProcessControl } from './processes.js';
import type { CheckpointControl } from './checkpoints.js';

/** Options for a new sandbox. */
export interface CreateSandboxOptions {
  /** Identifier the service chose for the sandbox (used in logs and paths). */
  readonly id: string;
  /** Extra environment variables visible to code in the sandbox. */
  readonly env: Readonly<Record<string, string>>;
  /** Outbound HTTP(S) through the service's filtering proxy; false (the default) for no network at all. */
  readonly network?: boolean;
  /** Start the Python kernel now (not on first use) and import these modules: for a warm pool. */
  readonly warm?: { readonly preload: readonly string[] };
  /** Who owns the sandbox (a digest of an API key); backends that share sandboxes across instances keep it. */
  readonly owner?: string;
}

/** One rich value produced by code (a Jupyter-style MIME bundle). */
export interface RichResult {
  readonly type: 'execute_result' | 'display_data';
  /** MIME type → content (images base64, only when inline images were asked for). */
  readonly data: Readonly<Record<string, string>>;
  /** Where an image result was saved in the sandbox (under /workspace/outputs). */
  readonly path?: string;
}

/** A file a call created or changed in the workspace. */
export interface ArtifactFile {
  /** Absolute path inside the sandbox. */
  readonly path: string;
  readonly size: number;
}

/** Receives output while a call runs (streaming). */
export type OutputListener = (stream: 'stdout' | 'stderr', text: string) => void;

/** Languages with a stateful interpreter in the sandbox. */
export type KernelLanguage = 'python' | 'javascript';

/** A failure raised by user code (not a failure of the request). */
export interface CodeError {
  /**
   * Exception class name, or what stopped the code: ExecutionTimeout, KernelDied, CommandFailed, or a limit —
   * MemoryLimitExceeded, ProcessLimitExceeded, CpuTimeLimitExceeded, DiskQuotaExceeded, OutputLimitExceeded.
   */
  readonly name: string;
  readonly value: string;
  /** Python-style traceback showing only the user's own frames. */
  readonly traceback: string;
}

export interface RunCodeOptions {
  readonly code: string;
  /** Timeout of this call in milliseconds. */
  readonly timeoutMs: number;
  /** Interpreter to run the code in (default python). */
  readonly language?: KernelLanguage;
  /** Put image bytes (base64) into results, besides saving them as files. */
  readonly inlineImages?: boolean;
  /** Called with output as it arrives. */
  readonly onOutput?: OutputListener;
  /** A context made through Sandbox.contexts (default: the sandbox's own interpreter of the language). */
  readonly context?: string;
  /** Environment variables for this call only. */
  readonly env?: Readonly<Record<string, string>>;
}

/** What a call used, as the sandbox reports it (null where it cannot tell). */
export interface CallUsage {
  /** CPU time of the interpreter (a code call) or of the command's processes, during the call. */
  readonly cpuMs: number | null;
  /** Memory the interpreter uses after the call. */
  readonly memoryBytes: number | null;
  /** The most it (or, for commands, any process it ran) used at once. */
  readonly memoryPeakBytes: number | null;
}

/** Files a call created or changed (at most 100). */
interface ArtifactFields {
  readonly files: readonly ArtifactFile[];
  /** True when more files changed than were listed. */
  readonly filesTruncated: boolean;
}

export interface RunCodeResult extends ArtifactFields {
  readonly stdout: string;
  readonly stderr: string;
  /** stdout and stderr interleaved in arrival order. */
  readonly output: string;
  readonly outputTruncated: boolean;
  readonly results: readonly RichResult[];
  readonly error: CodeError | null;
  readonly timedOut: boolean;
  /** False when the interpreter had to be restarted (its variables are gone). */
  readonly statePreserved: boolean;
  /** Time spent inside the sandbox, in milliseconds. */
  readonly durationMs: number;
  /** Something the caller should know about this result, e.g. why no state is kept between calls. */
  readonly notice?: string;
  /** Cells the interpreter has run, this one included (where it counts them). */
  readonly executionCount?: number;
  readonly usage?: CallUsage;
}

export interface RunCommandOptions {
  /** Shell command line, run by bash -c in the workspace. */
  readonly command: string;
  readonly timeoutMs: number;
  /** Working directory (absolute, or relative to the workspace). */
  readonly cwd?: string;
  readonly env?: Readonly<Record<string, string>>;
  /** Called with output as it arrives. */
  readonly onOutput?: OutputListener;
}

export interface RunCommandResult extends ArtifactFields {
  /** Something the caller should know about this result, e.g. what this backend does not report. */
  readonly notice?: string;
  readonly stdout: string;
  readonly stderr: string;
  readonly output: string;
  readonly outputTruncated: boolean;
  /** Exit status; 124 on timeout, 128+N when killed by signal N. */
  readonly exitCode: number;
  /** Why the command failed: CommandFailed, ExecutionTimeout or the limit it hit; null on exit 0. */
  readonly error: CodeError | null;
  readonly timedOut: boolean;
  readonly durationMs: number;
  readonly usage?: CallUsage;
}

export interface FileEntry {
  readonly name: string;
  /** Absolute path inside the sandbox. */
  readonly path: string;
  readonly type: 'file' | 'directory' | 'symlink' | 'other';
  readonly size: number;
  readonly modifiedMs: number;
  /** Permission bits, "-rw-r--r--", owner and group names (where the backend reports them). */
  readonly mode?: number;
  readonly permissions?: string;
  readonly owner?: string;
  readonly group?: string;
  /** What a symlink holds (never followed). */
  readonly symlinkTarget?: string;
}

export interface DirectoryListing {
  readonly path: string;
  readonly entries: readonly FileEntry[];
  /** True when the listing stopped at its entry limit. */
  readonly truncated: boolean;
}

/** File operations, all performed inside the sandbox so its own symlinks cannot point outside it. */
export interface SandboxFiles {
  /** Writes `data` to `path` (relative paths are inside the workspace), creating parent directories. */
  write(path: string, data: Uint8Array): Promise<{ path: string; size: number }>;
  /** Reads a regular file of at most `maxBytes`. */
  read(path: string, maxBytes: number): Promise<{ path: string; data: Buffer }>;
  /**
   * The same, as a stream (backends that can): resolves as soon as the file's size is known, its bytes then
   * flow through `body` as they come out of the sandbox; `received` settles once all of them did (the
   * sandbox is free again then, whatever the reader of `body` does).
   */
  open?(path: string, maxBytes: number): Promise<OpenedFile>;
  /** What the path leads to; with follow false, the entry itself (a symlink, not its target). */
  stat(path: string, options?: { follow?: boolean }): Promise<FileEntry>;
  /** `depth`: levels listed (0: one level, or all with `recursive`). */
  list(path: string, options: { recursive: boolean; limit: number; depth?: number }): Promise<DirectoryListing>;
  /** Creates a directory and its parents; `created` false when it was there already. */
  mkdir?(path: string): Promise<{ entry: FileEntry; created: boolean }>;
  /** Renames inside the sandbox (a symlink moves as itself). */
  move?(source: string, destination: string): Promise<FileEntry>;
  /** Removes a file, a symlink (not its target) or a directory with everything in it. */
  remove?(path: string): Promise<void>;
}

/** A file being read out of a sandbox (SandboxFiles.open). */
export interface OpenedFile {
  readonly path: string;
  readonly size: number;
  readonly body: Readable;
  readonly received: Promise<void>;
}

/** Where a sandbox's saved state goes (a host file of the service's), as it comes out of the sandbox. */
export interface StateSink {
  /** The state's length, before any of its bytes; past `maxBytes` the sink refuses it and takes nothing. */
  start(length: number): void;
  /** Takes a piece; a promise back means "full": nothing more comes until it settles. */
  write(chunk: Buffer): Promise<void> | null;
  /** Largest state the sink takes. */
  readonly maxBytes: number;
}

/** What one kernel's state came to, saved or loaded. */
export interface KernelState {
  readonly language: 'python' | 'javascript';
  /** The names saved (on a pause) or restored (on a resume). */
  readonly names: readonly string[];
  /** The names that could not be, each with the reason. */
  readonly skipped: ReadonlyArray<{ readonly name: string; readonly reason: string }>;
  /** Why the kernel could not save or load anything, when it could not. */
  readonly error?: string;
}

/** A sandbox's state, restored into a new sandbox. */
export interface RestoredState {
  readonly kernels: readonly KernelState[];
  /** Workspace entries the snapshot held that could not be restored. */
  readonly skippedFiles: readonly string[];
}

/** What runs inside one live sandbox. */
export interface Sandbox {
  readonly id: string;
  /** Absolute path of the workspace as code inside the sandbox sees it. */
  readonly workspace: string;
  runCode(options: RunCodeOptions): Promise<RunCodeResult>;
  runCommand(options: RunCommandOptions): Promise<RunCommandResult>;
  readonly files: SandboxFiles;
  /** Host process ids that belong to this sandbox (for diagnostics and leak tests); may be empty. */
  pids(): readonly number[];
  /** Called once if the sandbox dies by itself (crash, killed); the service then forgets it. */
  onExit(listener: (reason: string) => void): void;
  /** Kills every process of the sandbox and removes its files. Idempotent. */
  destroy(): Promise<void>;
  /** CPU seconds the whole sandbox used so far, background work included; null or absent when not accounted. */
  cpuSeconds?(): number | null;
  /** Memory the sandbox's processes use now, in bytes; null or absent when not accounted. */
  memoryBytes?(): number | null;
  /**
   * Cheap counters for a call's usage (read before and after every call, so no scan of /proc): CPU seconds so
   * far, memory now and at its peak; each null where not accounted.
   */
  usageNow?(): { cpuSeconds: number | null; memoryBytes: number | null; memoryPeakBytes: number | null };
  /**
   * Saves the workspace and the kernels' state into `sink`, for a pause (the sandbox keeps running; the
   * caller destroys it once the state is stored). Absent where the backend cannot pause.
   */
  saveState?(sink: StateSink): Promise<{ readonly kernels: readonly KernelState[] }>;
  /** Restores what saveState() saved, into this new sandbox. */
  restoreState?(state: Buffer): Promise<RestoredState>;
  /** Background processes and file watches, where the backend has them. */
  readonly processes?: ProcessControl;
  /** More interpreters in the sandbox, where the backend has them. */
  readonly contexts?: ContextControl;
  /** Checkpoints (undo) of the Python interpreter and the files, where the sandbox keeps them (CHECKPOINTS_KEPT). */
  readonly checkpoints?: CheckpointControl;
}

/** Health and isolation facts reported at start and on /health. */
export interface BackendStatus {
  readonly name: string;
  readonly ready: boolean;
  /** What isolates code, e.g. "bubblewrap 0.8.0 (user, pid, net, ipc, uts, mount namespaces)". */
  readonly isolation: string;
  /** Why the backend cannot run code, when it cannot. */
  readonly problem?: string;
  /** The warm pool in front of the backend, if any. */
  readonly pool?: {
    readonly target: number;
    readonly ready: number;
    readonly preload: readonly string[];
    /** The pool of sandboxes with network, when there is one. */
    readonly network?: { readonly target: number; readonly ready: number };
  };
}

export interface SandboxBackend {
  readonly name: string;
  /**
   * True when sandboxes live outside this process and other service instances may serve them (AgentCube):
   * the service then never destroys sandboxes it merely forgets, and finds unknown ids with attach().
   */
  readonly shared?: boolean;
  /** True when its sandboxes can save and restore their state (saveState, restoreState): pause and resume. */
  readonly canPause?: boolean;
  /** Finds a sandbox this instance did not create, if it exists and belongs to `owner` (null: any owner). */
  attach?(id: string, owner: string | null): Promise<Sandbox | null>;
  /**
   * Takes over a sandbox an earlier process of this service started and left running (it was killed, or
   * crashed): null when it no longer runs. Called at start for every sandbox STATE_DIR says was running.
   */
  adopt?(id: string): Promise<Sandbox | null>;
  /** Ends the sandboxes of an earlier process that nobody took over (called once the service has started). */
  forgetUnadopted?(): Promise<void>;
  /** Checks that the backend can run code; called once at start. */
  init(): Promise<BackendStatus>;
  status(): BackendStatus;
  create(options: CreateSandboxOptions): Promise<Sandbox>;
  /** Destroys everything; the backend is unusable afterwards. */
  close(): Promise<void>;
}
