/** The `language` values /run_code accepts, and what runs each. */
import { ServiceError, ErrorCode } from '../core/errors.js';

export type Runtime = 'python' | 'javascript' | 'shell';

const LANGUAGES: Record<string, Runtime> = {
  py: 'python',
  python: 'python',
  python3: 'python',
  js: 'javascript',
  javascript: 'javascript',
  node: 'javascript',
  nodejs: 'javascript',
  bash: 'shell',
  sh: 'shell',
  shell: 'shell',
};

export const ACCEPTED_LANGUAGES = Object.keys(LANGUAGES);

export function runtimeOf(language: string | undefined): Runtime {
  const key = (language ?? 'py').trim().toLowerCase();
  // Own keys only: '__proto__' or 'constructor' must not find Object.prototype's members.
  const runtime = Object.hasOwn(LANGUAGES, key) ? LANGUAGES[key] : undefined;
  if (!runtime) {
    throw new ServiceError(
      ErrorCode.UNSUPPORTED_LANGUAGE,
      `language '${language}' is not supported; use one of: ${ACCEPTED_LANGUAGES.join(', ')}`,
    );
  }
  return runtime;
}
