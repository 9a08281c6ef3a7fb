/**
 * The in-sandbox agent's exec reply, shaped into a RunCodeResult. Every backend that runs the agent (local
 * over its pipes, AgentCube through PicoD) gets the same reply; it comes from inside the sandbox, so fields
 * are re-typed here and never trusted as typed.
 */
import type { ArtifactFile, CallUsage, CodeError, KernelState, RichResult, RunCodeResult } from '../types.js';

export function toCodeError(v: unknown): CodeError | null {
  if (typeof v !== 'object' || v === null) return null;
  const e = v as Record<string, unknown>;
  return { name: String(e.name ?? 'Error'), value: String(e.value ?? ''), traceback: String(e.traceback ?? '') };
}

function toResults(v: unknown): RichResult[] {
  if (!Array.isArray(v)) return [];
  return v.flatMap((r): RichResult[] => {
    if (typeof r !== 'object' || r === null || typeof r.data !== 'object' || r.data === null) return [];
    const data = Object.fromEntries(Object.entries(r.data as Record<string, unknown>).map(([k, x]) => [k, String(x)]));
    const type = r.type === 'display_data' ? 'display_data' : 'execute_result';
    return [typeof r.path === 'string' ? { type, data, path: r.path } : { type, data }];
  });
}

/** Files the call created or changed, from a reply of exec or shell. */
export function toArtifacts(h: Record<string, unknown>): { files: ArtifactFile[]; filesTruncated: boolean } {
  const files = Array.isArray(h.files) ? h.files : [];
  return {
    files: files.filter((f) => typeof f?.path === 'string').map((f) => ({ path: String(f.path), size: Number(f.size) || 0 })),
    filesTruncated: h.files_truncated === true,
  };
}

export function toRunCodeResult(h: Record<string, unknown>): RunCodeResult {
  // The kernel says so when no checkpoint could be kept after the previous call (ciw_checkpoint.py).
  const notice = [h.notice, h.checkpoint_warning]
    .filter((n): n is string => typeof n === 'string' && n !== '')
    .map((n) => n.slice(0, 500))
    .join('; ');
  return {
    stdout: String(h.stdout ?? ''),
    stderr: String(h.stderr ?? ''),
    output: String(h.output ?? ''),
    outputTruncated: h.output_truncated === true,
    results: toResults(h.results),
    error: toCodeError(h.error),
    timedOut: h.timed_out === true,
    statePreserved: h.state_preserved !== false,
    durationMs: Number(h.duration_ms) || 0,
    ...(notice ? { notice } : {}),
    ...(Number.isSafeInteger(h.execution_count) ? { executionCount: Number(h.execution_count) } : {}),
    ...usageOf(h.usage),
    ...toArtifacts(h),
  };
}

/** A kernel's state report (ciw_state.py, the JavaScript kernel), re-typed; null when there was none. */
export function toKernelState(language: 'python' | 'javascript', report: unknown): KernelState | null {
  if (typeof report !== 'object' || report === null) return null;
  const r = report as Record<string, unknown>;
  const names = Array.isArray(r.saved) ? r.saved : Array.isArray(r.restored) ? r.restored : [];
  const skipped = Array.isArray(r.skipped) ? r.skipped : [];
  return {
    language,
    names: names.map(String).slice(0, MAX_STATE_NAMES),
    skipped: skipped.slice(0, MAX_STATE_NAMES).map((s) => {
      const o = objectOf(s);
      return { name: String(o.name ?? '?').slice(0, 200), reason: String(o.reason ?? '').slice(0, 300) };
    }),
    ...(typeof r.error === 'string' ? { error: r.error.slice(0, 500) } : {}),
  };
}

/** Names one kernel's report may list (it comes from inside the sandbox). */
const MAX_STATE_NAMES = 1000;

/** A call's usage as the agent reports it, re-typed (it comes from inside the sandbox). */
export function usageOf(u: unknown): { usage?: CallUsage } {
  if (typeof u !== 'object' || u === null) return {};
  const o = u as Record<string, unknown>;
  const n = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
  return { usage: { cpuMs: n(o.cpu_ms), memoryBytes: n(o.memory_bytes), memoryPeakBytes: n(o.memory_peak_bytes) } };
}

/** A field of a reply that should hold an object: that object, or an empty one (replies are untrusted). */
export function objectOf(v: unknown): Record<string, unknown> {
  return typeof v === 'object' && v !== null ? (v as Record<string, unknown>) : {};
}
