/**
 * The security suite's event-loop watch: how long the service's event loop was held at worst. The service
 * runs in the test's own process (app.inject or a server on 127.0.0.1), so a stall of the service is a
 * stall here — and so is the test's own work (building a 5 MB payload, starting a backend), which is why
 * the figure that matters is measured only while refused requests are in flight (`refusing`). Reported, not
 * asserted: timing belongs to benchmarks, and these machines are shared.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';

export interface StallWatch {
  /** Runs `fn` (requests the service must refuse) and keeps the worst stall seen while it ran. */
  refusing<T>(fn: () => Promise<T>): Promise<T>;
  /** Stops watching and prints the worst stalls seen; returns the one while refusing, in milliseconds. */
  report(): number;
}

export function watchStalls(label: string): StallWatch {
  const whole = monitorEventLoopDelay({ resolution: 5 });
  whole.enable();
  let worstRefusingMs = 0;
  return {
    async refusing(fn) {
      const during = monitorEventLoopDelay({ resolution: 1 });
      during.enable();
      const started = performance.now();
      try {
        return await fn();
      } finally {
        during.disable();
        // No sample means the loop never turned while the request ran (app.inject can serve one without a
        // timer tick): then the whole request was one stall.
        const ms = during.count > 0 ? during.max / 1e6 : performance.now() - started;
        worstRefusingMs = Math.max(worstRefusingMs, ms);
        if (process.env.CIW_STALL_TRACE && ms > 50) console.log(`[stall] ${ms.toFixed(1)} ms`, new Error().stack?.split('\n')[3]);
      }
    },
    report() {
      whole.disable();
      console.log(
        `[security] ${label}: worst event-loop stall while requests were refused ${worstRefusingMs.toFixed(1)} ms; ` +
          `over the whole file, test set-up included, ${(whole.max / 1e6).toFixed(1)} ms`,
      );
      return worstRefusingMs;
    },
  };
}
