/**
 * What each API key holds and may hold: live sandboxes (MAX_SANDBOXES in all, DIFY_SANDBOX_RESERVED kept for
 * the Code node, MAX_SANDBOXES_PER_KEY each), calls running or queued (MAX_CALLS_PER_KEY), file_url downloads
 * in progress. Each refusal is a 429 that names its setting; every `take` is paired with a `give`.
 */
import type { Config } from '../config.js';
import { ServiceError, ErrorCode } from '../core/errors.js';

/** Owner of the short-lived sandboxes of Dify's Code node (/v1/sandbox/run): no API key's listing shows them. */
export const CODE_NODE_OWNER = 'dify-sandbox';

/** file_url downloads of one API key at once (each holds up to MAX_FILE_BYTES until it is written). */
const URL_FETCHES_PER_KEY = 4;

/** A count per owner that forgets owners at zero. */
class OwnerCounts {
  private readonly counts = new Map<string, number>();
  total = 0;

  of(owner: string): number {
    return this.counts.get(owner) ?? 0;
  }

  take(owner: string): void {
    this.counts.set(owner, this.of(owner) + 1);
    this.total++;
  }

  give(owner: string): void {
    const left = this.of(owner) - 1;
    if (left > 0) this.counts.set(owner, left);
    else this.counts.delete(owner);
    this.total--;
  }
}

export class Quotas {
  /** Sandboxes being created (queued or starting), per owner. */
  readonly creating = new OwnerCounts();
  /** Calls running or queued, per owner. */
  readonly calls = new OwnerCounts();
  /** file_url downloads in progress, per owner. */
  readonly fetches = new OwnerCounts();

  /** `liveOf(owner)`: the owner's live sandboxes; `live`: all of them. */
  constructor(
    private readonly config: Config,
    private readonly liveOf: (owner: string) => number,
    private readonly live: () => number,
  ) {}

  /** Sandboxes kept for the Code node, out of MAX_SANDBOXES. */
  get reservedForCodeNode(): number {
    return Math.min(this.config.DIFY_SANDBOX_RESERVED, this.config.MAX_SANDBOXES - 1);
  }

  /** Live sandboxes one API key may hold (MAX_SANDBOXES_PER_KEY, or its default: see config.ts). */
  get perKeyLimit(): number {
    if (this.config.MAX_SANDBOXES_PER_KEY > 0) return this.config.MAX_SANDBOXES_PER_KEY;
    const open = this.config.MAX_SANDBOXES - this.reservedForCodeNode;
    return this.config.apiKeys.length >= 2 ? Math.max(1, Math.ceil(open / 2)) : open;
  }

  /** Sandboxes of `owner`, live or being created. */
  private held(owner: string): number {
    return this.liveOf(owner) + this.creating.of(owner);
  }

  /** Refuses (429) a new sandbox for `owner` past any of the live-sandbox limits. */
  checkCreate(owner: string): void {
    const limit = (message: string) => new ServiceError(ErrorCode.SANDBOX_LIMIT_REACHED, message, { headers: { 'retry-after': '5' } });
    const max = this.config.MAX_SANDBOXES;
    const total = this.live() + this.creating.total;
    if (total >= max) throw limit(`${max} sandboxes are live (MAX_SANDBOXES); stop one with /stop_sandbox or retry later`);
    const reserved = this.reservedForCodeNode;
    if (owner === CODE_NODE_OWNER) {
      // The Code node has its reserved share plus what one key may hold: it cannot take every sandbox either.
      if (this.held(owner) >= reserved + this.perKeyLimit)
        throw limit(
          `the Code node holds ${reserved + this.perKeyLimit} sandboxes, its share (DIFY_SANDBOX_RESERVED + MAX_SANDBOXES_PER_KEY); retry later`,
        );
      return;
    }
    if (total - this.held(CODE_NODE_OWNER) >= max - reserved) {
      throw limit(
        `${max - reserved} sandboxes are live, all that is open to API keys (MAX_SANDBOXES=${max}, of which DIFY_SANDBOX_RESERVED=${reserved} are kept for the Code node); stop one with /stop_sandbox or retry later`,
      );
    }
    const mine = this.held(owner);
    if (mine >= this.perKeyLimit) {
      throw limit(
        `this API key holds ${mine} live sandboxes, its limit (MAX_SANDBOXES_PER_KEY=${this.perKeyLimit}); stop one with /stop_sandbox or retry later`,
      );
    }
  }

  /** Takes a call slot of `owner` (429 past MAX_CALLS_PER_KEY); give it back with `calls.give`. */
  takeCall(owner: string): void {
    const calls = this.calls.of(owner);
    if (calls >= this.config.MAX_CALLS_PER_KEY) {
      throw new ServiceError(
        ErrorCode.CALL_LIMIT_REACHED,
        `this API key has ${calls} calls running or waiting, its limit (MAX_CALLS_PER_KEY); retry when they are done`,
        { headers: { 'retry-after': '1' } },
      );
    }
    this.calls.take(owner);
  }

  /** Takes a file_url download slot of `owner` (429 past URL_FETCHES_PER_KEY); give it back with `fetches.give`. */
  takeFetch(owner: string): void {
    const fetching = this.fetches.of(owner);
    if (fetching >= URL_FETCHES_PER_KEY) {
      throw new ServiceError(
        ErrorCode.CALL_LIMIT_REACHED,
        `this API key has ${fetching} file_url downloads in progress, its limit; retry when they are done`,
        { headers: { 'retry-after': '2' } },
      );
    }
    this.fetches.take(owner);
  }
}
