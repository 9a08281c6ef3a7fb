/**
 * The service's end of the wire protocol with one in-sandbox agent (see src/agent/agent.py): a frame is
 * one JSON header line plus, when the header has a positive `blob`, that many raw bytes. One request is in
 * flight at a time; callers queue behind it.
 */
import type { Readable, Writable } from 'node:stream';
import { ServiceError, ErrorCode, isErrorCode } from '../../core/errors.js';
import type { AgentRequest } from '../agent/protocol.js';

export interface AgentReply {
  readonly header: Record<string, unknown>;
  readonly blob: Buffer;
}

interface Pending {
  readonly id: number;
  resolve(reply: AgentReply): void;
  reject(error: Error): void;
  timer: NodeJS.Timeout;
  /** Fires the deadline (re-armed with what is left of it after a pause for a slow reader). */
  expire: () => void;
  deadlineAt: number;
  onEvent?: EventListener;
  /** Bytes of output events received for this request. */
  eventBytes: number;
  sink?: BlobSink;
}

/**
 * Takes a reply's payload as it arrives instead of in one buffer (a file being downloaded): start() with the
 * reply's header and the payload's length, then chunk() for each piece, in order; the request's promise
 * resolves (with an empty blob) once the last piece was handed over.
 */
export interface BlobSink {
  start(header: Record<string, unknown>, length: number): void;
  /**
   * Takes a piece; a promise back means "full": nothing more is read from the sandbox until it settles
   * (back-pressure from a slow reader reaches the sandbox, not the service's memory), and the request's
   * deadline does not run meanwhile.
   */
  chunk(data: Buffer): Promise<void> | null;
  /** Largest payload the sink takes, when it is not the connection's own bound (a paused sandbox's state). */
  readonly maxBytes?: number;
}

/** Receives the event frames ({"event": "stdout", "data": "..."}) that precede a streamed call's reply. */
export type EventListener = (event: string, data: string) => void;

const NEWLINE = 0x0a;

/** Bounds on what the agent may send: it runs inside the sandbox, so its frames are untrusted input. */
export interface FrameLimits {
  /** Longest header line, in bytes. */
  readonly maxHeaderBytes: number;
  /** Largest binary payload, in bytes. */
  readonly maxBlobBytes: number;
  /**
   * Output event bytes one request may bring: the agent caps a call's output itself, so more means it was
   * subverted, and the sandbox is stopped instead of the service buffering whatever it sends.
   */
  readonly maxEventBytes: number;
}

/**
 * An error the agent reported with a code of its own (PROCESS_LIMIT, KERNEL_START_FAILED, AGENT_FAILURE…),
 * not one of the service's: an internal error to the client, but callers can still tell which one it was.
 */
export class AgentFailure extends ServiceError {
  constructor(
    readonly agentCode: string,
    message: string,
  ) {
    super(ErrorCode.INTERNAL_ERROR, message);
  }
}

/** The agent's end of the channel: requests in, frames out, and the process's 'close'. */
export interface AgentPipes {
  readonly stdin: Writable | null;
  readonly stdout: Readable | null;
  once(event: 'close', listener: () => void): unknown;
}

export class AgentConnection {
  /** Bytes received and not yet parsed; while a header line is incomplete, its pieces wait in `partial`. */
  private buffer: Buffer = Buffer.alloc(0);
  private partial: Buffer[] = [];
  private partialBytes = 0;
  /** The payload being received, allocated at its full size once its header came, and how much is in. */
  private blob: Buffer | null = null;
  private blobReceived = 0;
  /** Or the sink a payload streams to, and its length. */
  private sink: BlobSink | null = null;
  private sinkLength = 0;
  private header: Record<string, unknown> | null = null;
  private pending: Pending | null = null;
  private queue: Promise<unknown> = Promise.resolve();
  /** Request ids start anywhere: a channel taken over from an earlier service may still carry its last frames. */
  private nextId = 1 + Math.floor(Math.random() * 2 ** 30);
  /** While set, frames that answer no request are skipped (see resync()) instead of stopping the sandbox. */
  private resyncing = false;
  private closedReason: string | null = null;
  private readyWaiter: ((h: Record<string, unknown>) => void) | null = null;

  /** Receives frames the agent sends on its own ({"notice": "kernel_exit", ...}). */
  onNotice: ((header: Record<string, unknown>) => void) | null = null;
  /** Receives what background processes and watches send ({"proc": pid, ...}, {"watch": id, ...}). */
  onBackground: ((header: Record<string, unknown>) => void) | null = null;

  constructor(
    private readonly child: AgentPipes,
    private readonly onFatal: (reason: string) => void,
    private readonly limits: FrameLimits,
  ) {
    child.stdout!.on('data', (chunk: Buffer) => this.onData(chunk));
    child.stdin!.on('error', () => undefined);
  }

  /** Waits for the agent's first frame ({"ready": true}). */
  ready(timeoutMs: number): Promise<Record<string, unknown>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent did not start within ${timeoutMs} ms`)), timeoutMs);
      this.readyWaiter = (h) => {
        clearTimeout(timer);
        resolve(h);
      };
      this.child.once('close', () => {
        clearTimeout(timer);
        reject(new Error(this.closedReason ?? 'agent exited before it was ready'));
      });
    });
  }

  /**
   * Takes over a channel an earlier service process used: whatever it left half-sent is skipped, up to the
   * reply to `header` (a ping), which is returned.
   */
  async resync(header: AgentRequest, timeoutMs: number): Promise<AgentReply> {
    this.resyncing = true;
    // Ends a request line the earlier service left half-written (the agent skips a line that is not JSON;
    // an empty line would read as the end of the channel).
    this.child.stdin!.write('#\n');
    try {
      return await this.request(header, null, timeoutMs);
    } finally {
      this.resyncing = false;
    }
  }

  /**
   * Sends one request and waits for its reply. `deadlineMs` bounds the wait: past it the agent is
   * considered hung and `onFatal` kills the sandbox.
   */
  request(
    header: AgentRequest,
    blob: Uint8Array | null,
    deadlineMs: number,
    onEvent?: EventListener,
    sink?: BlobSink,
  ): Promise<AgentReply> {
    const run = () => this.send(header, blob, deadlineMs, onEvent, sink);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => undefined);
    return result;
  }

  /** Marks the connection dead and fails the request in flight. */
  close(reason: string): void {
    if (this.closedReason) return;
    this.closedReason = reason;
    const p = this.pending;
    this.pending = null;
    if (p) {
      clearTimeout(p.timer);
      p.reject(new ServiceError(ErrorCode.SANDBOX_LOST, reason));
    }
  }

  private send(
    header: AgentRequest,
    blob: Uint8Array | null,
    deadlineMs: number,
    onEvent?: EventListener,
    sink?: BlobSink,
  ): Promise<AgentReply> {
    if (this.closedReason) return Promise.reject(new ServiceError(ErrorCode.SANDBOX_LOST, this.closedReason));
    return new Promise<AgentReply>((resolve, reject) => {
      const id = this.nextId++;
      const expire = () => this.onFatal(`the sandbox agent did not answer within ${Math.round(deadlineMs / 1000)} s and was killed`);
      const timer = setTimeout(expire, deadlineMs);
      this.pending = { id, resolve, reject, timer, expire, deadlineAt: Date.now() + deadlineMs, onEvent, eventBytes: 0, sink };
      const frame = { ...header, id, ...(blob && blob.length > 0 ? { blob: blob.length } : {}) };
      const line = Buffer.from(JSON.stringify(frame) + '\n', 'utf8');
      const stdin = this.child.stdin!;
      if (blob && blob.length > 0) {
        stdin.write(line);
        stdin.write(blob);
      } else {
        stdin.write(line);
      }
    });
  }

  private onData(chunk: Buffer): void {
    // A large payload (a file) is copied into one buffer of its size as it arrives: no list of chunks to
    // join at the end, which would copy a 50 MB file once more and hold it twice.
    if (this.blob !== null || this.sink !== null) {
      const length = this.blob ? this.blob.length : this.sinkLength;
      const n = Math.min(chunk.length, length - this.blobReceived);
      const full = this.blob ? (chunk.copy(this.blob, this.blobReceived, 0, n), null) : this.sink!.chunk(chunk.subarray(0, n));
      this.blobReceived += n;
      if (this.blobReceived < length) {
        if (full) this.pauseFor(full);
        return;
      }
      const [header, blob] = [this.header!, this.blob ?? Buffer.alloc(0)];
      this.header = null;
      this.blob = null;
      this.sink = null;
      this.blobReceived = 0;
      this.deliver(header, blob);
      chunk = chunk.subarray(n);
      if (chunk.length === 0) return;
    }
    if (this.header === null && this.buffer.length === 0 && this.partialBytes > 0) {
      // The rest of a header line that came in pieces: only the new piece is searched for its end, and the
      // pieces are joined once, when it is found (a search and a join per piece were quadratic in its length).
      const nl = chunk.indexOf(NEWLINE);
      if (nl < 0) {
        this.partial.push(chunk);
        this.partialBytes += chunk.length;
        if (this.partialBytes > this.limits.maxHeaderBytes) this.violation('an oversized frame header');
        return;
      }
      this.partial.push(chunk);
      chunk = Buffer.concat(this.partial, this.partialBytes + chunk.length);
      this.partial = [];
      this.partialBytes = 0;
    }
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    for (;;) {
      if (this.header === null) {
        const nl = this.buffer.indexOf(NEWLINE);
        if (nl < 0) {
          if (this.buffer.length > this.limits.maxHeaderBytes) this.violation('an oversized frame header');
          else if (this.buffer.length > 0) {
            this.partial = [this.buffer];
            this.partialBytes = this.buffer.length;
            this.buffer = Buffer.alloc(0);
          }
          return;
        }
        if (nl > this.limits.maxHeaderBytes) {
          this.violation('an oversized frame header');
          return;
        }
        const text = this.buffer.toString('utf8', 0, nl);
        this.buffer = this.buffer.subarray(nl + 1);
        try {
          this.header = JSON.parse(text) as Record<string, unknown>;
        } catch {
          this.header = null;
        }
        if (typeof this.header !== 'object' || this.header === null) {
          this.header = null;
          if (this.resyncing) continue; // the rest of a frame the earlier service read half of
          this.violation('a malformed frame');
          return;
        }
      }
      const blobLength = this.blobLength();
      const maxBlobBytes = this.pending?.sink?.maxBytes ?? this.limits.maxBlobBytes;
      if (!Number.isSafeInteger(blobLength) || blobLength < 0 || blobLength > maxBlobBytes) {
        this.violation('an oversized or malformed payload');
        return;
      }
      const sink = this.pending?.sink;
      if (sink && blobLength > 0 && this.header.ok === true && this.header.event === undefined && this.header.notice === undefined) {
        // A reply whose payload streams out as it comes (the header first, so the caller can answer at once).
        sink.start(this.header, blobLength);
        const n = Math.min(this.buffer.length, blobLength);
        const full = n > 0 ? sink.chunk(this.buffer.subarray(0, n)) : null;
        this.buffer = this.buffer.subarray(n);
        if (n < blobLength) {
          this.sink = sink;
          this.sinkLength = blobLength;
          this.blobReceived = n;
          if (full) this.pauseFor(full);
          return;
        }
        const header = this.header;
        this.header = null;
        this.deliver(header, Buffer.alloc(0));
        continue;
      }
      if (this.buffer.length < blobLength) {
        this.blob = Buffer.allocUnsafe(blobLength);
        this.blobReceived = this.buffer.copy(this.blob);
        this.buffer = Buffer.alloc(0);
        return;
      }
      const blob = blobLength === 0 ? Buffer.alloc(0) : Buffer.from(this.buffer.subarray(0, blobLength));
      this.buffer = this.buffer.subarray(blobLength);
      const header = this.header;
      this.header = null;
      this.deliver(header, blob);
    }
  }

  /** Stops reading from the sandbox until `until` settles; the request's deadline waits too. */
  private pauseFor(until: Promise<void>): void {
    const stdout = this.child.stdout!;
    const p = this.pending;
    stdout.pause();
    let left = 0;
    if (p) {
      clearTimeout(p.timer);
      left = Math.max(0, p.deadlineAt - Date.now());
    }
    void until.finally(() => {
      if (p && this.pending === p) {
        p.deadlineAt = Date.now() + left;
        p.timer = setTimeout(p.expire, left);
      }
      if (!this.closedReason) stdout.resume();
    });
  }

  private blobLength(): number {
    return typeof this.header?.blob === 'number' ? this.header.blob : 0;
  }

  /** The agent broke the protocol: stop reading and kill the sandbox. */
  private violation(what: string): void {
    this.buffer = Buffer.alloc(0);
    this.partial = [];
    this.partialBytes = 0;
    this.blob = null;
    this.sink = null;
    this.header = null;
    this.child.stdout!.removeAllListeners('data');
    this.onFatal(`the sandbox agent sent ${what} and the sandbox was stopped`);
  }

  private deliver(header: Record<string, unknown>, blob: Buffer): void {
    if (header.ready === true && this.readyWaiter) {
      const w = this.readyWaiter;
      this.readyWaiter = null;
      w(header);
      return;
    }
    if (typeof header.notice === 'string' && header.id === undefined) {
      this.onNotice?.(header);
      return;
    }
    if ((header.proc !== undefined || header.watch !== undefined) && header.id === undefined) {
      if (this.onBackground) this.onBackground(header);
      else if (!this.resyncing) this.violation('a background frame nobody asked for');
      return;
    }
    const p = this.pending;
    if (this.resyncing && (!p || header.id !== p.id)) return; // for the earlier service
    if (!p) {
      this.violation('a frame nobody asked for');
      return;
    }
    if (typeof header.event === 'string') {
      const data = String(header.data ?? '');
      p.eventBytes += data.length;
      if (p.eventBytes > this.limits.maxEventBytes) {
        this.violation(`more output than its limit (${this.limits.maxEventBytes} bytes of events in one call)`);
        return;
      }
      p.onEvent?.(header.event, data);
      return;
    }
    this.pending = null;
    clearTimeout(p.timer);
    if (header.ok === true) {
      p.resolve({ header, blob });
      return;
    }
    const code = String(header.code ?? '');
    const message = String(header.message ?? 'the sandbox agent reported an error');
    p.reject(isErrorCode(code) ? new ServiceError(code, message) : new AgentFailure(code, message));
  }
}
