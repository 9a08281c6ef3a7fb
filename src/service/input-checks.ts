/** Input no sandbox could take, refused before it reaches one (400 naming the field). */
import { ServiceError, ErrorCode } from '../core/errors.js';

/** NUL or a lone UTF-16 surrogate: neither can become a path, an argument or an environment value. */
const UNREPRESENTABLE = /\0|\p{Cs}/u;

/** Refuses a path, command or environment value that the OS could not take, naming the field (400). */
export function checkText(field: string, value: string | undefined): void {
  if (value !== undefined && UNREPRESENTABLE.test(value)) {
    throw new ServiceError(
      ErrorCode.VALIDATION_FAILED,
      `${field} contains a NUL character or a lone UTF-16 surrogate, which no path, command or environment value can hold; remove it`,
    );
  }
}

/** What a sandbox's environment may hold in all: it reaches the sandbox as one argument, which Linux caps at 128 KiB. */
const MAX_ENV_BYTES = 96 * 1024;

export function checkEnv(field: string, env: Readonly<Record<string, string>> | undefined): void {
  for (const [name, value] of Object.entries(env ?? {})) {
    checkText(`${field} name`, name);
    checkText(`${field}.${name}`, value);
  }
  if (env && Buffer.byteLength(JSON.stringify(env)) > MAX_ENV_BYTES) {
    throw new ServiceError(
      ErrorCode.VALIDATION_FAILED,
      `${field} holds more than ${MAX_ENV_BYTES} bytes in all; pass large data as a file instead`,
    );
  }
}
