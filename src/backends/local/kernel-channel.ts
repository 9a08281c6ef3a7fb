/**
 * The direct channel to a sandbox's Python kernel (local backend): requests in, replies out (two FIFOs the
 * sandbox inherits as fds 3 and 5, or one socket), shared by the kernel the supervisor forks. run_code goes straight to the kernel and back — one process
 * wake-up each way instead of three — while the supervisor keeps the control operations (start, interrupt,
 * restart) and reports the kernel's death.
 *
 * Everything on this channel is written by the process that runs the user's code, so it is untrusted: lines
 * are bounded, lines that are not JSON are skipped (a killed kernel can leave half a frame; its successor
 * starts each frame on a new line), frames for another call are ignored, and the caller re-types every field.
 */
import type { Readable, Writable } from 'node:stream';
import type { EventListener } from './agent-connection.js';

const NEWLINE = 0x0a;
const OPEN_BRACE = 0x7b;
/** Bytes read between calls before reading stops until the next call. */
const IDLE_BYTES = 256 * 1024;

interface Call {
  readonly id: number;
  resolve(reply: Record<string, unknown>): void;
  reject(error: Error): void;
  onEvent: EventListener;
}

export class KernelChannel {
  /** The start of a line whose newline has not come yet. */
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private call: Call | null = null;
  /** Call ids start anywhere: a channel taken over from an earlier service may still carry its last frames. */
  private nextId = 1 + Math.floor(Math.random() * 2 ** 30);
  /**
   * What one call may cost the service. A kernel writes its reply and output events for the call in flight
   * and nothing else — except the tail of a killed predecessor's frame, or a reply that came after the
   * service stopped waiting. Anything else is noise from user code: it is bounded per call (past it the
   * sandbox is stopped) and, between calls, reading stops after a little of it until the next call (a
   * kernel that keeps writing then fills the socket and blocks). A normal kernel writes nothing between
   * calls, so the hot path never stops and restarts reading.
   */
  private callBytes = 0;
  private noiseBytes = 0;
  private idleBytes = 0;
  private paused = false;

  constructor(
    private readonly input: Writable,
    private readonly output: Readable,
    /** Longest line (one reply frame) allowed. */
    private readonly maxLineBytes: number,
    /** Bound on all bytes one call may bring (its reply and output events, and any noise). */
    private readonly maxCallBytes: number,
    /** The kernel broke the bounds: the sandbox is stopped. */
    private readonly onViolation: (what: string) => void,
  ) {
    output.on('data', (chunk: Buffer) => this.onData(chunk));
    output.on('error', () => undefined);
    input.on('error', () => undefined);
  }

  /**
   * Sends one call and resolves with its reply frame. Every other frame of the call (output events) goes
   * to `onEvent`. Only one call is in flight; `abandon` ends it without a reply.
   */
  send(request: Record<string, unknown>, onEvent: EventListener): Promise<Record<string, unknown>> {
    if (this.call) return Promise.reject(new Error('a call is already in flight on the kernel channel'));
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.call = { id, resolve, reject, onEvent };
      this.callBytes = 0;
      this.noiseBytes = 0;
      if (this.paused) {
        this.paused = false;
        this.output.resume();
      }
      this.input.write(`${JSON.stringify({ ...request, id })}\n`);
    });
  }

  /** Ends the call in flight (the kernel died or was killed): it rejects with `error`. */
  abandon(error: Error): void {
    const call = this.call;
    this.endCall();
    call?.reject(error);
  }

  private endCall(): void {
    this.call = null;
    this.idleBytes = 0;
  }

  private onData(chunk: Buffer): void {
    if (this.call === null) {
      this.idleBytes += chunk.length;
      if (this.idleBytes > IDLE_BYTES && !this.paused) {
        this.paused = true;
        this.output.pause();
      }
    } else {
      this.callBytes += chunk.length;
      if (this.callBytes > this.maxCallBytes) return this.violation('more data for one call than the frame limit allows');
    }
    // A long line (a call with a lot of output) arrives in many chunks: they are kept in a list and joined
    // once its newline comes, never concatenated chunk by chunk.
    let start = 0;
    for (;;) {
      const nl = chunk.indexOf(NEWLINE, start);
      if (nl < 0) break;
      const piece = chunk.subarray(start, nl);
      const line = this.pending.length === 0 ? piece : Buffer.concat([...this.pending, piece]);
      this.pending = [];
      this.pendingBytes = 0;
      if (line.length > 0 && !this.onLine(line)) {
        this.noiseBytes += line.length;
        if (this.noiseBytes > this.maxLineBytes) return this.violation("more than a frame's worth of noise in one call");
      }
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(start === 0 ? chunk : chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes > this.maxLineBytes) this.violation('an oversized frame');
    }
  }

  private violation(what: string): void {
    this.pending = [];
    this.pendingBytes = 0;
    this.paused = true;
    this.output.pause();
    this.onViolation(`${what} on the kernel channel`);
  }

  /** Handles one line; false if it was noise (not a frame of the call in flight). */
  private onLine(line: Buffer): boolean {
    if (line[0] !== OPEN_BRACE || this.call === null) return false; // no frame, or nobody waits: not parsed
    let frame: unknown;
    try {
      frame = JSON.parse(line.toString('utf8'));
    } catch {
      return false; // the tail of a killed kernel's frame, or noise from the user's code
    }
    const call = this.call;
    if (typeof frame !== 'object' || frame === null || (frame as { id?: unknown }).id !== call.id) return false;
    const f = frame as Record<string, unknown>;
    if (typeof f.event === 'string') {
      call.onEvent(f.event, typeof f.data === 'string' ? f.data : '');
      return true;
    }
    this.endCall();
    call.resolve(f);
    return true;
  }
}
