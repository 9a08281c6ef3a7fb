/**
 * What is kept of one live sandbox's background work for callers who have not read it yet: per process the
 * last OUTPUT_TAIL_BYTES of output, its end (MAX_ENDED ended ones at most), and its followers; per watch up
 * to MAX_WATCH_EVENTS events; the contexts made. Events come from the sandbox (ProcessControl.onEvent).
 */
import type { BackgroundEvent, ContextInfo, ProcessControl, ProcessEnd, ProcessInfo, WatchEvent } from '../backends/processes.js';

/** Output of one process kept for a caller who comes back to read it. */
export const OUTPUT_TAIL_BYTES = 64 * 1024;
/** Ended processes whose status waits to be read, per sandbox (the oldest go first). */
const MAX_ENDED = 16;
/**
 * Processes known at once, per sandbox: the agent runs at most 32, and the ended ones above. Events for more
 * (only a subverted agent sends them) are dropped: no sandbox makes the service hold more than this many tails.
 */
const MAX_TRACKED = 32 + MAX_ENDED;
const MAX_WATCH_EVENTS = 1000;
/** Followers of one process or watch at once. */
export const MAX_FOLLOWERS = 8;

export type ProcessStream = 'stdout' | 'stderr' | 'pty';

/** What a follower of a process hears. */
export interface ProcessListener {
  output(stream: ProcessStream, data: Buffer): void;
  end(end: ProcessEnd): void;
}

export interface ProcessOutput {
  readonly pid: number;
  /** Chunks from `offset` on, in order. */
  readonly chunks: ReadonlyArray<{ readonly stream: ProcessStream; readonly data: Buffer }>;
  /** Byte offset of the first chunk in all the process ever wrote; `next` is where the next read starts. */
  readonly offset: number;
  readonly next: number;
  readonly running: boolean;
  readonly end?: ProcessEnd;
  /** Output was dropped: older than the tail kept, or past the output limit. */
  readonly truncated: boolean;
}

export interface Tracked {
  readonly pid: number;
  info?: ProcessInfo;
  chunks: Array<{ stream: ProcessStream; data: Buffer }>;
  kept: number;
  /** Bytes before the first kept chunk. */
  dropped: number;
  truncated: boolean;
  end?: ProcessEnd;
  readonly followers: Set<ProcessListener>;
}

export interface Watch {
  readonly id: string;
  readonly path: string;
  events: WatchEvent[];
  overflowed: boolean;
  readonly followers: Set<(events: readonly WatchEvent[]) => void>;
}

/** What is kept for one live sandbox. */
export class Hub {
  readonly procs = new Map<number, Tracked>();
  readonly watches = new Map<string, Watch>();
  readonly contexts = new Map<string, ContextInfo>();

  constructor(
    readonly control: ProcessControl,
    /** The live sandbox it keeps the work of. */
    readonly sandbox: object,
  ) {
    control.onEvent((e) => this.on(e));
  }

  /** The record of `pid`, made if there is room (the oldest ended ones make way); undefined when there is none. */
  track(pid: number): Tracked | undefined {
    let t = this.procs.get(pid);
    if (!t) {
      const ended = [...this.procs.values()].filter((p) => p.end);
      while (ended.length > 0 && (ended.length >= MAX_ENDED || this.procs.size >= MAX_TRACKED)) {
        this.procs.delete(ended.shift()!.pid);
      }
      if (this.procs.size >= MAX_TRACKED) return undefined;
      t = { pid, chunks: [], kept: 0, dropped: 0, truncated: false, followers: new Set() };
      this.procs.set(pid, t);
    }
    return t;
  }

  private on(e: BackgroundEvent): void {
    if (e.kind === 'watch') {
      const w = this.watches.get(e.watchId);
      if (!w) return;
      for (const f of w.followers) f(e.events);
      if (w.followers.size > 0) return;
      w.events.push(...e.events);
      if (w.events.length > MAX_WATCH_EVENTS) {
        w.events.splice(0, w.events.length - MAX_WATCH_EVENTS);
        w.overflowed = true;
      }
      return;
    }
    const t = this.track(e.pid);
    if (!t) return;
    if (e.kind === 'truncated') {
      t.truncated = true;
    } else if (e.kind === 'output') {
      t.chunks.push({ stream: e.stream, data: e.data });
      t.kept += e.data.length;
      while (t.kept > OUTPUT_TAIL_BYTES && t.chunks.length > 1) {
        const first = t.chunks.shift()!;
        t.kept -= first.data.length;
        t.dropped += first.data.length;
      }
      for (const f of t.followers) f.output(e.stream, e.data);
    } else {
      t.end = e.end;
      for (const f of t.followers) f.end(e.end);
      t.followers.clear();
    }
  }

  /** The sandbox ended (stopped, paused, lost): followers hear it, nothing more comes. */
  close(reason: string): void {
    for (const t of this.procs.values()) {
      if (t.end) continue;
      t.end = { exitCode: 137, exited: false, status: 'signal: SIGKILL', error: reason };
      for (const f of t.followers) f.end(t.end);
      t.followers.clear();
    }
    for (const w of this.watches.values()) w.followers.clear();
    this.watches.clear();
  }
}
