/**
 * The wire form of run results, shared by the plain and the streamed routes: artifact and image URLs
 * (absolute, signed), the combined `output`, and the `markdown` an Answer node can show as it is.
 */
import { posix } from 'node:path';
import type { ArtifactFile, CodeError, RichResult, RunCodeResult, RunCommandResult } from '../backends/types.js';
import type { CallUsage, Lifecycle, RunOutcome, SandboxHandle } from '../service/sandbox-service.js';
import type { Caller } from './caller.js';
import { mimeTypeOf } from '../service/mime.js';

/** Builds absolute signed URLs for files of one sandbox. */
export interface Linker {
  (path: string): string;
}

/** Signed links, for `caller`, to files of `sandbox`. */
export function linksOf(caller: Caller, sandbox: SandboxHandle): Linker {
  return (path) => caller.service.links.url(caller.baseUrl, sandbox.id, sandbox.workspace, path);
}

export function fileToWire(f: ArtifactFile, link: Linker) {
  const name = posix.basename(f.path);
  return { path: f.path, name, size: f.size, mime_type: mimeTypeOf(name), url: link(f.path) };
}

function resultToWire(r: RichResult, link: Linker) {
  return r.path ? { type: r.type, data: { ...r.data }, path: r.path, url: link(r.path) } : { type: r.type, data: { ...r.data } };
}

const MARKDOWN_TEXT_MAX = 20_000;
const fence = (text: string) => {
  const shown =
    text.length > MARKDOWN_TEXT_MAX ? `${text.slice(0, MARKDOWN_TEXT_MAX)}\n… (${text.length - MARKDOWN_TEXT_MAX} more characters)` : text;
  const ticks = shown.includes('```') ? '~~~~' : '```';
  return `${ticks}text\n${shown.replace(/\n$/, '')}\n${ticks}`;
};

/** Markdown for an Answer node: output as a code block, the error, rich values, images and files. */
export function markdownOf(
  output: string,
  error: CodeError | null,
  results: ReturnType<typeof resultToWire>[],
  files: ReturnType<typeof fileToWire>[],
): string {
  const parts: string[] = [];
  if (output.trim()) parts.push(fence(output));
  const shownImages = new Set<string>();
  for (const r of results) {
    if (r.url && 'path' in r) {
      shownImages.add(r.path);
      parts.push(`![${posix.basename(r.path)}](${r.url})`);
    } else if (r.data['text/markdown']) {
      parts.push(r.data['text/markdown']);
    } else if (r.data['text/plain'] !== undefined) {
      parts.push(fence(r.data['text/plain']));
    }
  }
  if (error) parts.push(`**${error.name}**: ${error.value}${error.traceback ? `\n\n${fence(error.traceback)}` : ''}`);
  const images = files.filter((f) => f.mime_type.startsWith('image/') && !shownImages.has(f.path));
  const others = files.filter((f) => !f.mime_type.startsWith('image/'));
  for (const f of images) parts.push(`![${f.name}](${f.url})`);
  if (others.length > 0) parts.push(others.map((f) => `- [${f.name}](${f.url}) (${f.size} bytes)`).join('\n'));
  return parts.join('\n\n');
}

/** Appends `text` on a line of its own. */
const appendLine = (base: string, text: string) => `${base}${base && !base.endsWith('\n') ? '\n' : ''}${text}`;

/** A result's notice, and what the sandbox's lifecycle adds to it (a resume, a replacement). */
function lifecycleFields(notice: string | undefined, lifecycle: Lifecycle | undefined) {
  const notices = [lifecycle?.notice, notice].filter(Boolean);
  return {
    notice: notices.length > 0 ? notices.join('\n') : null,
    previous_sandbox_id: lifecycle?.previousSandboxId ?? null,
  };
}

/** A call's usage on the wire, when the service measured it. */
export function usageToWire(usage: CallUsage | undefined) {
  return usage ? { usage: { cpu_ms: usage.cpuMs, memory_bytes: usage.memoryBytes, memory_peak_bytes: usage.memoryPeakBytes } } : {};
}

export function runCodeToWire(outcome: RunOutcome, link: Linker) {
  const { sandbox, runtime, lifecycle } = outcome;
  const preserved = lifecycle?.statePreserved ?? true;
  const files = outcome.result.files.map((f) => fileToWire(f, link));
  if (runtime === 'shell') {
    const r: RunCommandResult = outcome.result;
    return {
      sandbox_id: sandbox.id,
      language: runtime,
      output: r.output,
      stdout: r.stdout,
      stderr: r.stderr,
      error: r.error,
      results: [],
      exit_code: r.exitCode,
      timed_out: r.timedOut,
      state_preserved: preserved,
      output_truncated: r.outputTruncated,
      files,
      files_truncated: r.filesTruncated,
      ...lifecycleFields(r.notice, lifecycle),
      markdown: markdownOf(r.output, r.error, [], files),
      duration_ms: r.durationMs,
      ...usageToWire(outcome.usage),
    };
  }
  const r: RunCodeResult = outcome.result;
  const results = r.results.map((x) => resultToWire(x, link));
  const shown = r.results.find((x) => x.type === 'execute_result')?.data['text/plain'];
  let output = shown === undefined ? r.output : appendLine(r.output, `${shown}\n`);
  if (r.error) output = appendLine(output, r.error.traceback || `${r.error.name}: ${r.error.value}\n`);
  return {
    sandbox_id: sandbox.id,
    language: runtime,
    output,
    stdout: r.stdout,
    stderr: r.stderr,
    error: r.error,
    results,
    exit_code: null,
    timed_out: r.timedOut,
    state_preserved: r.statePreserved && preserved,
    output_truncated: r.outputTruncated,
    files,
    files_truncated: r.filesTruncated,
    ...lifecycleFields(r.notice, lifecycle),
    markdown: markdownOf(r.output, r.error, results, files),
    duration_ms: r.durationMs,
    ...usageToWire(outcome.usage),
  };
}

export function commandToWire(sandboxId: string, r: RunCommandResult, link: Linker, lifecycle?: Lifecycle, usage?: CallUsage) {
  const files = r.files.map((f) => fileToWire(f, link));
  return {
    sandbox_id: sandboxId,
    output: r.output,
    stdout: r.stdout,
    stderr: r.stderr,
    exit_code: r.exitCode,
    error: r.error,
    timed_out: r.timedOut,
    output_truncated: r.outputTruncated,
    files,
    files_truncated: r.filesTruncated,
    ...lifecycleFields(r.notice, lifecycle),
    duration_ms: r.durationMs,
    ...usageToWire(usage),
  };
}
