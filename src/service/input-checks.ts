/** Input no sandbox could take, refused before it reaches one (400 naming the field). */
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import type { CreateInput } from './types.js';

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

/** A new sandbox's lifetimes and network, after the defaults and the service's limits. */
export function checkCreateInput(config: Config, input: CreateInput): { maxLifetimeS: number; idleTimeoutS: number; network: boolean } {
  const maxLifetimeS = input.maxLifetimeS ?? config.SANDBOX_MAX_LIFETIME_S;
  const idleTimeoutS = input.idleTimeoutS ?? config.SANDBOX_IDLE_TIMEOUT_S;
  for (const [field, value] of [
    ['max_lifetime_seconds', maxLifetimeS],
    ['idle_timeout_seconds', idleTimeoutS],
  ] as const) {
    if (value > config.SANDBOX_MAX_LIFETIME_S) {
      throw new ServiceError(
        ErrorCode.VALIDATION_FAILED,
        `${field} may be at most ${config.SANDBOX_MAX_LIFETIME_S} (SANDBOX_MAX_LIFETIME_S)`,
      );
    }
  }
  const network = input.network === true;
  if (network && !config.SANDBOX_NETWORK_ALLOWED) {
    throw new ServiceError(
      ErrorCode.NETWORK_NOT_ALLOWED,
      'this service does not give sandboxes network access (SANDBOX_NETWORK_ALLOWED=false); create the sandbox without network',
    );
  }
  return { maxLifetimeS, idleTimeoutS, network };
}

/** A call's time limit in milliseconds: `timeout` seconds, or EXEC_TIMEOUT_S, at most EXEC_MAX_TIMEOUT_S. */
export function timeoutMsOf(config: Config, timeoutS: number | undefined): number {
  const s = timeoutS ?? config.EXEC_TIMEOUT_S;
  if (!(s > 0) || s > config.EXEC_MAX_TIMEOUT_S) {
    throw new ServiceError(
      ErrorCode.VALIDATION_FAILED,
      `timeout must be more than 0 and at most ${config.EXEC_MAX_TIMEOUT_S} seconds (EXEC_MAX_TIMEOUT_S)`,
    );
  }
  return Math.round(s * 1000);
}

/** A sandbox's metadata: a few short labels (they are kept in STATE_DIR and listed with every sandbox). */
export function checkMetadata(metadata: Readonly<Record<string, string>> | undefined): void {
  if (!metadata) return;
  const entries = Object.entries(metadata);
  if (entries.length > 32) throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'metadata holds more than 32 entries');
  for (const [k, v] of entries) {
    if (typeof v !== 'string') throw new ServiceError(ErrorCode.VALIDATION_FAILED, `metadata.${k.slice(0, 50)} must be a string`);
    checkText('metadata name', k);
    checkText(`metadata.${k.slice(0, 50)}`, v);
  }
  if (Buffer.byteLength(JSON.stringify(metadata)) > 4096) {
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'metadata holds more than 4096 bytes in all');
  }
}
