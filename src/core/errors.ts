/** One registry of stable error codes, the service's error class, and the one code → HTTP status table. */

export const ErrorCode = {
  VALIDATION_FAILED: 'VALIDATION_FAILED',
  UNSUPPORTED_LANGUAGE: 'UNSUPPORTED_LANGUAGE',
  UNAUTHORIZED: 'UNAUTHORIZED',
  SANDBOX_NOT_FOUND: 'SANDBOX_NOT_FOUND',
  SANDBOX_LOST: 'SANDBOX_LOST',
  FILE_NOT_FOUND: 'FILE_NOT_FOUND',
  IS_A_DIRECTORY: 'IS_A_DIRECTORY',
  NOT_A_DIRECTORY: 'NOT_A_DIRECTORY',
  NOT_A_REGULAR_FILE: 'NOT_A_REGULAR_FILE',
  PATH_OUTSIDE_WORKSPACE: 'PATH_OUTSIDE_WORKSPACE',
  BAD_PATH: 'BAD_PATH',
  BAD_CWD: 'BAD_CWD',
  FILE_IO_FAILED: 'FILE_IO_FAILED',
  FILE_TOO_LARGE: 'FILE_TOO_LARGE',
  PAYLOAD_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  DISK_QUOTA_EXCEEDED: 'DISK_QUOTA_EXCEEDED',
  FILE_URL_INVALID: 'FILE_URL_INVALID',
  FILE_URL_NOT_ALLOWED: 'FILE_URL_NOT_ALLOWED',
  FILE_URL_FETCH_FAILED: 'FILE_URL_FETCH_FAILED',
  NETWORK_NOT_ALLOWED: 'NETWORK_NOT_ALLOWED',
  URL_SIGNATURE_INVALID: 'URL_SIGNATURE_INVALID',
  IDEMPOTENCY_KEY_REUSED: 'IDEMPOTENCY_KEY_REUSED',
  ROUTE_NOT_FOUND: 'ROUTE_NOT_FOUND',
  SANDBOX_LIMIT_REACHED: 'SANDBOX_LIMIT_REACHED',
  CALL_LIMIT_REACHED: 'CALL_LIMIT_REACHED',
  IDEMPOTENT_ANSWER_NOT_KEPT: 'IDEMPOTENT_ANSWER_NOT_KEPT',
  BACKEND_UNAVAILABLE: 'BACKEND_UNAVAILABLE',
  BACKEND_OVERLOADED: 'BACKEND_OVERLOADED',
  PAUSE_NOT_SUPPORTED: 'PAUSE_NOT_SUPPORTED',
  STATE_STORAGE_FULL: 'STATE_STORAGE_FULL',
  STATE_CORRUPT: 'STATE_CORRUPT',
  PROCESS_NOT_FOUND: 'PROCESS_NOT_FOUND',
  CONTEXT_NOT_FOUND: 'CONTEXT_NOT_FOUND',
  WATCH_NOT_FOUND: 'WATCH_NOT_FOUND',
  CHECKPOINT_NOT_FOUND: 'CHECKPOINT_NOT_FOUND',
  CHECKPOINT_LOST: 'CHECKPOINT_LOST',
  NOT_SUPPORTED: 'NOT_SUPPORTED',
  PROCESS_LIMIT_REACHED: 'PROCESS_LIMIT_REACHED',
  CONTEXT_LIMIT_REACHED: 'CONTEXT_LIMIT_REACHED',
  WATCH_LIMIT_REACHED: 'WATCH_LIMIT_REACHED',
  STDIN_CLOSED: 'STDIN_CLOSED',
  STDIN_FULL: 'STDIN_FULL',
  NOT_A_TERMINAL: 'NOT_A_TERMINAL',
  BAD_COMMAND: 'BAD_COMMAND',
  INTERNAL_ERROR: 'INTERNAL_ERROR',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

/** HTTP status of each code. The compiler demands an entry for every code. */
export const HTTP_STATUS: Record<ErrorCode, number> = {
  VALIDATION_FAILED: 400,
  UNSUPPORTED_LANGUAGE: 400,
  UNAUTHORIZED: 401,
  SANDBOX_NOT_FOUND: 404,
  // A sandbox whose processes died under it: 4xx, so Dify does not retry into a dead sandbox.
  SANDBOX_LOST: 410,
  FILE_NOT_FOUND: 404,
  IS_A_DIRECTORY: 400,
  NOT_A_DIRECTORY: 400,
  NOT_A_REGULAR_FILE: 400,
  PATH_OUTSIDE_WORKSPACE: 400,
  BAD_PATH: 400,
  BAD_CWD: 400,
  // The OS refused a file operation on a path the user chose (read-only place, odd file type…).
  FILE_IO_FAILED: 400,
  FILE_TOO_LARGE: 413,
  PAYLOAD_TOO_LARGE: 413,
  // 4xx: a 507 is 5xx, which Dify would retry into the same full disk.
  DISK_QUOTA_EXCEEDED: 413,
  STATE_STORAGE_FULL: 413,
  // This backend (AgentCube) keeps sandboxes in pods and cannot pause them yet.
  PAUSE_NOT_SUPPORTED: 409,
  STATE_CORRUPT: 422,
  FILE_URL_INVALID: 400,
  FILE_URL_NOT_ALLOWED: 403,
  // The remote answered badly or not at all: the request must change (URL, expiry), so 4xx, not 502.
  FILE_URL_FETCH_FAILED: 422,
  NETWORK_NOT_ALLOWED: 403,
  URL_SIGNATURE_INVALID: 403,
  IDEMPOTENCY_KEY_REUSED: 422,
  ROUTE_NOT_FOUND: 404,
  SANDBOX_LIMIT_REACHED: 429,
  // Too many calls of one API key running or queued (or in one sandbox's queue): retry later.
  CALL_LIMIT_REACHED: 429,
  // The call ran, but its answer was too large to keep: a 4xx so that the retry does not run it again.
  IDEMPOTENT_ANSWER_NOT_KEPT: 409,
  BACKEND_UNAVAILABLE: 503,
  // Retryable by design: Dify and other clients retry 503 with back-off.
  BACKEND_OVERLOADED: 503,
  PROCESS_NOT_FOUND: 404,
  CONTEXT_NOT_FOUND: 404,
  WATCH_NOT_FOUND: 404,
  CHECKPOINT_NOT_FOUND: 404,
  // Its process was killed (kill -9 -1 in the sandbox, the out-of-memory killer): choose another one.
  CHECKPOINT_LOST: 409,
  NOT_SUPPORTED: 409,
  PROCESS_LIMIT_REACHED: 429,
  CONTEXT_LIMIT_REACHED: 429,
  WATCH_LIMIT_REACHED: 429,
  STDIN_CLOSED: 409,
  STDIN_FULL: 409,
  NOT_A_TERMINAL: 409,
  BAD_COMMAND: 400,
  INTERNAL_ERROR: 500,
};

/** The only error type backends and the service throw; anything else is a bug and becomes a 500. */
export class ServiceError extends Error {
  readonly code: ErrorCode;
  /** Extra response headers, e.g. Retry-After for 429. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; headers?: Record<string, string> } = {}) {
    super(message, { cause: options.cause });
    this.name = 'ServiceError';
    this.code = code;
    this.headers = options.headers ?? {};
  }

  get status(): number {
    return HTTP_STATUS[this.code];
  }
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ErrorCode, value);
}

/** What a caller is told of an error: its message, except for our own faults (500), whose text is for the log. */
export function publicMessage(err: ServiceError): string {
  return err.code === ErrorCode.INTERNAL_ERROR ? 'internal error; see the service log' : err.message;
}

/** An error as every front end tells it: status, stable code, the message a caller may see, extra headers. */
export interface PublicError {
  readonly status: number;
  readonly code: ErrorCode;
  readonly message: string;
  readonly headers: Readonly<Record<string, string>>;
  /** Our own fault: the full error belongs in the log. */
  readonly internal: boolean;
}

/**
 * The one reading of any error thrown while serving a request: the service's own errors by their code;
 * the HTTP layer's (a validation error, a body too large, another 4xx) as VALIDATION_FAILED or
 * PAYLOAD_TOO_LARGE; anything else is a 500 whose text stays in the log.
 */
export function describeError(err: unknown, hints: { bodyLimitBytes?: number; maxFileBytes?: number } = {}): PublicError {
  if (err instanceof ServiceError) {
    return { status: err.status, code: err.code, message: publicMessage(err), headers: err.headers, internal: err.status >= 500 };
  }
  const e = err as { validation?: unknown; code?: string; statusCode?: number; message?: string };
  const plain = (status: number, code: ErrorCode, message: string): PublicError => ({
    status,
    code,
    message,
    headers: {},
    internal: false,
  });
  if (e?.validation) return plain(400, ErrorCode.VALIDATION_FAILED, `invalid request: ${e.message}`);
  if (e?.code === 'FST_ERR_CTP_BODY_TOO_LARGE') {
    return plain(
      HTTP_STATUS.PAYLOAD_TOO_LARGE,
      ErrorCode.PAYLOAD_TOO_LARGE,
      (hints.bodyLimitBytes ?? Infinity) < (hints.maxFileBytes ?? 0)
        ? `request body is larger than ${hints.bodyLimitBytes} bytes, the most this route takes (it only names a sandbox)`
        : `request body is larger than ${hints.bodyLimitBytes} bytes; files are limited to MAX_FILE_BYTES=${hints.maxFileBytes}`,
    );
  }
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500)
    return plain(e.statusCode, ErrorCode.VALIDATION_FAILED, String(e.message));
  return { status: 500, code: ErrorCode.INTERNAL_ERROR, message: 'internal error; see the service log', headers: {}, internal: true };
}

/** The JSON body of a failed request: `{ error: { code, message }, detail }` (`detail` for FastAPI-style clients). */
export function errorBody(code: string, message: string) {
  return { error: { code, message }, detail: message };
}
