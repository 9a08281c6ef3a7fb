/**
 * The MCP tools: a thin layer over the same SandboxService, schemas and error codes as the HTTP routes.
 * Sandbox state is keyed by an explicit sandbox_id (or conversation_id), never by the MCP session — Dify
 * opens a fresh session for every call. Input schemas are the HTTP body schemas (TypeBox, i.e. JSON
 * Schema) minus HTTP-only options.
 */
import { posix } from 'node:path';
import { Type, type TSchema } from 'typebox';
import { Value } from 'typebox/value';
import { ServiceError, describeError } from '../core/errors.js';
import { RunCodeBody, ExecuteCommandBody, RunCodeResponse, ExecuteCommandResponse } from '../api/schemas/execution.js';
import { CreateSandboxBody, SandboxRefBody } from '../api/schemas/sandboxes.js';
import { WriteFileBody, UploadFileBody, ListFilesBody, DownloadFileBody } from '../api/schemas/files.js';
import { commandToWire, runCodeToWire } from '../api/run-presenters.js';
import { forkedToWire, infoToWire, pausedToWire } from '../api/wire.js';
import { mimeTypeOf } from '../service/mime.js';
import { decodeContent } from '../api/file-input.js';
import * as fileOps from '../api/file-operations.js';
import * as ops from '../api/sandbox-operations.js';
import type { StoredFile } from '../api/file-operations.js';
import { type Content, type Tool, type ToolContext, type ToolResult, caller, ref, text } from './tool.js';
import { PROCESS_TOOLS } from './process-tools.js';
import { CHECKPOINT_TOOLS } from './checkpoint-tools.js';

export type { ToolContext, ToolResult } from './tool.js';
import { listingToWire, storedToWire } from '../api/file-presenters.js';

const MAX_IMAGES = 4;
const MAX_IMAGE_BYTES = 2 * 1024 * 1024;
const MAX_TEXT_FILE_BYTES = 256 * 1024;

/** The answer of a tool that stored a file, as /write_file answers. */
const stored = (verb: string, w: StoredFile): ToolResult => ({
  content: [{ type: 'text', text: `${verb} ${w.size} bytes at ${w.path}` }],
  structuredContent: storedToWire(w),
});

/** Output, error and values as text a model reads easily. */
function runText(r: {
  output: string;
  error: { name: string; value: string } | null;
  exit_code?: number | null;
  timed_out: boolean;
}): string {
  const parts: string[] = [];
  parts.push(r.output.trim() ? r.output.replace(/\n$/, '') : '(no output)');
  if (r.error) parts.push(`${r.error.name}: ${r.error.value}`);
  if (typeof r.exit_code === 'number') parts.push(`exit code ${r.exit_code}`);
  return parts.join('\n');
}

/** Images as ImageContent (Dify turns them into files), other files as links with their signed URLs. */
async function artifactContent(
  ctx: ToolContext,
  sandboxId: string,
  files: Array<{ path: string; name: string; mime_type: string; url: string; size: number }>,
  inlined: Set<string>,
): Promise<Content[]> {
  const out: Content[] = [];
  let images = 0;
  for (const f of files) {
    if (inlined.has(f.path)) continue;
    if (f.mime_type.startsWith('image/') && f.mime_type !== 'image/svg+xml' && images < MAX_IMAGES && f.size <= MAX_IMAGE_BYTES) {
      const read = await fileOps.readFile(caller(ctx), { sandboxId }, f.path, MAX_IMAGE_BYTES).catch((err: unknown) => {
        if (err instanceof ServiceError && err.code === 'FILE_TOO_LARGE') return null; // it grew since it was listed
        throw err;
      });
      if (read) {
        out.push({ type: 'image', data: read.data.toString('base64'), mimeType: f.mime_type });
        images++;
        continue;
      }
    }
    out.push({ type: 'resource_link', uri: f.url, name: f.name, mimeType: f.mime_type, description: `${f.path} (${f.size} bytes)` });
  }
  return out;
}

// Object-valued options (env) stay HTTP-only: tool UIs such as Dify's map parameters to flat fields.
const CreateInput = Type.Omit(CreateSandboxBody, ['env']);
const createSandbox: Tool<typeof CreateInput> = {
  name: 'create_sandbox',
  title: 'Create a sandbox',
  description:
    'Starts an isolated sandbox with a stateful Python (and JavaScript) interpreter, a shell and a /workspace directory. ' +
    "Returns its sandbox_id; pass it to the other tools. With conversation_id, returns that conversation's sandbox if one is live. " +
    'Optional: network (HTTP(S) to public addresses), idle_timeout_seconds.',
  inputSchema: CreateInput,
  async run(a, ctx) {
    const { info, reused } = await ops.createSandbox(caller(ctx), {
      conversationId: a.conversation_id,
      idleTimeoutS: a.idle_timeout_seconds,
      maxLifetimeS: a.max_lifetime_seconds,
      network: a.network,
    });
    const wire = { sandbox_id: info.id, info: infoToWire(info), reused };
    return { content: [text(`sandbox_id: ${info.id}${reused ? ' (reused)' : ''}`)], structuredContent: wire };
  },
};

const RunCodeInput = Type.Omit(RunCodeBody, ['stream', 'inline_images', 'env']);
const runCode: Tool<typeof RunCodeInput> = {
  name: 'run_code',
  title: 'Run code',
  description:
    'Runs code in a sandbox and returns its output. Python (default) and JavaScript keep variables, imports and functions ' +
    'between calls, like a notebook; language "bash" runs a shell command line. The value of a last bare expression is shown; ' +
    'matplotlib figures come back as images, other files the code writes as links. Give sandbox_id (from create_sandbox) or a ' +
    'conversation_id (a sandbox is created on first use). timeout is in seconds (default 50).',
  inputSchema: RunCodeInput,
  outputSchema: RunCodeResponse,
  async run(a, ctx) {
    const { outcome, link } = await ops.runCode(
      caller(ctx),
      ref(a),
      {
        code: a.code,
        language: a.language,
        timeoutS: a.timeout,
        inlineImages: true,
        ...(a.context_id ? { context: a.context_id } : {}),
      },
      ctx.config.REPLY_MAX_BYTES,
    );
    const wire = runCodeToWire(outcome, link);
    const content: Content[] = [text(runText(wire))];
    const inlined = new Set<string>();
    for (const r of wire.results) {
      const png = r.data['image/png'];
      if (png && 'path' in r && r.path) {
        content.push({ type: 'image', data: png, mimeType: 'image/png' });
        inlined.add(r.path);
      } else if (r.data['text/markdown'] && r.type === 'execute_result') {
        content.push(text(r.data['text/markdown']));
      }
      // Images went out as images: keep the structured copy light.
      for (const mime of ['image/png', 'image/jpeg']) delete (r.data as Record<string, string>)[mime];
    }
    content.push(...(await artifactContent(ctx, wire.sandbox_id, wire.files, inlined)));
    return { content, structuredContent: wire, isError: wire.error !== null };
  },
};

const CommandInput = Type.Omit(ExecuteCommandBody, ['stream', 'env']);
const runCommand: Tool<typeof CommandInput> = {
  name: 'run_command',
  title: 'Run a shell command',
  description:
    "Runs a command line with bash in the sandbox's /workspace (pipes, &&, redirects work) and returns stdout, stderr and the " +
    'exit code. Files are shared with run_code. timeout is in seconds (default 50).',
  inputSchema: CommandInput,
  outputSchema: ExecuteCommandResponse,
  async run(a, ctx) {
    const { sandboxId, result, link, lifecycle, usage } = await ops.runCommand(
      caller(ctx),
      ref(a),
      {
        command: a.command,
        timeoutS: a.timeout,
        cwd: a.cwd,
      },
      ctx.config.REPLY_MAX_BYTES,
    );
    const wire = commandToWire(sandboxId, result, link, lifecycle, usage);
    const content = [text(runText(wire)), ...(await artifactContent(ctx, sandboxId, wire.files, new Set()))];
    return { content, structuredContent: wire, isError: wire.error !== null };
  },
};

const writeFile: Tool<typeof WriteFileBody> = {
  name: 'write_file',
  title: 'Write a file',
  description: 'Writes text (or base64 bytes with encoding "base64") to remote_path in the sandbox; relative paths are inside /workspace.',
  inputSchema: WriteFileBody,
  async run(a, ctx) {
    const path = fileOps.requirePath(a.remote_path, a.path);
    if (a.content === undefined) throw new ServiceError('VALIDATION_FAILED', 'give content (text, or base64 with encoding=base64)');
    return stored('wrote', await fileOps.writeFile(caller(ctx), ref(a), { path, data: decodeContent(a.content, a.encoding) }));
  },
};

const UploadInput = Type.Omit(UploadFileBody, ['file']);
const uploadFile: Tool<typeof UploadInput> = {
  name: 'upload_file',
  title: 'Download a URL into the sandbox',
  description:
    'Fetches file_url (http/https, public addresses only unless the operator allowed more) into the sandbox at remote_filename ' +
    "(default: the URL's file name).",
  inputSchema: UploadInput,
  async run(a, ctx) {
    if (!a.file_url) throw new ServiceError('VALIDATION_FAILED', 'give file_url');
    return stored(
      'saved',
      await fileOps.uploadFromUrl(caller(ctx), ref(a), { url: a.file_url, target: a.remote_filename || a.remote_path }),
    );
  },
};

const ReadInput = Type.Omit(DownloadFileBody, ['as_file']);
const readFile: Tool<typeof ReadInput> = {
  name: 'read_file',
  title: 'Read or download a file',
  description:
    'Returns a file from the sandbox: text files as text, images as images, anything else as an embedded resource, always with ' +
    'a signed download link that works without an API key for a limited time.',
  inputSchema: ReadInput,
  async run(a, ctx) {
    const path = a.remote_path ?? a.path;
    if (!path) throw new ServiceError('VALIDATION_FAILED', 'give remote_path');
    // Only what the answer can carry is read into memory (an image or a blob up to MAX_IMAGE_BYTES); a larger
    // file is answered with its link alone, so that no call holds a whole 100 MB file here.
    const { entry, url } = await fileOps.fileLink(caller(ctx), ref(a), path);
    const real = entry.path;
    const mimeType = mimeTypeOf(posix.basename(real)).split(';')[0];
    const link: Content = {
      type: 'resource_link',
      uri: url,
      name: posix.basename(real),
      mimeType,
      description: `${real} (${entry.size} bytes)`,
    };
    if (entry.size > MAX_IMAGE_BYTES)
      return { content: [text(`${real} is ${entry.size} bytes: too large to return here; download it from the link`), link] };
    const { data } = await fileOps.readFile(caller(ctx), ref(a), path, MAX_IMAGE_BYTES);
    const isText =
      mimeType.startsWith('text/') ||
      /json|xml|yaml|javascript/.test(mimeType) ||
      (mimeType === 'application/octet-stream' && !data.subarray(0, 4096).includes(0));
    let body: Content;
    if (mimeType.startsWith('image/') && mimeType !== 'image/svg+xml' && data.length <= MAX_IMAGE_BYTES) {
      body = { type: 'image', data: data.toString('base64'), mimeType };
    } else if (isText && data.length <= MAX_TEXT_FILE_BYTES) {
      body = text(data.toString('utf8'));
    } else {
      body = { type: 'resource', resource: { uri: url, mimeType, blob: data.toString('base64') } };
    }
    return { content: [body, link] };
  },
};

const listFiles: Tool<typeof ListFilesBody> = {
  name: 'list_files',
  title: 'List files',
  description: 'Lists a directory of the sandbox (default /workspace), optionally recursively.',
  inputSchema: ListFilesBody,
  async run(a, ctx) {
    const listing = await fileOps.listFiles(caller(ctx), ref(a), { path: a.path, recursive: a.recursive });
    const lines = listing.entries.map((e) => `${e.type === 'directory' ? 'd' : '-'} ${String(e.size).padStart(10)}  ${e.path}`);
    return {
      content: [text(lines.length > 0 ? lines.join('\n') : `(${listing.path} is empty)`)],
      structuredContent: listingToWire(listing),
    };
  },
};

const stopSandbox: Tool<typeof SandboxRefBody> = {
  name: 'stop_sandbox',
  title: 'Stop a sandbox',
  description: 'Stops a sandbox: kills its processes and deletes its files. Give sandbox_id or conversation_id.',
  inputSchema: SandboxRefBody,
  async run(a, ctx) {
    const { status, sandboxId } = await ops.stopSandbox(caller(ctx), ref(a));
    return { content: [text(`${status}${sandboxId ? `: ${sandboxId}` : ''}`)], structuredContent: { status, sandbox_id: sandboxId } };
  },
};

const pauseSandbox: Tool<typeof SandboxRefBody> = {
  name: 'pause_sandbox',
  title: 'Pause a sandbox to disk',
  description:
    'Saves the sandbox (all its files, and the Python/JavaScript variables that can be saved) to disk and ends its processes. ' +
    'Use it when the conversation will wait a long time; idle sandboxes are paused on their own too. The next run_code, ' +
    'run_command or file call resumes it under the same sandbox_id, with a notice of what was not restored (open files, ' +
    'generators, running processes). Give sandbox_id or conversation_id.',
  inputSchema: SandboxRefBody,
  async run(a, ctx) {
    const { info, kernels } = await ops.pauseSandbox(caller(ctx), ref(a));
    const wire = pausedToWire(info, kernels);
    const lost = wire.not_saved.map((n) => `${n.name} (${n.reason})`).join('; ');
    return {
      content: [text(`paused ${wire.sandbox_id}: ${wire.state_bytes} bytes stored${lost ? `; not saved: ${lost}` : ''}`)],
      structuredContent: wire,
    };
  },
};

const forkSandbox: Tool<typeof SandboxRefBody> = {
  name: 'fork_sandbox',
  title: 'Fork a sandbox',
  description:
    'Copies a sandbox (its files and the Python/JavaScript variables that can be saved) into a new sandbox with its own ' +
    'sandbox_id, to try something risky without touching the original. Use the new sandbox_id for the experiment; the ' +
    'original stays as it was. The fork starts paused and its first call resumes it. Give sandbox_id or conversation_id.',
  inputSchema: SandboxRefBody,
  async run(a, ctx) {
    const { source, info, kernels } = await ops.forkSandbox(caller(ctx), ref(a));
    const wire = forkedToWire(source, info, kernels);
    return { content: [text(`forked ${source} into ${wire.sandbox_id} (${wire.state_bytes} bytes)`)], structuredContent: wire };
  },
};

export const TOOLS = [
  createSandbox,
  runCode,
  runCommand,
  writeFile,
  uploadFile,
  readFile,
  listFiles,
  pauseSandbox,
  forkSandbox,
  stopSandbox,
  ...PROCESS_TOOLS,
  ...CHECKPOINT_TOOLS,
] as Tool<TSchema>[];

/** Calls a tool by name: arguments checked against its schema; failures come back as isError results with the service's codes. */
export async function callTool(name: string, args: unknown, ctx: ToolContext): Promise<ToolResult> {
  const tool = TOOLS.find((t) => t.name === name);
  if (!tool) return { content: [text(`ROUTE_NOT_FOUND: no tool named ${name}`)], isError: true };
  const input = Value.Default(tool.inputSchema, Value.Convert(tool.inputSchema, structuredClone(args ?? {})));
  if (!Value.Check(tool.inputSchema, input)) {
    const problems = [...Value.Errors(tool.inputSchema, input)].slice(0, 5).map((e) => `${e.instancePath || '(arguments)'} ${e.message}`);
    return { content: [text(`VALIDATION_FAILED: ${problems.join('; ')}`)], isError: true };
  }
  try {
    return await tool.run(input as never, ctx);
  } catch (err) {
    if (!(err instanceof ServiceError)) throw err; // the MCP route logs it and answers a JSON-RPC error
    const e = describeError(err);
    return { content: [text(`${e.code}: ${e.message}`)], isError: true };
  }
}
