/**
 * A call's usage: what the sandbox reported (the interpreter's CPU time and memory, or a command's) — free, it
 * comes with the reply. When the call failed (a limit, a dead interpreter), the cgroup's memory counters say
 * more, and are read then.
 */
import type { CallUsage, Sandbox } from '../backends/types.js';

export async function measured<T extends { usage?: CallUsage; error: unknown }>(
  sandbox: Sandbox,
  call: () => Promise<T>,
): Promise<{ result: T; usage: CallUsage }> {
  const result = await call();
  const reported = result.usage;
  if (reported && !result.error) return { result, usage: reported };
  const seen = sandbox.usageNow?.();
  return {
    result,
    usage: {
      cpuMs: reported?.cpuMs ?? null,
      memoryBytes: seen?.memoryBytes ?? reported?.memoryBytes ?? null,
      memoryPeakBytes: seen?.memoryPeakBytes ?? reported?.memoryPeakBytes ?? null,
    },
  };
}
