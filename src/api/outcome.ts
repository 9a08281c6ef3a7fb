/** What came of a call's code, in the few words the metrics count it by (ok, error, timeout, each limit). */
const LIMITS: Readonly<Record<string, string>> = {
  MemoryLimitExceeded: 'memory_limit',
  ProcessLimitExceeded: 'process_limit',
  CpuTimeLimitExceeded: 'cpu_limit',
  OutputLimitExceeded: 'output_limit',
  DiskQuotaExceeded: 'disk_limit',
  KernelDied: 'kernel_died',
};

/** A run result's outcome, as the metrics count it. */
export function outcomeOf(error: { name: string } | null, timedOut: boolean): string {
  if (timedOut) return 'timeout';
  if (!error) return 'ok';
  return Object.hasOwn(LIMITS, error.name) ? LIMITS[error.name]! : 'error';
}
