/** Schemas of what runs beside calls: background processes, file watches, code contexts, and file moves. */
import { Type } from 'typebox';
import { SandboxRefFields, envSchema } from './common.js';

const PidField = Type.Integer({ minimum: 1, description: 'Process id inside the sandbox, from /start_process or /list_processes.' });
const PathField = (description: string) => Type.String({ minLength: 1, maxLength: 4096, description });

export const StartProcessBody = Type.Object({
  ...SandboxRefFields,
  command: Type.Optional(
    Type.String({ maxLength: 65536, description: 'A shell command line, run by bash -c. Give this, or cmd (and args).' }),
  ),
  cmd: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'A program to run (looked up on PATH).' })),
  args: Type.Optional(Type.Array(Type.String({ maxLength: 65536 }), { maxItems: 256, description: "cmd's arguments." })),
  cwd: Type.Optional(Type.String({ maxLength: 4096, description: 'Working directory (default: the workspace).' })),
  env: Type.Optional(envSchema('Environment variables of the process.')),
  stdin: Type.Optional(Type.Boolean({ description: 'Keep stdin open for /send_input (default false: it reads nothing).' })),
  pty: Type.Optional(
    Type.Object(
      { cols: Type.Integer({ minimum: 1, maximum: 1000 }), rows: Type.Integer({ minimum: 1, maximum: 1000 }) },
      { description: 'Run in a pseudo-terminal of this size (output comes as one stream, "pty"; input goes to the terminal).' },
    ),
  ),
  tag: Type.Optional(Type.String({ maxLength: 256, description: 'A name of yours for the process, shown by /list_processes.' })),
});

export const StartProcessResponse = Type.Object({
  sandbox_id: Type.String(),
  pid: Type.Integer(),
});

export const ProcessRefBody = Type.Object({ ...SandboxRefFields, pid: PidField });

export const ProcessOutputBody = Type.Object({
  ...SandboxRefFields,
  pid: PidField,
  since: Type.Optional(
    Type.Integer({ minimum: 0, description: 'Byte offset to read from: the `next` of the previous answer (default 0).' }),
  ),
  wait_ms: Type.Optional(
    Type.Integer({ minimum: 0, maximum: 30000, description: 'Wait up to this long for new output or the end when there is none yet.' }),
  ),
});

export const ProcessOutputResponse = Type.Object({
  pid: Type.Integer(),
  running: Type.Boolean(),
  stdout: Type.String(),
  stderr: Type.String(),
  output: Type.String({ description: "All output in arrival order (a terminal's output is here only)." }),
  offset: Type.Integer({ description: 'Byte offset of the first byte answered.' }),
  next: Type.Integer({ description: 'Where the next read starts (pass it as since).' }),
  truncated: Type.Boolean({
    description: 'Output was dropped: older than the last 64 KiB kept, or past MAX_OUTPUT_BYTES for the process.',
  }),
  exit_code: Type.Union([Type.Integer(), Type.Null()], { description: 'Once it ended: its exit status, 128+N for signal N.' }),
  status: Type.Union([Type.String(), Type.Null()], { description: 'Once it ended: "exit status 0", "signal: SIGKILL"…' }),
  error: Type.Union([Type.String(), Type.Null()]),
});

export const ProcessInfoSchema = Type.Object({
  pid: Type.Integer(),
  tag: Type.Optional(Type.String()),
  cmd: Type.String(),
  args: Type.Array(Type.String()),
  cwd: Type.Optional(Type.String()),
  pty: Type.Boolean(),
});

export const ListProcessesResponse = Type.Object({ sandbox_id: Type.String(), processes: Type.Array(ProcessInfoSchema) });

export const SendInputBody = Type.Object({
  ...SandboxRefFields,
  pid: PidField,
  data: Type.Optional(Type.String({ maxLength: 1048576, description: 'Text to write to its stdin (or terminal).' })),
  data_base64: Type.Optional(Type.String({ maxLength: 1398104, description: 'Or bytes, base64.' })),
  close_stdin: Type.Optional(Type.Boolean({ description: 'Then close its stdin (end of input).' })),
});

export const SignalProcessBody = Type.Object({
  ...SandboxRefFields,
  pid: PidField,
  signal: Type.Optional(
    Type.String({ description: 'SIGTERM (default), SIGKILL, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGCONT or SIGSTOP.' }),
  ),
});

export const ResizeTerminalBody = Type.Object({
  ...SandboxRefFields,
  pid: PidField,
  cols: Type.Integer({ minimum: 1, maximum: 1000 }),
  rows: Type.Integer({ minimum: 1, maximum: 1000 }),
});

export const OkResponse = Type.Object({ sandbox_id: Type.String(), status: Type.Literal('ok') });

export const PathBody = Type.Object({ ...SandboxRefFields, path: PathField('Path in the sandbox (relative: to the workspace).') });

export const MoveFileBody = Type.Object({
  ...SandboxRefFields,
  source: PathField('What to move.'),
  destination: PathField('Its new path (directories are made).'),
});

export const EntrySchema = Type.Object({
  name: Type.String(),
  path: Type.String(),
  type: Type.String({ description: 'file, directory, symlink or other.' }),
  size: Type.Integer(),
  modified_at: Type.String({ format: 'date-time' }),
  mode: Type.Optional(Type.Integer()),
  permissions: Type.Optional(Type.String()),
  owner: Type.Optional(Type.String()),
  group: Type.Optional(Type.String()),
  symlink_target: Type.Optional(Type.String({ description: 'What a symlink holds (it is never followed).' })),
});

export const EntryResponse = Type.Object({ sandbox_id: Type.String(), entry: EntrySchema, created: Type.Optional(Type.Boolean()) });

export const WatchDirBody = Type.Object({
  ...SandboxRefFields,
  path: PathField('Directory to watch.'),
  recursive: Type.Optional(Type.Boolean({ description: 'Also what is under its subdirectories (default false).' })),
});

export const WatchRefBody = Type.Object({ ...SandboxRefFields, watch_id: Type.String({ minLength: 1, maxLength: 64 }) });

export const WatchDirResponse = Type.Object({ sandbox_id: Type.String(), watch_id: Type.String(), path: Type.String() });

export const WatchEventsResponse = Type.Object({
  events: Type.Array(
    Type.Object({
      name: Type.String({ description: 'Path relative to the watched directory.' }),
      path: Type.String(),
      type: Type.String({ description: 'create, write, remove, rename (the old name) or chmod.' }),
    }),
  ),
  overflowed: Type.Boolean({ description: 'More than 1000 events came since the last look; the oldest were dropped.' }),
});

export const CreateContextBody = Type.Object({
  ...SandboxRefFields,
  language: Type.Optional(Type.String({ description: 'python (default) or javascript.' })),
  cwd: Type.Optional(Type.String({ maxLength: 4096, description: 'Its working directory (default: the workspace).' })),
});

export const ContextSchema = Type.Object({ context_id: Type.String(), language: Type.String(), cwd: Type.String() });
export const CreateContextResponse = Type.Object({ sandbox_id: Type.String(), ...ContextSchema.properties });
export const ListContextsResponse = Type.Object({ sandbox_id: Type.String(), contexts: Type.Array(ContextSchema) });
export const ContextRefBody = Type.Object({ ...SandboxRefFields, context_id: Type.String({ minLength: 1, maxLength: 128 }) });
