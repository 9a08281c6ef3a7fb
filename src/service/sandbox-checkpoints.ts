/**
 * The use cases of checkpoints (undo): list what a sandbox kept, roll back to one — by id, or by how many
 * calls to undo. They run in the sandbox's turn, like calls. A paused sandbox has none (a pause ends the
 * processes that hold them) and is not woken to say so.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { CheckpointControl, CheckpointInfo, RollbackResult } from '../backends/checkpoints.js';
import type { Sandbox } from '../backends/types.js';
import { handleOf } from './registry.js';
import type { SandboxAccess } from './sandbox-files.js';
import type { SandboxHandle, SandboxRef } from './types.js';

export type { CheckpointInfo, RollbackResult } from '../backends/checkpoints.js';

/** Which checkpoint a rollback goes to: one by id, or the one before the last `stepsBack` calls. */
export type RollbackTarget = { readonly checkpointId: string } | { readonly stepsBack: number };

export interface CheckpointListing {
  readonly sandbox: SandboxHandle;
  /** CHECKPOINTS_KEPT: how many the sandbox keeps at most. */
  readonly kept: number;
  readonly checkpoints: readonly CheckpointInfo[];
  /** Calls after the newest checkpoint that left none (they came back to back, within CHECKPOINT_WAIT_MS). */
  readonly callsSinceNewest: number;
  /** Why there are none, when that is not just "no call yet". */
  readonly note?: string;
}

/** What the agent names checkpoints (ciw_checkpoint.py): "c" and a counter. */
const CHECKPOINT_ID = /^c[0-9]{1,12}$/;

const PAUSED_NOTE = 'the sandbox is paused: a pause ends the processes that hold checkpoints, so it has none';

export class SandboxCheckpoints {
  constructor(private readonly access: SandboxAccess) {}

  private control(sandbox: Sandbox): CheckpointControl {
    if (sandbox.checkpoints) return sandbox.checkpoints;
    const why =
      this.access.config.CHECKPOINTS_KEPT === 0
        ? 'checkpoints are off on this service (CHECKPOINTS_KEPT=0)'
        : this.access.backend.name === 'local'
          ? 'this sandbox has network: checkpoints are kept in sandboxes without network only'
          : `the ${this.access.backend.name} backend keeps no checkpoints`;
    throw new ServiceError(ErrorCode.NOT_SUPPORTED, why);
  }

  async list(owner: string, ref: SandboxRef): Promise<CheckpointListing> {
    const record = await this.access.resolve(owner, ref, false);
    const kept = this.access.config.CHECKPOINTS_KEPT;
    if (!record.sandbox) return { sandbox: handleOf(record), kept, checkpoints: [], callsSinceNewest: 0, note: PAUSED_NOTE };
    const { checkpoints, callsSinceNewest } = await this.access.exclusive(record, (s) => this.control(s).list());
    return { sandbox: handleOf(record), kept, checkpoints, callsSinceNewest };
  }

  async rollback(owner: string, ref: SandboxRef, target: RollbackTarget): Promise<{ sandbox: SandboxHandle; result: RollbackResult }> {
    if ('stepsBack' in target && (!Number.isInteger(target.stepsBack) || target.stepsBack < 1 || target.stepsBack > 50)) {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'steps_back must be a whole number from 1 to 50');
    }
    if ('checkpointId' in target && !CHECKPOINT_ID.test(target.checkpointId)) {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'checkpoint_id is an id from /checkpoints, like c12');
    }
    const record = await this.access.resolve(owner, ref, false);
    if (!record.sandbox) throw new ServiceError(ErrorCode.CHECKPOINT_NOT_FOUND, PAUSED_NOTE);
    const result = await this.access.exclusive(record, async (s) => {
      const control = this.control(s);
      const id =
        'checkpointId' in target ? target.checkpointId : chooseSteps((await control.list({ memory: false })).checkpoints, target.stepsBack);
      return control.rollback(id);
    });
    return { sandbox: handleOf(record), result };
  }
}

/**
 * The checkpoint before the last `steps` calls: counted from the newest when it is the state now (taken after
 * the last call), else from after it (the last call left none: it crashed the interpreter, or none could be
 * kept). One that is gone is named, not skipped: the caller decides.
 */
export function chooseSteps(list: readonly CheckpointInfo[], steps: number): string {
  const base = list.length > 0 && list[list.length - 1]!.current ? list.length - 1 : list.length;
  const at = base - steps;
  if (at < 0) {
    const undoable = base;
    throw new ServiceError(
      ErrorCode.CHECKPOINT_NOT_FOUND,
      undoable === 0
        ? 'there is no checkpoint to go back to yet: one is kept after each call'
        : `only the last ${undoable} call(s) can be undone (the sandbox keeps ${list.length} checkpoint(s))`,
    );
  }
  const chosen = list[at]!;
  if (!chosen.alive) {
    throw new ServiceError(
      ErrorCode.CHECKPOINT_LOST,
      `checkpoint ${chosen.id} (${steps} step(s) back) is gone: its process was killed (kill -9 -1 in the sandbox, or the out-of-memory killer); list the checkpoints and choose another`,
    );
  }
  return chosen.id;
}
