/** Schemas of the code and command routes. */
import { Type } from 'typebox';
import { SandboxRefFields, envSchema } from './common.js';

const TimeoutField = Type.Number({
  minimum: 0.001,
  description:
    "Seconds this call may run (default EXEC_TIMEOUT_S = 50, at most EXEC_MAX_TIMEOUT_S). Past it Python gets a KeyboardInterrupt, a command's process tree is killed.",
});

/** Set when the conversation's sandbox had ended and this call got a new one. */
const PreviousSandboxField = Type.Union([Type.String(), Type.Null()], {
  description: "The conversation's sandbox that ended and that this new one replaces (notice says why); null otherwise.",
});

export const CodeErrorSchema = Type.Object({
  name: Type.String({
    description:
      'Exception class (ZeroDivisionError…), or ExecutionTimeout, KernelDied, CommandFailed, or the limit hit: MemoryLimitExceeded, ProcessLimitExceeded, CpuTimeLimitExceeded, DiskQuotaExceeded, OutputLimitExceeded.',
  }),
  value: Type.String(),
  traceback: Type.String({ description: "Traceback showing only the user's own lines." }),
});

export const RichResultSchema = Type.Object({
  type: Type.Union([Type.Literal('execute_result'), Type.Literal('display_data')]),
  data: Type.Record(Type.String(), Type.String(), {
    description:
      'MIME bundle: text/plain always; text/html and text/markdown when the value provides them (a pandas DataFrame gives both); ' +
      'image/png, image/svg+xml base64/text only with inline_images.',
  }),
  path: Type.Optional(Type.String({ description: 'For images: where the image was saved in the sandbox.' })),
  url: Type.Optional(Type.String({ description: 'For images: a signed URL that serves it without the API key.' })),
});

export const ArtifactSchema = Type.Object(
  {
    path: Type.String({ description: 'Absolute path inside the sandbox.' }),
    name: Type.String(),
    size: Type.Integer(),
    mime_type: Type.String(),
    url: Type.String({ description: 'Absolute, signed, time-limited URL (FILE_URL_TTL_S) that serves the file without the API key.' }),
  },
  { description: 'A file the call created or changed in the workspace (hidden and cache directories are not watched).' },
);

const StreamField = Type.Optional(
  Type.Union([Type.Boolean(), Type.Literal('ndjson'), Type.Literal('sse')], {
    description: 'Stream the answer: true or "ndjson" for NDJSON, "sse" for server-sent events (also chosen by Accept: text/event-stream).',
  }),
);

const ArtifactFields = {
  files: Type.Array(ArtifactSchema),
  files_truncated: Type.Boolean({ description: 'True when more than 100 files changed and only 100 are listed.' }),
};

export const RunCodeBody = Type.Object({
  ...SandboxRefFields,
  code: Type.String({
    description: 'Source to run. Python keeps its variables between calls in the same sandbox.',
    examples: ['x = 41\nprint(x + 1)'],
  }),
  // No `default` keywords on this hot-path body: filling them in costs more than the handler reading
  // undefined as the default (the defaults are in the descriptions).
  language: Type.Optional(
    Type.String({
      description:
        'Default py. py / python / python3 (stateful Python), js / javascript / node (stateful JavaScript on Node), bash / sh / shell (a shell command line).',
    }),
  ),
  timeout: Type.Optional(TimeoutField),
  inline_images: Type.Optional(
    Type.Boolean({
      description:
        'Default false. Also put image bytes (base64) into results, for clients that cannot fetch URLs. Off by default: Dify caps text answers at 1 MiB.',
    }),
  ),
  stream: StreamField,
  context_id: Type.Optional(
    Type.String({
      minLength: 1,
      maxLength: 128,
      description: 'Run in a context made with /create_context (its own variables and working directory; its language wins).',
    }),
  ),
  env: Type.Optional(envSchema('Environment variables for this call only (os.environ / process.env), put back afterwards.')),
});

const UsageSchema = Type.Object(
  {
    cpu_ms: Type.Union([Type.Integer(), Type.Null()], { description: "CPU time the sandbox's processes used during the call." }),
    memory_bytes: Type.Union([Type.Integer(), Type.Null()], { description: "Memory the sandbox's processes use after the call." }),
    memory_peak_bytes: Type.Union([Type.Integer(), Type.Null()], {
      description: 'The most memory the sandbox used at once so far (null where the host keeps no such count).',
    }),
  },
  { description: 'What the call used, to see why it was slow or stopped (SANDBOX_MEMORY_BYTES, EXEC_CPU_LIMIT_S).' },
);

export const RunCodeResponse = Type.Object({
  sandbox_id: Type.String(),
  language: Type.Union([Type.Literal('python'), Type.Literal('javascript'), Type.Literal('shell')]),
  output: Type.String({
    description: 'stdout and stderr as they arrived, then the value of a last bare expression (as a notebook shows it).',
  }),
  stdout: Type.String(),
  stderr: Type.String(),
  error: Type.Union([CodeErrorSchema, Type.Null()], {
    description: "The failure of the user's code, or null. Failures of code are HTTP 200.",
  }),
  results: Type.Array(RichResultSchema, { description: "Rich values, e.g. the last expression's value." }),
  exit_code: Type.Union([Type.Integer(), Type.Null()], { description: 'Exit status for shell languages; null for Python.' }),
  timed_out: Type.Boolean(),
  state_preserved: Type.Boolean({
    description:
      "False when some of the sandbox's files or variables are not there: Python had to be restarted (e.g. after a timeout it ignored), a resume could not restore everything, or the conversation's sandbox ended and this is a new one (notice says which).",
  }),
  output_truncated: Type.Boolean({ description: 'True when output went past MAX_OUTPUT_BYTES and the rest was dropped.' }),
  ...ArtifactFields,
  notice: Type.Union([Type.String(), Type.Null()], {
    description:
      'Something to know about this result: the sandbox was resumed from a pause (and what was not restored), the conversation got a new sandbox (and why the old one ended), why no state is kept on this backend.',
  }),
  previous_sandbox_id: PreviousSandboxField,
  markdown: Type.String({
    description: 'Output, error, tables, images (as ![..](url)) and file links as markdown, ready for a Dify Answer node.',
  }),
  duration_ms: Type.Number({ description: 'Time spent running inside the sandbox.' }),
  usage: Type.Optional(UsageSchema),
});

export const ExecuteCommandBody = Type.Object({
  ...SandboxRefFields,
  command: Type.String({
    minLength: 1,
    description: 'Command line run by bash -c in the workspace: pipes, &&, redirects work.',
    examples: ['ls -la | head -5'],
  }),
  timeout: Type.Optional(TimeoutField),
  cwd: Type.Optional(Type.String({ description: 'Working directory (absolute, or relative to the workspace).' })),
  env: Type.Optional(envSchema('Extra environment variables for this command.')),
  stream: StreamField,
});

export const ExecuteCommandResponse = Type.Object({
  sandbox_id: Type.String(),
  output: Type.String({ description: 'stdout and stderr as they arrived.' }),
  stdout: Type.String(),
  stderr: Type.String(),
  exit_code: Type.Integer({ description: 'Exit status; 124 on timeout; 128+N when killed by signal N.' }),
  error: Type.Union([CodeErrorSchema, Type.Null()], {
    description: 'Null on exit 0; else CommandFailed, ExecutionTimeout, or the sandbox limit the command hit.',
  }),
  timed_out: Type.Boolean(),
  output_truncated: Type.Boolean(),
  ...ArtifactFields,
  notice: Type.Union([Type.String(), Type.Null()], {
    description:
      'Something to know about this result: a resume from a pause, a new sandbox for the conversation, what the backend does not report.',
  }),
  previous_sandbox_id: PreviousSandboxField,
  duration_ms: Type.Number(),
  usage: Type.Optional(UsageSchema),
});
