/**
 * Checkpoints of a local sandbox (ciw_checkpoint.py inside): listed and rolled back through the supervisor,
 * which adopts the chosen fork as the Python kernel; the restored kernel then answers on the direct channel.
 * Everything the agent says about them comes from inside the sandbox and is re-typed here; the memory each
 * holds is read from the host's /proc, not asked of the sandbox.
 */
import type { AgentConnection } from './agent-connection.js';
import { CONTROL_DEADLINE_MS, type DirectKernel } from './direct-kernel.js';
import { privateBytesOf, processTree } from './proc.js';
import { agentRequest } from '../agent/protocol.js';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { objectOf } from '../agent/reply.js';
import type { CheckpointCall, CheckpointControl, CheckpointInfo, RollbackResult } from '../checkpoints.js';

/** Checkpoints a listing may hold (CHECKPOINTS_KEPT is at most 50; the index comes from inside the sandbox). */
const MAX_LISTED = 64;
/** Paths one list of a rollback's report may hold. */
const MAX_PATHS = 1000;

/**
 * Checkpoints after calls that go through the supervisor (commands, file changes): asked of the kernel
 * CHECKPOINT_WAIT_MS after the call, unless another call comes first — then the two share the next one, and
 * the kernel is told how many calls left none (it counts them with its own). The Python kernel decides alone
 * for its own calls (ciw_kernel_checkpoints.py).
 */
export class CheckpointTimer {
  private timer: NodeJS.Timeout | null = null;
  private pending: { kind: string; what: string } | null = null;
  /** Calls through the supervisor since the kernel was last told that left no checkpoint. */
  private skipped = 0;

  constructor(
    private readonly kernel: () => DirectKernel | null,
    private readonly waitMs: number,
  ) {}

  /** A call that may have changed files ended. */
  after(kind: string, what: string): void {
    this.coalesce();
    this.pending = { kind, what: what.slice(0, 300) };
    if (this.waitMs <= 0) return this.flush();
    this.timer = setTimeout(() => this.flush(), this.waitMs);
    this.timer.unref();
  }

  /** Another call starts before the checkpoint was asked for: the ended call leaves none. */
  coalesce(): void {
    if (!this.pending) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.pending = null;
    this.skipped++;
  }

  /** The calls that left none, handed to the kernel with its next call (it counts them). */
  take(): number {
    const n = this.skipped;
    this.skipped = 0;
    return n;
  }

  /** Asks for the pending checkpoint now (the checkpoints are about to be looked at). */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const p = this.pending;
    this.pending = null;
    if (p) this.kernel()?.checkpointAfter({ kind: p.kind, code: p.what, skipped: this.take() });
  }

  /** Calls that left no checkpoint and the kernel has not been told of. */
  get untold(): number {
    return this.skipped;
  }
}

export function localCheckpoints(
  connection: AgentConnection,
  kernel: () => DirectKernel | null,
  timer: CheckpointTimer,
  /** The sandbox's outer process (bubblewrap) on the host: the checkpoints are in its tree. */
  rootPid: number | undefined,
): CheckpointControl {
  // The last call's checkpoint is asked for now, and what the kernel does after a call (keep one) is done
  // before the checkpoints are looked at; calls since the newest that left none are counted.
  const direct = async () => {
    timer.flush();
    const k = kernel();
    return { k, since: ((await k?.sync()) ?? 0) + timer.untold };
  };
  return {
    async list(options = { memory: true }) {
      const { since } = await direct();
      const { header } = await connection.request(agentRequest('checkpoints', {}), null, CONTROL_DEADLINE_MS);
      const entries = entriesOf(header, since);
      const checkpoints =
        options.memory === false
          ? entries.map(({ pid: _pid, ...e }) => e)
          : await withMemory(entries, rootPid ? await processTree(rootPid) : []);
      return { checkpoints, callsSinceNewest: since };
    },

    async rollback(id) {
      const { k, since } = await direct();
      timer.take(); // undone with the rest
      const { header: h } = await connection.request(agentRequest('rollback', { checkpoint: id }), null, CONTROL_DEADLINE_MS);
      let executionCount: number | null = null;
      try {
        executionCount = k ? await k.restored(id) : null;
      } catch (err) {
        if (err instanceof ServiceError) throw err;
        // The fork died as it was woken (killed from inside meanwhile): there is no interpreter, and no state.
        throw new ServiceError(
          ErrorCode.CHECKPOINT_LOST,
          `checkpoint ${id} ended as it was restored (${(err as Error).message}); the files are as they were at the checkpoint, but the interpreter is gone and the next call starts a new one`,
        );
      }
      const files = objectOf(h.files);
      const { pid: _pid, ...target } = entryOf({ ...objectOf(h), id: h.checkpoint, alive: true }, false);
      const after = Number(h.calls_after);
      return {
        checkpoint: target,
        dropped: strings(h.dropped),
        files: {
          restored: strings(files.restored),
          removed: strings(files.removed),
          notRestored: strings(files.not_restored),
          missing: strings(files.missing),
          truncated: files.truncated === true,
        },
        notRolledBack: strings(h.not_rolled_back),
        executionCount,
        callsUndone: Number.isSafeInteger(after) && after >= 0 && after < 1e9 ? after + since : null,
      } satisfies RollbackResult;
    },
  };
}

/** The agent's listing, re-typed; the newest is "current" when the kernel that runs took it after its last call. */
function entriesOf(h: Record<string, unknown>, since: number): Array<CheckpointInfo & { pid: number }> {
  const raw = (Array.isArray(h.entries) ? h.entries : []).slice(-MAX_LISTED).map(objectOf);
  const kernelPid = Number(h.kernel);
  const calls = Number(h.calls);
  return raw.map((e, i) => {
    const last = i === raw.length - 1;
    return entryOf(e, last && since === 0 && Number(e.kernel) === kernelPid && kernelPid > 0 && Number(e.call) === calls);
  });
}

function entryOf(e: Record<string, unknown>, current: boolean): CheckpointInfo & { pid: number } {
  const files = objectOf(e.files);
  const threads = Number(e.threads);
  const skipped = Number(e.skipped);
  return {
    id: String(e.id ?? '').slice(0, 40),
    pid: Number(e.pid) || 0,
    createdAtMs: Math.round(Number(e.time) * 1000) || 0,
    after: callOf(e.after),
    alive: e.alive === true,
    current,
    memoryBytes: null,
    fileBytes: Number.isSafeInteger(files.bytes) && Number(files.bytes) >= 0 ? Number(files.bytes) : 0,
    filesNotKept: strings(files.skipped).slice(0, 100),
    filesTruncated: files.truncated === true,
    threads: Number.isSafeInteger(threads) && threads > 0 ? threads : 0,
    coversCalls: 1 + (Number.isSafeInteger(skipped) && skipped > 0 && skipped < 1e9 ? skipped : 0),
  };
}

function callOf(v: unknown): CheckpointCall | null {
  if (typeof v !== 'object' || v === null) return null;
  const o = v as Record<string, unknown>;
  return {
    kind: String(o.kind ?? '').slice(0, 40),
    ...(typeof o.code === 'string' ? { code: o.code.slice(0, 300) } : {}),
    ...(Number.isSafeInteger(o.execution_count) ? { executionCount: Number(o.execution_count) } : {}),
    ...(typeof o.to === 'string' ? { to: o.to.slice(0, 40) } : {}),
  };
}

async function withMemory(entries: Array<CheckpointInfo & { pid: number }>, hostPids: readonly number[]): Promise<CheckpointInfo[]> {
  const memory = await privateBytesOf(hostPids, new Set(entries.filter((e) => e.alive).map((e) => e.pid)));
  return entries.map(({ pid, ...e }) => ({ ...e, memoryBytes: e.alive ? (memory.get(pid) ?? null) : 0 }));
}

function strings(v: unknown): string[] {
  return Array.isArray(v) ? v.slice(0, MAX_PATHS).map((x) => String(x).slice(0, 4096)) : [];
}
