/**
 * What every part of the E2B front end shares: which requests are E2B's (routing by the SDK's headers onto
 * one base URL), the per-sandbox access tokens and the signed file URLs made from them, the path names the
 * SDK uses (/home/user is the workspace), and E2B's error shapes.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { FastifyRequest } from 'fastify';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode, describeError } from '../core/errors.js';
import type { SandboxService } from '../service/sandbox-service.js';

/** Where the E2B routes live once the request was recognised (see e2bRewrite). */
export const CONTROL_PREFIX = '/e2b/api';
export const SANDBOX_PREFIX = '/e2b/sandbox';
/** The envd version we answer as: ≥ 0.5.7 (octet-stream uploads), ≥ 0.4.0 (no default user), < 0.6.2 (no file metadata). */
export const ENVD_VERSION = '0.5.7';
export const HOME = '/home/user';
export const TEMPLATES = ['code-interpreter-v1', 'base'] as const;

/** Sandbox-plane paths our own API does not have (its /health and /files/… are E2B's only with E2B's headers). */
const SANDBOX_PLANE = /^\/(?:files(?:\?|$)|(?:execute|contexts|process\.Process|filesystem\.Filesystem)(?:[/?]|$))/;
const CONTROL_PLANE = /^\/(?:v2\/sandboxes|sandboxes\/[^/?]+|v1\/sandboxes)(?:[/?]|$)/;

/**
 * The URL to route a request to: E2B's SDKs send every sandbox's traffic to one base URL and name the sandbox
 * and the port (envd 49983, code interpreter 49999) in headers; their control plane calls the same host.
 * Our own API keeps its paths: only `GET|POST /sandboxes` is shared, and is E2B's for E2B's clients
 * (their User-Agent) or a POST (ours has none).
 */
export function e2bRewrite(url: string, method: string, headers: Record<string, string | string[] | undefined>): string | undefined {
  if (url.startsWith('/e2b/')) return undefined;
  if (headers['e2b-sandbox-id'] !== undefined || headers['e2b-sandbox-port'] !== undefined || SANDBOX_PLANE.test(url)) {
    return SANDBOX_PREFIX + url;
  }
  if (CONTROL_PLANE.test(url)) return CONTROL_PREFIX + url;
  if (/^\/sandboxes(?:\?|$)/.test(url)) {
    const agent = String(headers['user-agent'] ?? '');
    if (method === 'POST' || /^e2b/i.test(agent)) return CONTROL_PREFIX + url;
  }
  return undefined;
}

/** Per-sandbox secrets: the access token is an HMAC of the sandbox's id and owner, so it survives restarts. */
export class AccessTokens {
  /** Read or made on first use: a service that never sees E2B's clients leaves nothing in STATE_DIR. */
  private secret: Buffer | null = null;
  /** Tokens handed out, for requests that name no sandbox (SDKs before e2b 2.14.1 on /files). */
  private readonly byToken = new Map<string, string>();
  private readonly computed = new Map<string, string>();

  constructor(private readonly config: Config) {}

  /** The sandbox's token, remembered as handed out (a later request may bring it without naming the sandbox). */
  token(sandboxId: string, owner: string): string {
    const t = this.compute(sandboxId, owner);
    this.byToken.delete(t);
    this.byToken.set(t, sandboxId);
    if (this.byToken.size > 10_000) this.byToken.delete(this.byToken.keys().next().value as string);
    return t;
  }

  /** The token of a sandbox, computed once (signed URLs are checked against every sandbox's). */
  compute(sandboxId: string, owner: string): string {
    const key = `${sandboxId}\n${owner}`;
    let t = this.computed.get(key);
    if (t === undefined) {
      this.secret ??= secretOf(this.config);
      t = createHmac('sha256', this.secret).update(`e2b-envd\n${sandboxId}\n${owner}`).digest('hex');
      this.computed.set(key, t);
      if (this.computed.size > 10_000) this.computed.delete(this.computed.keys().next().value as string);
    }
    return t;
  }

  /** The sandbox a token was handed out for, if this process handed it out. */
  sandboxOf(token: string): string | undefined {
    return this.byToken.get(token);
  }

  matches(token: string | undefined, sandboxId: string, owner: string): boolean {
    if (!token) return false;
    const want = Buffer.from(this.compute(sandboxId, owner));
    const got = Buffer.from(token);
    return got.length === want.length && timingSafeEqual(got, want);
  }
}

function secretOf(config: Config): Buffer {
  if (config.URL_SIGNING_KEY) return createHash('sha256').update(`e2b\n${config.URL_SIGNING_KEY}`).digest();
  if (config.STATE_DIR === 'off') return randomBytes(32);
  const file = join(config.STATE_DIR, 'e2b-token-secret');
  const read = (): Buffer | null => {
    try {
      const text = readFileSync(file, 'utf8').trim();
      // Anything but 32 random bytes (an empty file a full disk left) would make every token guessable.
      return /^[0-9a-f]{64}$/.test(text) ? Buffer.from(text, 'hex') : null;
    } catch {
      return null;
    }
  };
  const existing = read();
  if (existing) return existing;
  const secret = randomBytes(32);
  mkdirSync(config.STATE_DIR, { recursive: true, mode: 0o700 });
  const partial = `${file}.${process.pid}.new`;
  writeFileSync(partial, secret.toString('hex'), { mode: 0o600 });
  renameSync(partial, file);
  return read() ?? secret;
}

/** The sandbox a sandbox-plane request is for, and its owner, after checking its access token. */
export interface SandboxTarget {
  readonly id: string;
  readonly owner: string;
}

const header = (req: FastifyRequest, name: string): string | undefined => {
  const v = req.headers[name];
  return typeof v === 'string' ? v : undefined;
};

/**
 * Authenticates a request to a sandbox's envd or code interpreter: it names the sandbox (E2b-Sandbox-Id) and
 * carries its access token (X-Access-Token, or E2B-Traffic-Access-Token: the code interpreter's context calls
 * send only that one). Another key's sandbox, or a wrong token, is a 404 that says nothing more.
 */
export function sandboxTarget(req: FastifyRequest, service: SandboxService, tokens: AccessTokens): SandboxTarget {
  const token = header(req, 'x-access-token') ?? header(req, 'e2b-traffic-access-token');
  const id = header(req, 'e2b-sandbox-id') ?? (token ? tokens.sandboxOf(token) : undefined);
  const notFound = new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, `sandbox '${(id ?? '').slice(0, 64)}' not found`);
  if (!id) {
    throw new ServiceError(ErrorCode.SANDBOX_NOT_FOUND, 'no sandbox named: send E2b-Sandbox-Id (and X-Access-Token) as the E2B SDK does');
  }
  const owner = service.ownerOf(id);
  if (owner === undefined || !tokens.matches(token, id, owner)) throw notFound;
  return { id, owner };
}

const targets = new WeakMap<FastifyRequest, SandboxTarget>();

/**
 * A route config's authenticate (auth.ts runs it before the body is read): finds the sandbox by the request's
 * headers and token, or, for /files with a signature, by the signed URL; the owner is the sandbox's.
 */
export function authenticator(service: SandboxService, tokens: AccessTokens, operation?: 'read' | 'write') {
  return (req: FastifyRequest): void => {
    const q = (req.query ?? {}) as Record<string, string | undefined>;
    const target =
      operation && q.signature !== undefined
        ? signedTarget(
            service,
            tokens,
            { path: q.path ?? '', operation, username: q.username, signature: q.signature, expiration: q.signature_expiration },
            Math.floor(Date.now() / 1000),
          )
        : sandboxTarget(req, service, tokens);
    targets.set(req, target);
    req.owner = target.owner;
  };
}

/** The sandbox a request was authenticated for (see authenticator). */
export function targetOf(req: FastifyRequest): SandboxTarget {
  const t = targets.get(req);
  if (!t) throw new ServiceError(ErrorCode.INTERNAL_ERROR, 'E2B route without its authenticator');
  return t;
}

/** A signed file URL (`uploadUrl()` / `downloadUrl()`): the signature names the sandbox by its token. */
export function signedTarget(
  service: SandboxService,
  tokens: AccessTokens,
  q: { path: string; operation: 'read' | 'write'; username?: string; signature: string; expiration?: string },
  nowS: number,
): SandboxTarget {
  if (q.expiration !== undefined && !(Number(q.expiration) >= nowS)) {
    throw new ServiceError(ErrorCode.URL_SIGNATURE_INVALID, 'this signed URL has expired; ask the SDK for a new one');
  }
  for (const { id, owner } of service.owners()) {
    const raw = `${q.path}:${q.operation}:${q.username ?? ''}:${tokens.compute(id, owner)}${q.expiration !== undefined ? `:${q.expiration}` : ''}`;
    const expected = 'v1_' + createHash('sha256').update(raw).digest('base64').replace(/=+$/, '');
    const a = Buffer.from(expected);
    const b = Buffer.from(q.signature);
    if (a.length === b.length && timingSafeEqual(a, b)) return { id, owner };
  }
  throw new ServiceError(ErrorCode.URL_SIGNATURE_INVALID, 'the URL signature is not valid for this path and operation');
}

/** An SDK path inside the sandbox: /home/user is the workspace; relative paths are relative to it. */
export function toSandboxPath(path: string, workspace = '/workspace'): string {
  if (path === HOME || path === `${HOME}/`) return workspace;
  if (path.startsWith(`${HOME}/`)) return workspace + path.slice(HOME.length);
  return path;
}

/** A sandbox path as the SDK expects it (under /home/user). */
export function fromSandboxPath(path: string, workspace = '/workspace'): string {
  if (path === workspace) return HOME;
  if (path.startsWith(`${workspace}/`)) return HOME + path.slice(workspace.length);
  return path;
}

/** E2B's REST error body ({code: status, message}) for any error, and its status. */
export function restError(err: unknown): { status: number; body: { code: number; message: string } } {
  const e = describeError(err);
  return { status: e.status, body: { code: e.status, message: e.message } };
}

/** Connect's error codes by our HTTP status. */
export function connectCode(status: number): string {
  switch (status) {
    case 400:
    case 413:
      return status === 413 ? 'resource_exhausted' : 'invalid_argument';
    case 401:
      return 'unauthenticated';
    case 403:
      return 'permission_denied';
    case 404:
      return 'not_found';
    case 409:
      return 'failed_precondition';
    case 410:
    case 503:
      return 'unavailable';
    case 422:
      return 'invalid_argument';
    case 429:
      return 'resource_exhausted';
    default:
      return 'internal';
  }
}

/** A request that must change: a 400 with what to change. */
export function bad(message: string): ServiceError {
  return new ServiceError(ErrorCode.VALIDATION_FAILED, message);
}

/** A JSON body's fields; no body (or an empty one) is no fields. */
export function objectBody(body: unknown): Record<string, unknown> {
  if (body === undefined || body === null || body === '') return {};
  if (typeof body !== 'object' || Array.isArray(body) || Buffer.isBuffer(body)) throw bad('the body must be a JSON object');
  return body as Record<string, unknown>;
}

/** An object of strings (envVars, metadata, env_vars), or undefined when absent; anything else a 400 naming `field`. */
export function stringMap(value: unknown, field: string): Record<string, string> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== 'object' || Array.isArray(value)) throw bad(`${field} must be an object of strings`);
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    if (typeof v !== 'string') throw bad(`${field}.${k.slice(0, 50)} must be a string`);
    out[k] = v;
  }
  return out;
}
