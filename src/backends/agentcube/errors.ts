/**
 * The one table from AgentCube's answers to the service's error codes (shared/reference/agentcube.md §2):
 * WorkloadManager bodies are {"message"}, Router bodies {"error", "code": string}, PicoD bodies
 * {"error", "code": number}. The original answer is kept as the cause.
 */
import { ServiceError, ErrorCode } from '../../core/errors.js';

type Where = 'wm' | 'router';

function messageOf(body: Buffer): string {
  const text = body.toString('utf8');
  try {
    const j = JSON.parse(text) as { message?: string; error?: string };
    return j.error ?? j.message ?? text;
  } catch {
    return text.trim();
  }
}

interface Rule {
  readonly where?: Where;
  readonly status: number;
  readonly match?: RegExp;
  readonly code: ErrorCode;
  readonly say: (msg: string, path?: string) => string;
  readonly headers?: Record<string, string>;
}

const RULES: readonly Rule[] = [
  {
    where: 'router',
    status: 404,
    match: /^sessions\.agentcube\.volcano\.sh/,
    code: ErrorCode.SANDBOX_NOT_FOUND,
    say: () =>
      "the AgentCube session behind this sandbox no longer exists (deleted, or expired by AgentCube's idle timeout); create a new sandbox",
  },
  {
    status: 404,
    match: /codeinterpreters\.agentcube\.volcano\.sh|code interpreter not found/,
    code: ErrorCode.BACKEND_UNAVAILABLE,
    say: (m) => `AgentCube has no such CodeInterpreter (${m}); check AGENTCUBE_NAMESPACE and AGENTCUBE_CODE_INTERPRETER`,
  },
  {
    where: 'router',
    status: 404,
    match: /File not found|Directory not found/,
    code: ErrorCode.FILE_NOT_FOUND,
    say: (_m, p) => `no such file or directory in the sandbox: ${p ?? ''}`,
  },
  {
    where: 'router',
    status: 400,
    match: /escapes workspace jail|access denied/,
    code: ErrorCode.PATH_OUTSIDE_WORKSPACE,
    say: (_m, p) => `path '${p ?? ''}' resolves outside the workspace`,
  },
  {
    where: 'router',
    status: 400,
    match: /is a directory/,
    code: ErrorCode.IS_A_DIRECTORY,
    say: (_m, p) => `${p ?? ''} is a directory, not a file`,
  },
  {
    where: 'router',
    status: 500,
    match: /not a directory/,
    code: ErrorCode.NOT_A_DIRECTORY,
    say: (_m, p) => `${p ?? ''} is not a directory`,
  },
  { status: 413, code: ErrorCode.FILE_TOO_LARGE, say: () => 'AgentCube refuses request bodies over 32 MiB' },
  {
    where: 'router',
    status: 429,
    code: ErrorCode.BACKEND_OVERLOADED,
    say: () => 'the AgentCube Router is overloaded; retry shortly',
    headers: { 'retry-after': '2' },
  },
  {
    status: 401,
    code: ErrorCode.BACKEND_UNAVAILABLE,
    say: (m) => `AgentCube refused the service's credentials (${m}); check AGENTCUBE_TOKEN / AGENTCUBE_TOKEN_FILE`,
  },
  { status: 403, code: ErrorCode.BACKEND_UNAVAILABLE, say: (m) => `AgentCube forbids this (${m}); check the service's role or token` },
  {
    where: 'router',
    status: 502,
    code: ErrorCode.SANDBOX_LOST,
    say: () => "the sandbox's pod cannot be reached any more; create a new sandbox",
  },
  {
    status: 503,
    code: ErrorCode.BACKEND_UNAVAILABLE,
    say: (m) => `AgentCube is not ready (${m}); retry shortly`,
    headers: { 'retry-after': '5' },
  },
  { status: 504, code: ErrorCode.BACKEND_UNAVAILABLE, say: (m) => `AgentCube timed out (${m}): the sandbox did not become ready in time` },
];

export function mapAgentCubeError(where: Where, status: number, body: Buffer, path?: string): ServiceError {
  const msg = messageOf(body);
  const rule = RULES.find((r) => (!r.where || r.where === where) && r.status === status && (!r.match || r.match.test(msg)));
  const cause = new Error(`AgentCube ${where === 'wm' ? 'WorkloadManager' : 'Router'} answered ${status}: ${msg}`);
  if (rule) return new ServiceError(rule.code, rule.say(msg, path), { cause, headers: rule.headers });
  if (where === 'router' && status === 400)
    return new ServiceError(ErrorCode.VALIDATION_FAILED, `the sandbox refused the request: ${msg}`, { cause });
  return new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, `AgentCube failed (${status}): ${msg.slice(0, 300)}`, { cause });
}

/** A connection that failed before any answer. */
export function unreachable(where: Where, err: unknown): ServiceError {
  const e = err as Error & { code?: string };
  const name = where === 'wm' ? 'WorkloadManager (AGENTCUBE_WORKLOAD_MANAGER_URL)' : 'Router (AGENTCUBE_ROUTER_URL)';
  return new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, `cannot reach the AgentCube ${name}: ${e.code ?? e.message}`, { cause: err });
}
