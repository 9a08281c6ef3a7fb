/** A call's usage: the sandbox's CPU time across the call, and its memory after it (now and at its peak). */
import type { Sandbox } from '../backends/types.js';
import type { CallUsage } from './types.js';

export async function measured<T>(sandbox: Sandbox, call: () => Promise<T>): Promise<{ result: T; usage: CallUsage }> {
  const before = sandbox.cpuSecondsNow?.() ?? null;
  const result = await call();
  const after = sandbox.cpuSecondsNow?.() ?? null;
  return {
    result,
    usage: {
      cpuMs: before !== null && after !== null ? Math.max(0, Math.round((after - before) * 1000)) : null,
      memoryBytes: sandbox.memoryBytes?.() ?? null,
      memoryPeakBytes: sandbox.memoryPeakBytes?.() ?? null,
    },
  };
}
