/**
 * A warm pool in front of any backend: `size` sandboxes started ahead (their Python kernel running and,
 * optionally, modules such as numpy, pandas and matplotlib imported), handed out by create() and refilled
 * in the background. A pooled sandbox has never run anyone's code: it is handed out once, and only to a
 * create that asks for nothing special (no extra environment); a second pool of `networkSize` sandboxes
 * with network serves creates that ask for network. Other creates go straight to the backend.
 */
import type { BackendStatus, CreateSandboxOptions, Sandbox, SandboxBackend } from './types.js';

export interface PoolOptions {
  /** How many sandboxes to keep ready. */
  readonly size: number;
  /** How many sandboxes with network (filtered outbound HTTP) to keep ready besides (Dify's Code node asks for it). */
  readonly networkSize?: number;
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

/** One kind of pooled sandbox: plain, or with network. */
interface Lane {
  readonly size: number;
  readonly network: boolean;
  readonly ready: Sandbox[];
  filling: number;
}

export function createPooledBackend(inner: SandboxBackend, options: PoolOptions): SandboxBackend {
  const lanes: Lane[] = [
    { size: options.size, network: false, ready: [], filling: 0 },
    { size: options.networkSize ?? 0, network: true, ready: [], filling: 0 },
  ];
  let made = 0;
  let closed = false;
  let retryTimer: NodeJS.Timeout | null = null;

  const refill = () => {
    for (const lane of lanes) {
      while (!closed && inner.status().ready && lane.ready.length + lane.filling < lane.size) {
        lane.filling++;
        inner
          .create({ id: `pool-${++made}`, env: {}, warm: { preload: options.preload }, ...(lane.network ? { network: true } : {}) })
          .then(
            (sandbox) => {
              if (closed) return sandbox.destroy();
              sandbox.onExit(() => {
                const i = lane.ready.indexOf(sandbox);
                if (i >= 0) lane.ready.splice(i, 1);
                refill();
              });
              lane.ready.push(sandbox);
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
            lane.filling--;
          });
      }
    }
  };

  /** The lane that can serve a create: one that asks for nothing but (maybe) network. */
  const laneOf = (opts: CreateSandboxOptions) =>
    Object.keys(opts.env).length === 0 && !opts.warm ? lanes.find((l) => l.network === (opts.network === true)) : undefined;

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
      return {
        ...inner.status(),
        pool: {
          target: options.size,
          ready: lanes[0]!.ready.length,
          preload: [...options.preload],
          ...(lanes[1]!.size > 0 ? { network: { target: lanes[1]!.size, ready: lanes[1]!.ready.length } } : {}),
        },
      };
    },
    async create(opts: CreateSandboxOptions): Promise<Sandbox> {
      const sandbox = laneOf(opts)?.ready.shift();
      if (sandbox) {
        setTimeout(refill, REFILL_DELAY_MS).unref();
        return sandbox;
      }
      refill();
      return inner.create(opts);
    },
    async close(): Promise<void> {
      closed = true;
      if (retryTimer) clearTimeout(retryTimer);
      await Promise.all(lanes.flatMap((l) => l.ready.splice(0)).map((s) => s.destroy()));
      await inner.close();
    },
  };
}
