/**
 * The use cases of checkpoints (undo), once for every front end (HTTP routes, MCP tools). Input is validated
 * by the front end; results are presented by checkpoint-presenters.ts.
 */
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { SandboxRef } from '../service/sandbox-service.js';
import type { RollbackTarget } from '../service/sandbox-checkpoints.js';
import type { Caller } from './caller.js';

export const listCheckpoints = (caller: Caller, ref: SandboxRef) => caller.service.checkpoints.list(caller.owner, ref);

/** Rolls back to `checkpointId`, or undoes the last `stepsBack` calls (1 when neither is given). */
export function rollback(caller: Caller, ref: SandboxRef, checkpointId: string | undefined, stepsBack: number | undefined) {
  if (checkpointId !== undefined && stepsBack !== undefined) {
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give checkpoint_id or steps_back, not both');
  }
  const target: RollbackTarget = checkpointId !== undefined ? { checkpointId } : { stepsBack: stepsBack ?? 1 };
  return caller.service.checkpoints.rollback(caller.owner, ref, target);
}
