/**
 * The sandbox's Python kernel on the direct channel (fds 3 and 5): calls go to it and back without the supervisor.
 * The supervisor is asked to start the kernel when there is none, to interrupt it at the timeout or when its
 * output passed the cap, and to restart it when the interrupt did not stop it within the grace period; it
 * tells of the kernel's death on its own (exited()).
 */
import { posix } from 'node:path';
import { AgentFailure, type AgentConnection } from './agent-connection.js';
import type { KernelChannel } from './kernel-channel.js';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { toRunCodeResult } from '../agent/reply.js';
import { agentRequest } from '../agent/protocol.js';
import type { CodeError, RunCodeOptions, RunCodeResult } from '../types.js';

/** Bound on a control operation of the supervisor (start, interrupt or restart the kernel). */
export const CONTROL_DEADLINE_MS = 70_000;

/** Why a call on the direct channel ended without a reply. */
class KernelGone extends Error {
  constructor(
    readonly why: 'hung' | 'exited',
    message: string,
  ) {
    super(message);
  }
}

const STATE_LOST = 'the Python process was restarted and its state (variables, imports) is lost';

export interface DirectKernelParts {
  readonly channel: KernelChannel;
  /** The supervisor, which starts, interrupts and restarts the kernel. */
  readonly connection: AgentConnection;
  readonly workspace: string;
  readonly graceMs: number;
  readonly maxOutputBytes: number;
  /** Started for the pool, already running. */
  readonly warm: boolean;
  /** Already running (a sandbox taken over from an earlier service process). */
  readonly running?: boolean;
  /** Whether the kernel must look at the workspace afresh (the supervisor changed it since). */
  readonly look: () => boolean;
}

export class DirectKernel {
  private readonly channel: KernelChannel;
  private readonly connection: AgentConnection;
  private readonly workspace: string;
  private readonly graceMs: number;
  private readonly maxOutputBytes: number;
  private readonly look: () => boolean;
  private running = false;
  /** Whether a kernel was ever asked for (or started warm, for the pool). */
  private everStarted: boolean;
  /** Why the kernel is gone, if it ended between calls (said in the next result). */
  private lost: string | null = null;
  /** A checkpoint asked for after a call the kernel did not see: what comes next on the channel waits for it. */
  private settling: Promise<unknown> | null = null;

  constructor(parts: DirectKernelParts) {
    this.channel = parts.channel;
    this.connection = parts.connection;
    this.workspace = parts.workspace;
    this.graceMs = parts.graceMs;
    this.maxOutputBytes = parts.maxOutputBytes;
    this.look = parts.look;
    this.everStarted = parts.warm || parts.running === true;
    this.running = parts.running === true;
  }

  /** The supervisor said the kernel ended (`status`: exit code, or minus the signal). */
  exited(status: number): void {
    this.running = false;
    const how = Number.isFinite(status) && status < 0 ? `signal ${-status}` : `code ${status}`;
    this.channel.abandon(new KernelGone('exited', how));
    this.lost = `the Python process ended between calls (${how}); its state (variables, imports) is lost`;
  }

  /**
   * Asks the running kernel to keep a checkpoint after a call it did not see (a shell command): off the
   * caller's path — the next use of the kernel or the supervisor waits for it (settle()).
   */
  checkpointAfter(after: Record<string, unknown>): void {
    if (!this.running) return;
    const previous = this.settling;
    const done: Promise<unknown> = (async () => {
      await previous;
      await this.control({ checkpoint: after }, 'did not keep a checkpoint').catch(() => undefined);
    })().finally(() => {
      if (this.settling === done) this.settling = null;
    });
    this.settling = done;
  }

  /** Waits for a checkpoint asked for by checkpointAfter(). */
  async settle(): Promise<void> {
    while (this.settling) await this.settling;
  }

  /**
   * Waits until the kernel has done what it does after a call (it keeps a checkpoint once the reply is out):
   * it answers this request only after that. The calls since its newest checkpoint that left none (they came
   * back to back, within CHECKPOINT_WAIT_MS).
   */
  async sync(): Promise<number> {
    await this.settle();
    if (!this.running) return 0;
    const reply = await this.control({}, 'did not answer').catch(() => null);
    return typeof reply?.skipped === 'number' && Number.isSafeInteger(reply.skipped) && reply.skipped >= 0 ? reply.skipped : 0;
  }

  /**
   * After the supervisor made checkpoint `to` the kernel (a rollback): waits for the restored kernel's word,
   * which keeps that state as a checkpoint again. Its cell count.
   */
  async restored(to: string): Promise<number | null> {
    this.running = true;
    this.everStarted = true;
    this.lost = null;
    const reply = await this.control({ checkpoint: { kind: 'rollback', to } }, 'did not answer after the rollback');
    return typeof reply.execution_count === 'number' ? reply.execution_count : null;
  }

  /** A request to the kernel that is not a call, bounded by CONTROL_DEADLINE_MS. */
  private async control(request: Record<string, unknown>, what: string): Promise<Record<string, unknown>> {
    const timer = setTimeout(() => this.channel.abandon(new KernelGone('hung', what)), CONTROL_DEADLINE_MS);
    try {
      return await this.channel.send(request, () => undefined);
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Saves the kernel's state to `path` inside the sandbox, or loads it from there (a new kernel is started
   * first): the kernel's report, or null when there is no kernel to save.
   */
  async state(action: 'save' | 'load', path: string): Promise<Record<string, unknown> | null> {
    await this.settle();
    if (!this.running) {
      if (action === 'save') return null;
      await this.connection.request(agentRequest('kernel_start', {}), null, CONTROL_DEADLINE_MS);
      this.running = true;
      this.everStarted = true;
    }
    const timer = setTimeout(() => this.channel.abandon(new KernelGone('hung', `did not ${action} its state`)), CONTROL_DEADLINE_MS);
    try {
      const reply = await this.channel.send({ state: action, path }, () => undefined);
      const state = reply.state;
      return typeof state === 'object' && state !== null ? (state as Record<string, unknown>) : { error: 'no report' };
    } catch (err) {
      if (err instanceof KernelGone) return { error: `the Python process ${err.message}` };
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  /** The sandbox is gone: the call in progress, if any, fails with `err`. */
  abandon(err: Error): void {
    this.channel.abandon(err);
  }

  /** Runs Python code on the kernel, starting one first when there is none. */
  async run(options: RunCodeOptions, skipped = 0): Promise<RunCodeResult> {
    if (this.settling) await this.settle();
    const channel = this.channel;
    const lostBefore = this.lost;
    this.lost = null;
    // No kernel: ask for one. The very first time, the call goes right behind the request (the kernel reads
    // it once it is up); after a kernel has lived, the supervisor first throws away whatever its predecessor
    // left unread on the channel, so the call must wait until the new kernel is there.
    const starting = this.running ? null : this.connection.request(agentRequest('kernel_start', {}), null, CONTROL_DEADLINE_MS);
    starting?.catch(() => undefined);
    const pipelined = !this.everStarted;
    this.everStarted = true;
    this.running = true;
    if (starting && !pipelined) {
      try {
        await starting;
      } catch (err) {
        return this.notStarted(err);
      }
    }
    // What arrived as output events: held to MAX_OUTPUT_BYTES here too, since the kernel runs user code.
    const streamed: Array<['stdout' | 'stderr', string]> = [];
    let streamedBytes = 0;
    let stopped: 'timeout' | 'output' | null = null;
    let interrupting: Promise<unknown> | null = null;
    let graceTimer: NodeJS.Timeout | undefined;
    const stop = (why: 'timeout' | 'output') => {
      if (stopped) return;
      stopped = why;
      interrupting = this.connection.request(agentRequest('kernel_interrupt', {}), null, CONTROL_DEADLINE_MS).then(() => {
        graceTimer = setTimeout(() => channel.abandon(new KernelGone('hung', 'did not stop')), this.graceMs);
      });
      interrupting.catch(() => undefined);
    };
    const call = channel.send(
      {
        code: options.code,
        inline_images: options.inlineImages === true,
        stream: options.onOutput !== undefined,
        rebase: this.look(),
        ...(skipped > 0 ? { skipped } : {}),
        ...(options.env && Object.keys(options.env).length > 0 ? { env: options.env } : {}),
      },
      (event, data) => {
        if (event === 'stdout' || event === 'stderr') {
          streamedBytes += Buffer.byteLength(data);
          if (streamedBytes > this.maxOutputBytes) {
            stop('output');
            return;
          }
          streamed.push([event, data]);
          options.onOutput?.(event, data);
        } else if (event === 'output_limit') {
          stop('output');
        }
      },
    );
    // Handled below; a kernel that dies while its start is awaited must not leave the rejection unhandled meanwhile.
    call.catch(() => undefined);
    if (starting && pipelined) {
      try {
        await starting;
      } catch (err) {
        channel.abandon(new KernelGone('exited', 'not started'));
        await call.catch(() => undefined);
        return this.notStarted(err);
      }
    }
    const timer = setTimeout(() => stop('timeout'), options.timeoutMs);
    let reply: Record<string, unknown> | null = null;
    let gone: KernelGone | null = null;
    try {
      reply = await call;
    } catch (err) {
      if (!(err instanceof KernelGone)) throw err;
      gone = err;
    } finally {
      clearTimeout(timer);
      // The interrupt must land before anything else reaches the kernel, or it would hit the next call.
      if (interrupting) await (interrupting as Promise<unknown>).catch(() => undefined);
      clearTimeout(graceTimer);
    }
    const joined = (stream?: 'stdout' | 'stderr') =>
      streamed.length === 0
        ? ''
        : streamed
            .filter(([s]) => stream === undefined || s === stream)
            .map(([, t]) => t)
            .join('');
    const out = joined('stdout');
    const err = joined('stderr');
    const both = joined();
    const seconds = `${options.timeoutMs / 1000}`;
    if (reply) {
      const r = toRunCodeResult(reply);
      const files = r.files.filter((f) => this.inWorkspace(f.path));
      const results = r.results.map((x) => (x.path === undefined || this.inWorkspace(x.path) ? x : { type: x.type, data: x.data }));
      let error = r.error;
      const overflow = streamedBytes > this.maxOutputBytes;
      if (stopped === 'output' && (!error || error.name === 'KeyboardInterrupt')) {
        error = { name: 'OutputLimitExceeded', traceback: '', value: this.outputLimitMessage() };
      }
      if (stopped === 'timeout') {
        error = {
          name: 'ExecutionTimeout',
          traceback: error?.traceback ?? '',
          value: `execution exceeded the ${seconds} s timeout and was interrupted; the Python state is preserved`,
        };
      }
      return {
        ...r,
        files,
        results,
        error,
        timedOut: stopped === 'timeout',
        outputTruncated: r.outputTruncated || overflow,
        stdout: out + r.stdout,
        stderr: err + r.stderr,
        output: both + r.output,
        ...(lostBefore ? { statePreserved: false, notice: lostBefore } : {}),
      };
    }
    // No reply: the kernel is gone, or hung and is restarted now. Its state is lost.
    let error: CodeError;
    if (gone!.why === 'hung') {
      try {
        await this.connection.request(agentRequest('kernel_restart', {}), null, CONTROL_DEADLINE_MS);
      } catch (e) {
        if (e instanceof ServiceError && e.code === ErrorCode.SANDBOX_LOST) throw e;
        this.running = false; // tried again on the next call
      }
      error =
        stopped === 'timeout'
          ? {
              name: 'ExecutionTimeout',
              value: `execution exceeded the ${seconds} s timeout and did not stop when interrupted; ${STATE_LOST}`,
              traceback: '',
            }
          : {
              name: 'OutputLimitExceeded',
              value: `${this.outputLimitMessage()}; it did not stop when interrupted, so ${STATE_LOST}`,
              traceback: '',
            };
    } else {
      this.lost = null;
      error = {
        name: 'KernelDied',
        traceback: '',
        value: `the Python process exited (${gone!.message}) while running this code; its state (variables, imports) is lost and the next call starts a new one`,
      };
    }
    return {
      ...failedCall(error, false),
      timedOut: stopped === 'timeout',
      outputTruncated: stopped === 'output',
      stdout: out,
      stderr: err,
      output: both,
    };
  }

  /** The result of a call whose kernel could not be started. */
  private notStarted(err: unknown): RunCodeResult {
    this.running = false;
    if (err instanceof ServiceError && err.code === ErrorCode.SANDBOX_LOST) throw err;
    const name = err instanceof AgentFailure && err.agentCode === 'PROCESS_LIMIT' ? 'ProcessLimitExceeded' : 'KernelDied';
    return failedCall({ name, value: (err as Error).message, traceback: '' }, false);
  }

  /** The agent's wording (ciw_common.output_limit_error), for what the service decides itself. */
  private outputLimitMessage(): string {
    return `the output passed the ${this.maxOutputBytes}-byte limit; the call was stopped and the rest of the output dropped`;
  }

  private inWorkspace(path: string): boolean {
    return path.startsWith(`${this.workspace}/`) && posix.normalize(path) === path;
  }
}

function failedCall(error: CodeError, statePreserved: boolean): RunCodeResult {
  return {
    stdout: '',
    stderr: '',
    output: '',
    outputTruncated: false,
    results: [],
    error,
    timedOut: false,
    statePreserved,
    durationMs: 0,
    files: [],
    filesTruncated: false,
  };
}
