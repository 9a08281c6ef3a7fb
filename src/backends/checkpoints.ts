/**
 * Checkpoints (undo) as a backend keeps them: after each call, the sandbox's Python interpreter and its files
 * as they were, so that a rollback gives back both. Free of HTTP types, like types.ts.
 */

/** The call a checkpoint was taken after. */
export interface CheckpointCall {
  /** run_code, execute_command, or rollback (the state a rollback restored, kept again). */
  readonly kind: string;
  /** The code or command line, cut to 300 characters. */
  readonly code?: string;
  /** The interpreter's cell count after the call (run_code). */
  readonly executionCount?: number;
  /** For a rollback: the checkpoint it went back to. */
  readonly to?: string;
}

export interface CheckpointInfo {
  readonly id: string;
  readonly createdAtMs: number;
  readonly after: CheckpointCall | null;
  /** Its process is still there (false: it was killed — kill -9 -1 in the sandbox, the out-of-memory killer). */
  readonly alive: boolean;
  /** It is the state now: taken after the last call, by the interpreter that runs now. */
  readonly current: boolean;
  /** Memory only this checkpoint holds (what dropping it frees); null where it cannot be read. */
  readonly memoryBytes: number | null;
  /** Bytes of file copies it added to the store (files unchanged since an earlier one are not copied again). */
  readonly fileBytes: number;
  /** Files over CHECKPOINT_MAX_FILE_BYTES it holds no copy of. */
  readonly filesNotKept: readonly string[];
  /** The workspace had more entries than a checkpoint records: the rest is not kept. */
  readonly filesTruncated: boolean;
  /** Threads of user code that ran when it was taken: they do not run again after a rollback to it. */
  readonly threads: number;
  /**
   * The calls between the checkpoint before it and this one: 1, or more when calls came back to back (within
   * CHECKPOINT_WAIT_MS) and shared it.
   */
  readonly coversCalls: number;
}

export interface CheckpointList {
  readonly checkpoints: CheckpointInfo[];
  /** Calls after the newest checkpoint that left none (the last came back to back with another). */
  readonly callsSinceNewest: number;
}

export interface RollbackResult {
  readonly checkpoint: CheckpointInfo;
  /** Later checkpoints, dropped. */
  readonly dropped: readonly string[];
  readonly files: {
    readonly restored: readonly string[];
    readonly removed: readonly string[];
    /** Over CHECKPOINT_MAX_FILE_BYTES: left as they are now. */
    readonly notRestored: readonly string[];
    /** Their copies were gone (removed from /tmp by code in the sandbox): left as they are now. */
    readonly missing: readonly string[];
    readonly truncated: boolean;
  };
  /** What a rollback does not bring back and was running: the JavaScript interpreter, contexts, background processes. */
  readonly notRolledBack: readonly string[];
  /** The interpreter's cell count after the rollback. */
  readonly executionCount: number | null;
  /** How many calls the rollback undid, where the sandbox can tell. */
  readonly callsUndone: number | null;
}

export interface CheckpointControl {
  /** The checkpoints, oldest first; without `memory`, memoryBytes is null (reading it takes milliseconds). */
  list(options?: { memory?: boolean }): Promise<CheckpointList>;
  /** Makes checkpoint `id` the state of the sandbox; later ones are dropped. */
  rollback(id: string): Promise<RollbackResult>;
}
