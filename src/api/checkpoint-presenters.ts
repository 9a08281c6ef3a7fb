/** Checkpoints and rollbacks as every front end answers them (snake_case, as on the wire). */
import type { CheckpointInfo, RollbackResult } from '../service/sandbox-checkpoints.js';

export function checkpointToWire(c: CheckpointInfo) {
  return {
    id: c.id,
    created_at: new Date(c.createdAtMs).toISOString(),
    after: c.after
      ? {
          kind: c.after.kind,
          ...(c.after.code !== undefined ? { code: c.after.code } : {}),
          ...(c.after.executionCount !== undefined ? { execution_count: c.after.executionCount } : {}),
          ...(c.after.to !== undefined ? { to: c.after.to } : {}),
        }
      : null,
    current: c.current,
    alive: c.alive,
    memory_bytes: c.memoryBytes,
    file_bytes: c.fileBytes,
    files_not_kept: [...c.filesNotKept],
    files_truncated: c.filesTruncated,
    threads: c.threads,
    covers_calls: c.coversCalls,
  };
}

export function rollbackToWire(sandboxId: string, r: RollbackResult) {
  const f = r.files;
  const said = [
    `rolled back to checkpoint ${r.checkpoint.id}${r.checkpoint.after ? ` (taken after ${describe(r.checkpoint.after)})` : ''}: the interpreter is as it was then` +
      (r.callsUndone !== null ? `; ${r.callsUndone} call(s) undone` : ''),
    `${f.restored.length} file(s) put back, ${f.removed.length} removed`,
    ...(f.notRestored.length ? [`${f.notRestored.length} large file(s) not restored (over CHECKPOINT_MAX_FILE_BYTES)`] : []),
    ...(f.missing.length ? [`${f.missing.length} file(s) could not be put back (their copies were gone)`] : []),
    ...(r.dropped.length ? [`${r.dropped.length} later checkpoint(s) dropped`] : []),
    ...(r.checkpoint.threads ? [`${r.checkpoint.threads} thread(s) of user code that ran then do not run now`] : []),
    ...(r.notRolledBack.length ? [`not rolled back: ${r.notRolledBack.join(', ')}`] : []),
  ];
  return {
    sandbox_id: sandboxId,
    checkpoint: checkpointToWire(r.checkpoint),
    dropped: [...r.dropped],
    files: {
      restored: [...f.restored],
      removed: [...f.removed],
      not_restored: [...f.notRestored],
      missing: [...f.missing],
      truncated: f.truncated,
    },
    not_rolled_back: [...r.notRolledBack],
    execution_count: r.executionCount,
    calls_undone: r.callsUndone,
    notice: `${said.join('; ')}.`,
  };
}

function describe(after: NonNullable<CheckpointInfo['after']>): string {
  if (after.kind === 'rollback') return `a rollback to ${after.to ?? 'an earlier checkpoint'}`;
  const what = after.code !== undefined ? ` ${JSON.stringify(after.code.length > 60 ? `${after.code.slice(0, 60)}…` : after.code)}` : '';
  return `${after.kind}${after.executionCount !== undefined ? ` #${after.executionCount}` : ''}${what}`;
}
