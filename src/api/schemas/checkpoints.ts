/** Schemas of checkpoints (undo): the list a sandbox keeps, and a rollback to one of them. */
import { Type } from 'typebox';
import { SandboxRefFields } from './common.js';

const Paths = (description: string) => Type.Array(Type.String(), { description });

export const CheckpointSchema = Type.Object({
  id: Type.String({ description: 'Give it to /rollback as checkpoint_id.' }),
  created_at: Type.String({ description: 'When it was taken (ISO 8601), right after the call in `after`.' }),
  after: Type.Union([
    Type.Object(
      {
        kind: Type.String({
          description:
            'run_code, execute_command, write_file, make_dir, move_file, remove_file, or rollback (the state a rollback restored, kept again).',
        }),
        code: Type.Optional(Type.String({ description: 'The code, command line or path (first 300 characters).' })),
        execution_count: Type.Optional(Type.Integer()),
        to: Type.Optional(Type.String({ description: 'For a rollback: the checkpoint it went back to.' })),
      },
      { description: 'The call this checkpoint was taken after: rolling back to it undoes every later call.' },
    ),
    Type.Null(),
  ]),
  current: Type.Boolean({ description: 'It is the state now (taken after the last call): rolling back to it undoes nothing but a crash.' }),
  alive: Type.Boolean({
    description: 'False when its process was killed (kill -9 -1 in the sandbox, or the out-of-memory killer): it cannot be rolled back to.',
  }),
  memory_bytes: Type.Union([Type.Integer(), Type.Null()], {
    description: 'Memory only this checkpoint holds (copy-on-write: the pages changed after it), freed when it is dropped.',
  }),
  file_bytes: Type.Integer({
    description: 'Bytes of file copies it added (files unchanged since an earlier checkpoint are not copied again).',
  }),
  files_not_kept: Paths('Files over CHECKPOINT_MAX_FILE_BYTES it holds no copy of: a rollback to it leaves them as they are.'),
  files_truncated: Type.Boolean({ description: 'The workspace had more than 20,000 entries: the rest is not kept.' }),
  threads: Type.Integer({ description: 'Threads of user code that ran when it was taken: they do not run again after a rollback to it.' }),
  covers_calls: Type.Integer({
    description:
      'The calls between the checkpoint before it and this one: 1, or more when calls came back to back (within CHECKPOINT_WAIT_MS) and shared it — going back past it undoes them all.',
  }),
});

export const ListCheckpointsResponse = Type.Object({
  sandbox_id: Type.String(),
  kept: Type.Integer({ description: 'How many checkpoints the sandbox keeps at most (CHECKPOINTS_KEPT); the oldest go first.' }),
  checkpoints: Type.Array(CheckpointSchema, { description: 'Oldest first.' }),
  calls_since_newest: Type.Integer({
    description: 'Calls after the newest checkpoint that left none (they came back to back): steps_back 1 undoes them all.',
  }),
  note: Type.Optional(Type.String()),
});

export const RollbackBody = Type.Object({
  ...SandboxRefFields,
  checkpoint_id: Type.Optional(
    Type.String({ minLength: 1, maxLength: 40, description: 'The checkpoint to go back to, from /checkpoints.' }),
  ),
  steps_back: Type.Optional(
    Type.Integer({
      minimum: 1,
      maximum: 50,
      description:
        'How many checkpoints to go back: 1 undoes the last call (or the last few, when they came back to back and shared a checkpoint; the answer says how many). The default when no checkpoint_id is given.',
    }),
  ),
});

export const RollbackResponse = Type.Object({
  sandbox_id: Type.String(),
  checkpoint: CheckpointSchema,
  dropped: Type.Array(Type.String(), { description: 'The later checkpoints, dropped.' }),
  files: Type.Object({
    restored: Paths('Files put back as they were (contents, mode, mtime).'),
    removed: Paths('Files and directories made after the checkpoint, removed.'),
    not_restored: Paths('Files over CHECKPOINT_MAX_FILE_BYTES: left as they are now.'),
    missing: Paths("Files whose copy was gone (removed from the sandbox's /tmp): left as they are now."),
    truncated: Type.Boolean(),
  }),
  not_rolled_back: Type.Array(Type.String(), {
    description: 'What kept running as it was: the JavaScript interpreter, extra contexts, background processes.',
  }),
  execution_count: Type.Union([Type.Integer(), Type.Null()]),
  calls_undone: Type.Union([Type.Integer(), Type.Null()], { description: 'How many calls the rollback undid.' }),
  notice: Type.String({ description: 'What the rollback did, in a sentence an agent can act on.' }),
});
