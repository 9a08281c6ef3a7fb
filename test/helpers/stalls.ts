/**
 * The security suite's event-loop watch: how long the service's event loop was held at worst while attacks
 * ran. The service runs in the test's own process (app.inject or a server on 127.0.0.1), so a stall of the
 * service is a stall here. Reported, not asserted: timing belongs to benchmarks, and these machines are shared.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

export interface StallWatch {
  /** Stops watching and prints the worst stall seen; returns it in milliseconds. */
  report(): number;
}

export function watchStalls(label: string): StallWatch {
  const histogram: IntervalHistogram = monitorEventLoopDelay({ resolution: 5 });
  histogram.enable();
  return {
    report() {
      histogram.disable();
      const worstMs = histogram.max / 1e6;
      console.log(`[security] ${label}: worst event-loop stall ${worstMs.toFixed(1)} ms (p99 ${(histogram.percentile(99) / 1e6).toFixed(1)} ms)`);
      return worstMs;
    },
  };
}
