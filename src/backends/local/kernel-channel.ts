/**
 * The direct channel to a sandbox's Python kernel (local backend): a socket inherited by the sandbox as fd 3
 * and by the kernel the supervisor forks. run_code goes straight to the kernel and back — one process
 * wake-up each way instead of three — while the supervisor keeps the control operations (start, interrupt,
 * restart) and reports the kernel's death.
 *
 * Everything on this channel is written by the process that runs the user's code, so it is untrusted: lines
 * are bounded, lines that are not JSON are skipped (a killed kernel can leave half a frame; its successor
 * starts each frame on a new line), frames for another call are ignored, and the caller re-types every field.
 */
import type { Duplex } from 'node:stream';
import type { EventListener } from './agent-connection.js';

const NEWLINE = 0x0a;

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
  private nextId = 1;
  /** Bytes read since the call in flight was sent: bounded, so that no call costs the service unbounded work. */
  private received = 0;

  constructor(
    private readonly socket: Duplex,
    private readonly maxLineBytes: number,
    /** Bound on all bytes one call may bring (its reply and output events, and any noise). */
    private readonly maxCallBytes: number,
    /** The kernel sent a line longer than allowed: the sandbox is stopped. */
    private readonly onViolation: (what: string) => void,
  ) {
    socket.on('data', (chunk: Buffer) => this.onData(chunk));
    socket.on('error', () => undefined);
    // Between calls nothing is read: a kernel that keeps writing fills the socket and blocks.
    socket.pause();
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
      this.received = 0;
      this.socket.resume();
      this.socket.write(`${JSON.stringify({ ...request, id })}\n`);
    });
  }

  /** Ends the call in flight (the kernel died or was killed): it rejects with `error`. */
  abandon(error: Error): void {
    const call = this.call;
    this.call = null;
    this.socket.pause();
    call?.reject(error);
  }

  private onData(chunk: Buffer): void {
    this.received += chunk.length;
    if (this.received > this.maxCallBytes) {
      this.pending = [];
      this.pendingBytes = 0;
      this.socket.pause();
      this.onViolation('more data for one call than the frame limit allows on the kernel channel');
      return;
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
      if (line.length > 0) this.onLine(line.toString('utf8'));
      start = nl + 1;
    }
    if (start < chunk.length) {
      this.pending.push(start === 0 ? chunk : chunk.subarray(start));
      this.pendingBytes += chunk.length - start;
      if (this.pendingBytes > this.maxLineBytes) {
        this.pending = [];
        this.pendingBytes = 0;
        this.onViolation('an oversized frame on the kernel channel');
      }
    }
  }

  private onLine(text: string): void {
    let frame: unknown;
    try {
      frame = JSON.parse(text);
    } catch {
      return; // the tail of a killed kernel's frame, or noise from the user's code
    }
    const call = this.call;
    if (!call || typeof frame !== 'object' || frame === null || (frame as { id?: unknown }).id !== call.id) return;
    const f = frame as Record<string, unknown>;
    if (typeof f.event === 'string') {
      call.onEvent(f.event, typeof f.data === 'string' ? f.data : '');
      return;
    }
    this.call = null;
    this.socket.pause();
    call.resolve(f);
  }
}
