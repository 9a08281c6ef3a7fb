/**
 * The reply budget: an answer's text (stdout, stderr and the combined output, as JSON) stays within
 * REPLY_MAX_BYTES, so that Dify's HTTP node (which refuses text answers over 1 MiB) can read it. Past the
 * budget the whole output is saved to a workspace file (under outputs/, listed in `files` with its signed URL)
 * and each text is cut, saying where the rest is; `output_truncated` is set.
 */
import { randomBytes } from 'node:crypto';
import type { ArtifactFile } from '../backends/types.js';
import type { SandboxHandle } from '../service/sandbox-service.js';
import type { Caller } from './caller.js';

interface Texts {
  readonly stdout: string;
  readonly stderr: string;
  readonly output: string;
  readonly outputTruncated: boolean;
  readonly files: readonly ArtifactFile[];
}

/** Bytes a string takes inside a JSON answer. */
const jsonBytes = (s: string) => Buffer.byteLength(JSON.stringify(s)) - 2;

/** The result, within `budget` bytes of JSON text; unchanged when it fits (or the budget is 0: off). */
export async function fitReply<R extends Texts>(caller: Caller, sandbox: SandboxHandle, r: R, budget: number): Promise<R> {
  const size = jsonBytes(r.stdout) + jsonBytes(r.stderr) + jsonBytes(r.output);
  if (budget <= 0 || size <= budget) return r;
  const name = `outputs/output-${new Date().toISOString().replace(/[:.]/g, '-')}-${randomBytes(3).toString('hex')}.txt`;
  let saved: { path: string; size: number } | null = null;
  try {
    saved = await caller.service.files.write(caller.owner, { sandboxId: sandbox.id }, name, Buffer.from(r.output, 'utf8'));
  } catch {
    saved = null; // a full workspace: the answer is still cut, and says the rest is lost
  }
  const where = saved ? `the whole output is in ${saved.path}` : 'the rest could not be saved (the workspace is full)';
  const cut = (text: string, share: number): string => {
    const escaped = jsonBytes(text);
    if (escaped <= share) return text;
    // Characters that JSON escapes take more room: keep proportionally fewer bytes of the text.
    const keep = Math.floor(share * (Buffer.byteLength(text) / escaped));
    const head = Buffer.from(text, 'utf8')
      .subarray(0, keep)
      .toString('utf8')
      .replace(/\uFFFD$/, '');
    return `${head}\n… [${Buffer.byteLength(text) - Buffer.byteLength(head)} more bytes; ${where}]\n`;
  };
  return {
    ...r,
    output: cut(r.output, Math.floor(budget / 2)),
    stdout: cut(r.stdout, Math.floor(budget / 4)),
    stderr: cut(r.stderr, Math.floor(budget / 4)),
    outputTruncated: true,
    files: saved ? [...r.files, { path: saved.path, size: saved.size }] : r.files,
  };
}
