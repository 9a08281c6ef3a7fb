/**
 * The rules of a sandbox's end, applied every second: past its lifetime it ends, even in a call; idle past its
 * timeout it is paused (or ends where pausing is off); past its CPU budget it ends; paused past
 * PAUSED_RETENTION_S it is deleted. Each end names what happened and when, for whoever asks next.
 */
import type { Config } from '../config.js';
import type { SandboxRecord } from './types.js';

export type EndKind = 'stopped' | 'expired' | 'lost';

export interface ReapContext {
  readonly records: readonly SandboxRecord[];
  readonly now: number;
  readonly config: Config;
  /** Whether idle sandboxes are paused (else they end). */
  readonly pausing: boolean;
  end(record: SandboxRecord, kind: EndKind, message: string): Promise<void>;
  pauseIdle(record: SandboxRecord): Promise<void>;
  /** Forgets ended sandboxes whose retention is over. */
  sweep(now: number): Promise<void>;
  log(level: 'info' | 'warn' | 'error', message: string): void;
}

export async function reapOnce(c: ReapContext): Promise<void> {
  const { now, config } = c;
  const at = (ms: number) => new Date(ms).toISOString();
  const cpuLimitS = config.SANDBOX_CPU_LIMIT_S;
  const work: Promise<void>[] = [c.sweep(now).catch((err) => c.log('warn', `STATE_DIR sweep: ${(err as Error).message}`))];
  for (const r of c.records) {
    const lifetimeEnd = r.createdAtMs + r.maxLifetimeMs;
    if (lifetimeEnd <= now) {
      work.push(
        c.end(
          r,
          'expired',
          `sandbox '${r.id}' expired at ${at(lifetimeEnd)} (it reached its maximum lifetime of ${r.maxLifetimeMs / 1000} s); create a new one`,
        ),
      );
      continue;
    }
    if (r.sandbox === null) {
      const retentionEnd = (r.pausedAtMs ?? now) + config.PAUSED_RETENTION_S * 1000;
      if (retentionEnd <= now) {
        work.push(
          c.end(
            r,
            'expired',
            `sandbox '${r.id}' was paused at ${at(r.pausedAtMs ?? now)} and deleted at ${at(retentionEnd)}, after PAUSED_RETENTION_S=${config.PAUSED_RETENTION_S} s; create a new one`,
          ),
        );
      }
      continue;
    }
    const idleEnd = r.lastUsedAtMs + r.idleTimeoutMs;
    if (r.busy === 0 && idleEnd <= now) {
      const idle = `was idle for ${r.idleTimeoutMs / 1000} s`;
      if (!c.pausing) {
        work.push(c.end(r, 'expired', `sandbox '${r.id}' expired at ${at(idleEnd)} (it ${idle}); create a new one`));
        continue;
      }
      work.push(
        c
          .pauseIdle(r)
          .catch((err) =>
            c.end(
              r,
              'expired',
              `sandbox '${r.id}' ${idle} and could not be paused (${(err as Error).message}), so it was stopped at ${at(now)}; its files and variables are lost`,
            ),
          ),
      );
      continue;
    }
    const used = cpuLimitS > 0 ? (r.sandbox.cpuSeconds?.() ?? null) : null;
    if (used !== null && used > cpuLimitS) {
      work.push(
        c.end(
          r,
          'expired',
          `sandbox '${r.id}' was stopped at ${at(now)}: it used ${Math.round(used)} CPU seconds, more than SANDBOX_CPU_LIMIT_S=${cpuLimitS}; create a new one`,
        ),
      );
    }
  }
  await Promise.all(work);
}
