/** Schemas of the sandbox lifecycle routes. */
import { Type } from 'typebox';
import { ConversationIdField, SandboxInfoSchema, SandboxRefFields, envSchema } from './common.js';

export const CreateSandboxBody = Type.Object({
  conversation_id: Type.Optional(ConversationIdField),
  idle_timeout_seconds: Type.Optional(
    Type.Number({ minimum: 1, description: 'Stop the sandbox after this many idle seconds (default SANDBOX_IDLE_TIMEOUT_S).' }),
  ),
  max_lifetime_seconds: Type.Optional(
    Type.Number({
      minimum: 1,
      description: 'Stop the sandbox this many seconds after creation at the latest (default and maximum SANDBOX_MAX_LIFETIME_S).',
    }),
  ),
  network: Type.Optional(
    Type.Boolean({
      default: false,
      description:
        'Outbound HTTP(S) for this sandbox, through a proxy that refuses loopback, private and metadata addresses (HTTP_PROXY/HTTPS_PROXY are set). Off by default: no network at all.',
    }),
  ),
  env: Type.Optional(envSchema('Environment variables for code in the sandbox.')),
});

export const CreateSandboxResponse = Type.Object({
  sandbox_id: Type.String(),
  info: SandboxInfoSchema,
  reused: Type.Boolean({ description: 'True when conversation_id already had a live sandbox and it was returned.' }),
});

export const SandboxRefBody = Type.Object({ ...SandboxRefFields });

export const StopSandboxResponse = Type.Object({
  status: Type.Union([Type.Literal('stopped'), Type.Literal('not_found')]),
  sandbox_id: Type.String(),
});

export const ListSandboxesResponse = Type.Object({
  sandboxes: Type.Array(SandboxInfoSchema),
});

const NotKept = (description: string) =>
  Type.Array(
    Type.Object({
      name: Type.String(),
      language: Type.Union([Type.Literal('python'), Type.Literal('javascript')]),
      reason: Type.String({ description: 'Why it could not be kept, e.g. "cannot pickle \'generator\' object".' }),
    }),
    { description },
  );

export const PauseSandboxResponse = Type.Object({
  sandbox_id: Type.String(),
  status: Type.Literal('paused'),
  state_bytes: Type.Integer({ description: 'Bytes stored: the workspace, byte for byte, and the saved variables.' }),
  saved: Type.Array(Type.String(), { description: 'Variables (and imports) saved, Python and JavaScript.' }),
  not_saved: NotKept('Variables that could not be saved (open files, generators, sockets, JavaScript functions…): gone after the resume.'),
  info: SandboxInfoSchema,
});

export const ResumeSandboxResponse = Type.Object({
  sandbox_id: Type.String(),
  status: Type.Literal('running'),
  state_preserved: Type.Boolean({ description: 'False when the resume could not bring back everything (notice says what).' }),
  notice: Type.Union([Type.String(), Type.Null()], { description: 'What was resumed and what was not restored; null if it was running.' }),
  info: SandboxInfoSchema,
});

export const ForkSandboxResponse = Type.Object({
  sandbox_id: Type.String({ description: 'The new sandbox: same API key, its own id; no conversation.' }),
  forked_from: Type.String(),
  status: Type.Literal('paused', { description: 'The fork starts paused; its first call resumes it with the copied state.' }),
  state_bytes: Type.Integer(),
  saved: Type.Array(Type.String(), { description: 'Variables (and imports) copied into the fork.' }),
  not_saved: NotKept('Variables that could not be copied (open files, generators…).'),
  info: SandboxInfoSchema,
});
