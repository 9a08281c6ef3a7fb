/** Schemas shared by several routes: how a request names its sandbox, errors, sandbox info. */
import { Type, type Static } from 'typebox';

export const SandboxIdField = Type.String({
  minLength: 1,
  maxLength: 128,
  description: 'Id returned by /create_sandbox.',
  examples: ['sbx_4f2a9c0d1e7b6a5f3c2d1e0f'],
});

export const ConversationIdField = Type.String({
  minLength: 1,
  maxLength: 256,
  description:
    "Instead of sandbox_id: the conversation whose sandbox to use; one is created on first use (e.g. Dify's sys.conversation_id).",
});

/** The two ways a body names a sandbox. At least one is required; the service says so when both are missing. */
export const SandboxRefFields = {
  sandbox_id: Type.Optional(SandboxIdField),
  conversation_id: Type.Optional(ConversationIdField),
};

/** Environment variables: POSIX names only (a record's pattern alone would let other keys through). */
export function envSchema(description: string) {
  return Type.Record(Type.String({ pattern: '^[A-Za-z_][A-Za-z0-9_]{0,127}$' }), Type.String({ maxLength: 65536 }), {
    additionalProperties: false,
    maxProperties: 256,
    description: `${description} Names are letters, digits and _, not starting with a digit.`,
  });
}

export const ErrorResponse = Type.Object(
  {
    error: Type.Object({
      code: Type.String({ description: 'Stable machine-readable code, e.g. SANDBOX_NOT_FOUND.' }),
      message: Type.String({ description: 'What went wrong and what to change.' }),
    }),
    detail: Type.String({ description: 'Same as error.message (FastAPI-style clients of the original project read this).' }),
  },
  { $id: 'ErrorResponse', description: "A failure of the request (never of the user's code, which is reported with HTTP 200)." },
);

export const SandboxInfoSchema = Type.Object(
  {
    id: Type.String(),
    sandbox_id: Type.String(),
    status: Type.Union([Type.Literal('running'), Type.Literal('paused')], {
      description:
        'running, or paused: no process, its files and variables stored on disk; any call to it resumes it under the same id (the answer says what came back).',
    }),
    paused_at: Type.Union([Type.String({ format: 'date-time' }), Type.Null()], {
      description: 'When its state was last stored (paused, or paused before and resumed since); null if never.',
    }),
    state_bytes: Type.Integer({ description: 'Bytes its stored state takes on the service (STATE_DIR).' }),
    backend: Type.String({ description: 'Backend running the sandbox (local, agentcube, …).' }),
    conversation_id: Type.Union([Type.String(), Type.Null()]),
    created_at: Type.String({ format: 'date-time' }),
    last_used_at: Type.String({ format: 'date-time' }),
    expires_at: Type.String({
      format: 'date-time',
      description:
        'Running: when it is paused (idle timeout) unless used again, capped by its lifetime. Paused: when it is deleted (PAUSED_RETENTION_S), capped by its lifetime.',
    }),
    idle_timeout_seconds: Type.Number(),
    max_lifetime_seconds: Type.Number(),
    workspace: Type.String({ description: 'Working directory inside the sandbox; relative paths are resolved against it.' }),
    network: Type.Boolean({ description: 'Whether the sandbox has outbound HTTP(S) through the filtering proxy.' }),
  },
  { $id: 'SandboxInfo' },
);

export type SandboxInfoWire = Static<typeof SandboxInfoSchema>;
