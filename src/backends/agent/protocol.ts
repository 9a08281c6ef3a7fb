/**
 * The protocol between the service and the in-sandbox agent (src/agent/), named in one place: every op and
 * the fields of its request. Both backends that run the agent speak it — the local one over the sandbox's
 * pipes (one JSON header line per frame, then `blob` raw bytes), AgentCube through PicoD (`agent.py --call`).
 * The agent dispatches from a table with the same names (`OPS` in ciw_supervisor.py); a unit test checks
 * that the two lists agree. Replies come from inside the sandbox, so their fields are re-typed by reply.ts,
 * never trusted as typed; what each op's reply carries is listed beside its request.
 */

/** Where the agent keeps the kernels' saved state inside the sandbox, between a save and the snapshot. */
export const AGENT_STATE_DIR = '/tmp/.ciw-state';

/** Request fields of each op (snake_case, as on the wire). `rebase`: the workspace changed behind the agent. */
export interface AgentRequests {
  /**
   * Runs code in a stateful kernel: JavaScript, and Python where the sandbox has no direct channel.
   * Reply: stdout, stderr, output, output_truncated, results, error, timed_out, state_preserved, notice,
   * files, files_truncated, duration_ms (reply.ts: toRunCodeResult). Output events may precede it.
   */
  readonly exec: {
    readonly code: string;
    readonly timeout_ms: number;
    readonly language: 'python' | 'javascript';
    readonly inline_images: boolean;
    readonly stream?: boolean;
    readonly rebase?: boolean;
    /** A context made by context_create (then `language` must be the context's, or absent). */
    readonly context?: string;
    /** Environment variables for this call only. */
    readonly env?: Readonly<Record<string, string>>;
  };
  /** Runs a shell command line in a session of its own. Reply: as exec, plus exit_code. */
  readonly shell: {
    readonly command: string;
    readonly timeout_ms: number;
    readonly cwd?: string;
    readonly env?: Readonly<Record<string, string>>;
    readonly stream?: boolean;
    readonly rebase?: boolean;
  };
  /** Writes the request's payload to a file, creating its directories. Reply: path, size. */
  readonly write: { readonly path: string; readonly rebase?: boolean; readonly append?: boolean };
  /** Reads a file, refused past max_bytes. Reply: path, size, and the file as its payload. */
  readonly read: { readonly path: string; readonly max_bytes: number };
  /** Reply: name, path, type, size, modified_ms. */
  readonly stat: { readonly path: string; readonly follow?: boolean };
  /** Reply: path, entries (each as stat's reply), truncated. `depth`: levels listed (0: one, or all if recursive). */
  readonly list: { readonly path: string; readonly recursive: boolean; readonly limit: number; readonly depth?: number };
  /** Creates a directory and its parents. Reply: entry, created (false: it was there). */
  readonly mkdir: { readonly path: string };
  /** Renames inside the workspace; a symlink moves as itself. Reply: entry (at its new place). */
  readonly move: { readonly source: string; readonly destination: string };
  /** Removes a file, a symlink or a whole directory. Reply: path. */
  readonly remove: { readonly path: string };
  /**
   * Starts a background process (a session of its own, with pipes or a pty). Reply: pid. Its output and end
   * then come as frames of their own: {proc, stream, data (base64)}, {proc, truncated}, {proc, end}.
   */
  readonly proc_start: {
    readonly cmd: string;
    readonly args: readonly string[];
    readonly envs?: Readonly<Record<string, string>>;
    readonly cwd?: string;
    readonly pty?: { readonly cols: number; readonly rows: number };
    readonly stdin?: boolean;
    readonly tag?: string;
  };
  /** Writes the request's payload to a process's stdin (or its terminal). Reply: pid. */
  readonly proc_input: { readonly pid: number };
  readonly proc_close_stdin: { readonly pid: number };
  /** Signals the process's session: SIGTERM, SIGKILL, SIGINT… Reply: pid. */
  readonly proc_signal: { readonly pid: number; readonly signal: string };
  readonly proc_resize: { readonly pid: number; readonly cols: number; readonly rows: number };
  /** Reply: processes [{pid, tag, config {cmd, args, envs, cwd}, pty}]. */
  readonly proc_list: Readonly<Record<string, never>>;
  /** Watches a directory; events come as {watch, events: [{name, path, type}]}. Reply: watch_id, path. */
  readonly watch_start: { readonly path: string; readonly recursive: boolean };
  readonly watch_stop: { readonly watch_id: string };
  /** One more interpreter (Python or JavaScript) with its own variables and directory. Reply: id, language, cwd. */
  readonly context_create: { readonly context: string; readonly language: 'python' | 'javascript'; readonly cwd?: string };
  /** The context's next call starts a new interpreter. */
  readonly context_restart: { readonly context: string };
  readonly context_remove: { readonly context: string };
  /** Reply: pid. */
  readonly ping: Readonly<Record<string, never>>;
  /** Starts the direct channel's Python kernel if none runs. Reply: started. */
  readonly kernel_start: Readonly<Record<string, never>>;
  /** Sends the direct kernel SIGINT. Reply: running. */
  readonly kernel_interrupt: Readonly<Record<string, never>>;
  /** Stops the direct kernel and starts a new one (its state is lost). Reply: started. */
  readonly kernel_restart: Readonly<Record<string, never>>;
  /**
   * The kernels' saved state, for a pause: `clear` empties its directory (first); `save` / `load` save or
   * load the state of a kernel the supervisor runs (JavaScript; Python without a direct channel — the direct
   * kernel is asked on its own channel). Reply: state (the kernel's report: saved or restored names,
   * skipped [{name, reason}], error), null when that kernel is not running or has nothing to load.
   */
  readonly state: { readonly action: 'clear' | 'save' | 'load'; readonly language?: 'python' | 'javascript' };
  /** The workspace and the saved kernel state as one tar. Reply: size, and the tar as its payload. */
  readonly snapshot: Readonly<Record<string, never>>;
  /** Unpacks the request's payload (a snapshot's tar) into the empty sandbox. Reply: files, skipped. */
  readonly restore: Readonly<Record<string, never>>;
  /**
   * The checkpoints the direct kernel kept (ciw_checkpoint.py), oldest first. Reply: entries [{id, pid, kernel,
   * call, time, after, files {bytes, skipped, truncated}, threads, alive}], kernel (its pid now), calls.
   */
  readonly checkpoints: Readonly<Record<string, never>>;
  /**
   * Makes a checkpoint the kernel: later checkpoints and the kernel end, the files are put back, the fork is
   * woken (the service then waits for its word on the kernel channel). Reply: checkpoint, pid, after, time,
   * dropped [ids], files {restored, removed, not_restored, missing, truncated}, threads, not_rolled_back.
   */
  readonly rollback: { readonly checkpoint: string };
}

export type AgentOp = keyof AgentRequests;

/** One request: its op and that op's fields. */
export type AgentRequest<O extends AgentOp = AgentOp> = { readonly op: O } & AgentRequests[O];

/** Every op, in one list (the unit test compares it with the agent's table). */
export const AGENT_OPS = [
  'exec',
  'shell',
  'write',
  'read',
  'stat',
  'list',
  'ping',
  'kernel_start',
  'kernel_interrupt',
  'kernel_restart',
  'state',
  'snapshot',
  'restore',
  'mkdir',
  'move',
  'remove',
  'proc_start',
  'proc_input',
  'proc_close_stdin',
  'proc_signal',
  'proc_resize',
  'proc_list',
  'watch_start',
  'watch_stop',
  'context_create',
  'context_restart',
  'context_remove',
  'checkpoints',
  'rollback',
] as const satisfies readonly AgentOp[];

// The list names every op of AgentRequests: adding an op there without adding it here does not compile.
const everyOpListed: Exclude<AgentOp, (typeof AGENT_OPS)[number]> extends never ? true : never = true;
void everyOpListed;

/** A request of `op`, typed by it. */
export function agentRequest<O extends AgentOp>(op: O, fields: AgentRequests[O]): AgentRequest<O> {
  return { op, ...fields };
}
