/**
 * The sandbox use cases, written once for every front end (the HTTP routes, the MCP tools, the Dify Code
 * node's API): lifecycle (create, info, list, stop) and running code and commands. Each takes input already
 * validated by its front end, in the service's terms, and returns a domain result, with a `link` function
 * for the sandbox's files where the result names files; front ends present it (responses.ts, wire.ts).
 */
import type { KernelState, RunCommandResult } from '../backends/types.js';

export type { OutputListener, RunCodeResult, RunCommandResult } from '../backends/types.js';
import type {
  CallUsage,
  CreateInput,
  Lifecycle,
  RunCodeInput,
  RunCommandInput,
  RunOutcome,
  SandboxInfo,
  SandboxRef,
} from '../service/sandbox-service.js';
import { ServiceError, ErrorCode } from '../core/errors.js';
import { linksOf, type Linker } from './run-presenters.js';
import type { Caller } from './caller.js';
import { fitReply } from './reply-budget.js';

export async function createSandbox(caller: Caller, input: CreateInput): Promise<{ info: SandboxInfo; reused: boolean }> {
  return caller.service.create(caller.owner, input);
}

/** A sandbox's facts; a conversation without a sandbox gets one, as every call naming it does. */
export async function sandboxInfo(caller: Caller, ref: SandboxRef): Promise<SandboxInfo> {
  return caller.service.info(caller.owner, ref);
}

export function listSandboxes(caller: Caller): SandboxInfo[] {
  return caller.service.list(caller.owner);
}

/** Stops the sandbox named by id or by conversation; 'not_found' when this key has no such sandbox. */
export async function stopSandbox(caller: Caller, ref: SandboxRef): Promise<{ status: 'stopped' | 'not_found'; sandboxId: string }> {
  if (!ref.sandboxId && !ref.conversationId) {
    throw new ServiceError(ErrorCode.VALIDATION_FAILED, 'give sandbox_id (from /create_sandbox) or conversation_id');
  }
  const id = ref.sandboxId ?? caller.service.conversationSandbox(caller.owner, ref.conversationId!) ?? '';
  return { status: id ? await caller.service.stop(caller.owner, id) : 'not_found', sandboxId: id };
}

/**
 * The sandbox a request names, created for a conversation on first use: front ends that stream resolve it
 * before they start answering, so that a request naming no sandbox is still a plain 4xx.
 */
export async function resolveSandbox(caller: Caller, ref: SandboxRef): Promise<SandboxRef> {
  return { sandboxId: (await caller.service.resolve(caller.owner, ref)).id };
}

/** `replyBudget`: bytes of text the answer may carry (REPLY_MAX_BYTES for front ends that answer in one body). */
export async function runCode(
  caller: Caller,
  ref: SandboxRef,
  input: RunCodeInput,
  replyBudget = 0,
): Promise<{ outcome: RunOutcome; link: Linker }> {
  const ran = await caller.service.runCode(caller.owner, ref, input);
  const outcome =
    ran.runtime === 'shell'
      ? { ...ran, result: await fitReply(caller, ran.sandbox, ran.result, replyBudget) }
      : { ...ran, result: await fitReply(caller, ran.sandbox, ran.result, replyBudget) };
  return { outcome, link: linksOf(caller, outcome.sandbox) };
}

export async function runCommand(
  caller: Caller,
  ref: SandboxRef,
  input: RunCommandInput,
  replyBudget = 0,
): Promise<{ sandboxId: string; result: RunCommandResult; link: Linker; lifecycle?: Lifecycle; usage?: CallUsage }> {
  const { sandbox, result, lifecycle, usage } = await caller.service.runCommand(caller.owner, ref, input);
  const fitted = await fitReply(caller, sandbox, result, replyBudget);
  return { sandboxId: sandbox.id, result: fitted, link: linksOf(caller, sandbox), lifecycle, usage };
}

/** Pauses the sandbox to disk: its files and variables are kept, its processes end; any later call resumes it. */
export function pauseSandbox(caller: Caller, ref: SandboxRef): Promise<{ info: SandboxInfo; kernels: readonly KernelState[] }> {
  return caller.service.pause(caller.owner, ref);
}

/** Forks the sandbox: a new one with a copy of its files and saved variables, paused until its first call. */
export function forkSandbox(
  caller: Caller,
  ref: SandboxRef,
): Promise<{ source: string; info: SandboxInfo; kernels: readonly KernelState[] }> {
  return caller.service.fork(caller.owner, ref);
}

/** Resumes a paused sandbox now (any call would), saying what came back and what did not. */
export function resumeSandbox(caller: Caller, ref: SandboxRef): Promise<{ info: SandboxInfo; lifecycle?: Lifecycle }> {
  return caller.service.resume(caller.owner, ref);
}
