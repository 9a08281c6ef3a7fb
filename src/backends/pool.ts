/**
 * A warm pool in front of any backend: `size` sandboxes started ahead (their Python kernel running and,
 * optionally, modules such as numpy, pandas and matplotlib imported), handed out by create() and refilled
 * in the background. A pooled sandbox has never run anyone's code: it is handed out once, and only to a
 * create that asks for nothing special (no extra environment, no network); other creates go straight to the
 * backend.
 */
import type { BackendStatus, CreateSandboxOptions, Sandbox, SandboxBackend } from './types.js';

export interface PoolOptions {
  /** How many sandboxes to keep ready. */
  readonly size: number;
  /** Modules the pooled sandboxes import before they are handed out. */
  readonly preload: readonly string[];
  readonly log?: (level: 'info' | 'warn' | 'error', message: string) => void;
}

const RETRY_MS = 2_000;
/**
 * A hand-over is usually followed at once by the first call into the sandbox; starting the replacement
 * right then would make that call compete with a sandbox start for the CPU (spawning is also synchronous
 * work on the event loop). So refills wait a moment.
 */
const REFILL_DELAY_MS = 150;

export function createPooledBackend(inner: SandboxBackend, options: PoolOptions): SandboxBackend {
  const ready: Sandbox[] = [];
  let filling = 0;
  let made = 0;
  let closed = false;
  let retryTimer: NodeJS.Timeout | null = null;

  const refill = () => {
    while (!closed && inner.status().ready && ready.length + filling < options.size) {
      filling++;
      inner
        .create({ id: `pool-${++made}`, env: {}, warm: { preload: options.preload } })
        .then(
          (sandbox) => {
            if (closed) return sandbox.destroy();
            sandbox.onExit(() => {
              const i = ready.indexOf(sandbox);
              if (i >= 0) ready.splice(i, 1);
              refill();
            });
            ready.push(sandbox);
          },
          (err: Error) => {
            options.log?.('warn', `warm pool: could not start a sandbox: ${err.message}`);
            retryTimer ??= setTimeout(() => {
              retryTimer = null;
              refill();
            }, RETRY_MS);
            retryTimer.unref();
          },
        )
        .finally(() => {
          filling--;
        });
    }
  };

  const plain = (opts: CreateSandboxOptions) => !opts.network && Object.keys(opts.env).length === 0 && !opts.warm;

  return {
    name: inner.name,
    canPause: inner.canPause,
    adopt: inner.adopt?.bind(inner),
    forgetUnadopted: inner.forgetUnadopted?.bind(inner),
    async init(): Promise<BackendStatus> {
      const status = await inner.init();
      refill();
      return status;
    },
    status(): BackendStatus {
      return { ...inner.status(), pool: { target: options.size, ready: ready.length, preload: [...options.preload] } };
    },
    async create(opts: CreateSandboxOptions): Promise<Sandbox> {
      if (plain(opts)) {
        const sandbox = ready.shift();
        if (sandbox) {
          setTimeout(refill, REFILL_DELAY_MS).unref();
          return sandbox;
        }
      }
      refill();
      return inner.create(opts);
    },
    async close(): Promise<void> {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      await Promise.all(ready.splice(0).map((s) => s.destroy()));
      await inner.close();
    },
  };
}
