/**
 * A local sandbox's outer process and the channels to its agent and its Python kernel, however the service
 * holds them: a child it spawned, or — after the service itself was restarted — a process it found again.
 *
 * The channels of a sandbox that can outlive the service are FIFOs under SANDBOX_ROOT/live/<id>/ (0700):
 * the sandbox holds each of them open for reading and writing, so it never sees an end of file when the
 * service goes away, and a new service process opens them again by their path. A FIFO's reader sees the
 * end of file once every process of the sandbox is gone: that is how the end of an adopted sandbox shows.
 */
import { EventEmitter } from 'node:events';
import { constants, openSync, closeSync, readFileSync, existsSync, mkdirSync, fstatSync, readSync } from 'node:fs';
import { execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import net from 'node:net';
import type { Readable, Writable } from 'node:stream';

const execFileAsync = promisify(execFile);

/** The channel FIFOs of a sandbox, by name: requests to the agent, its replies, and the same for the kernel. */
const FIFOS = ['agent-in', 'agent-out', 'kernel-in', 'kernel-out'] as const;
const STDERR = 'stderr';
/** A FIFO only the service writes to: the sandbox learns from its hang-up that no service process holds it. */
const LIFELINE = 'lifeline';
const STDERR_TAIL_BYTES = 4000;
/** How often an adopted sandbox's process is looked for (it is not our child: no exit event comes). */
const ADOPTED_POLL_MS = 250;

export interface Channels {
  /** Requests to the agent, and its replies. */
  readonly stdin: Writable;
  readonly stdout: Readable;
  /** The Python kernel's direct channel, when the sandbox has one. */
  readonly kernelIn: Writable | null;
  readonly kernelOut: Readable | null;
  /** The service's end of the lifeline FIFO (a descriptor held open while the sandbox lives), if it has one. */
  readonly lifeline?: number;
}

/** What LocalSandbox and AgentConnection know of the process: a ChildProcess's shape, whoever started it. */
export class SandboxProcess extends EventEmitter implements Channels {
  exitCode: number | null = null;
  signalCode: NodeJS.Signals | null = null;
  private exitSeen = false;

  private constructor(
    readonly pid: number | undefined,
    readonly stdin: Writable,
    readonly stdout: Readable,
    readonly kernelIn: Writable | null,
    readonly kernelOut: Readable | null,
    private readonly signal: (signal: NodeJS.Signals) => boolean,
    private readonly stderr: () => string,
    private lifelineFd?: number,
  ) {
    super();
    // 'close' as a ChildProcess has it: the process exited and its output channel ended.
    let ended = false;
    const closeIfDone = () => {
      if (ended && this.exitSeen) this.emit('close', this.exitCode, this.signalCode);
    };
    stdout.once('close', () => {
      ended = true;
      closeIfDone();
    });
    this.once('exit', () => {
      this.exitSeen = true;
      // A process of the sandbox that outlived its pid namespace (none should) must not hold the end back.
      setTimeout(() => stdout.destroy(), 2000).unref();
      closeIfDone();
    });
    stdin.on('error', () => undefined);
    kernelIn?.on('error', () => undefined);
    this.once('exit', () => {
      // Nothing more goes to the sandbox: our write ends go (a ChildProcess's own stdin is closed likewise).
      stdin.destroy();
      if (this.lifelineFd !== undefined) closeAll([this.lifelineFd]);
      this.lifelineFd = undefined;
    });
  }

  /** Lets go of the channels (a start that failed before a LocalSandbox took them). */
  dispose(): void {
    for (const stream of [this.stdin, this.stdout, this.kernelIn, this.kernelOut]) stream?.destroy();
    if (this.lifelineFd !== undefined) closeAll([this.lifelineFd]);
    this.lifelineFd = undefined;
  }

  kill(signal: NodeJS.Signals = 'SIGTERM'): boolean {
    return this.signal(signal);
  }

  /** The last lines the sandbox's outer process and agent wrote to their stderr. */
  stderrTail(): string {
    return this.stderr();
  }

  /** A child this service spawned: its exit events, and the channels given. */
  static ofChild(child: ChildProcess, channels: Channels, stderrTail: () => string): SandboxProcess {
    const p = new SandboxProcess(
      child.pid,
      channels.stdin,
      channels.stdout,
      channels.kernelIn,
      channels.kernelOut,
      (s) => child.kill(s),
      stderrTail,
      channels.lifeline,
    );
    child.once('error', (err) => p.emit('error', err));
    child.once('exit', (code, signal) => {
      p.exitCode = code;
      p.signalCode = signal;
      p.emit('exit', code, signal);
    });
    // A child that failed to spawn emits 'error' and 'close' but no 'exit'.
    child.once('close', (code, signal) => {
      if (p.exitSeen) return;
      p.exitCode = code;
      p.signalCode = signal;
      p.emit('exit', code, signal);
    });
    return p;
  }

  /** A sandbox a previous service process started: `pid` (its outer process, started at `startTime`) is not our child. */
  static adopted(pid: number, startTime: string, dir: string): SandboxProcess {
    const channels = openServiceEnds(dir);
    const alive = () => processStartTime(pid) === startTime;
    const p = new SandboxProcess(
      pid,
      channels.stdin,
      channels.stdout,
      channels.kernelIn,
      channels.kernelOut,
      (s) => {
        if (!alive()) return false;
        process.kill(pid, s);
        return true;
      },
      () => tailOf(join(dir, STDERR)),
      channels.lifeline,
    );
    const timer = setInterval(() => {
      if (alive()) return;
      clearInterval(timer);
      p.signalCode = 'SIGKILL';
      p.emit('exit', null, 'SIGKILL');
    }, ADOPTED_POLL_MS);
    timer.unref();
    return p;
  }
}

/** Makes channel directories with their FIFOs (one mkfifo process for all of them). */
export async function makeChannelDirs(dirs: readonly string[]): Promise<void> {
  for (const dir of dirs) mkdirSync(dir, { recursive: true, mode: 0o700 });
  await execFileAsync('mkfifo', ['-m', '600', ...dirs.flatMap((dir) => [...FIFOS, LIFELINE].map((f) => join(dir, f)))]);
}

/**
 * Opens the sandbox's ends of the FIFOs in `dir` (read-write, in the order of FIFOS), its stderr file, and
 * the lifeline's read end, to be given to the process: fds to close once it is spawned.
 */
export function openSandboxEnds(dir: string): { fifos: number[]; stderr: number; lifeline: number } {
  const fifos = FIFOS.map((f) => openSync(join(dir, f), constants.O_RDWR));
  const stderr = openSync(join(dir, STDERR), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_APPEND, 0o600);
  // The sandbox reads it, never writes: once no service process holds the write end, it sees a hang-up.
  const lifeline = openSync(join(dir, LIFELINE), constants.O_RDONLY | constants.O_NONBLOCK);
  return { fifos, stderr, lifeline };
}

/** Opens the service's ends of the channel FIFOs in `dir` (the sandbox must hold its own ends open). */
export function openServiceEnds(dir: string): Channels {
  const writer = (name: string) =>
    new net.Socket({ fd: openSync(join(dir, name), constants.O_WRONLY | constants.O_NONBLOCK), readable: false, writable: true });
  const reader = (name: string) =>
    new net.Socket({ fd: openSync(join(dir, name), constants.O_RDONLY | constants.O_NONBLOCK), readable: true, writable: false });
  return {
    stdin: writer('agent-in'),
    stdout: reader('agent-out'),
    kernelIn: writer('kernel-in'),
    kernelOut: reader('kernel-out'),
    lifeline: openSync(join(dir, LIFELINE), constants.O_WRONLY | constants.O_NONBLOCK),
  };
}

/** Closes descriptors given to a spawned process. */
export function closeAll(fds: readonly number[]): void {
  for (const fd of fds) {
    try {
      closeSync(fd);
    } catch {
      // already closed
    }
  }
}

/** The last few KiB of a file, as text ('' when it is missing). */
export function tailOf(path: string): string {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY);
  } catch {
    return '';
  }
  try {
    const size = fstatSync(fd).size;
    const length = Math.min(size, STDERR_TAIL_BYTES);
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, size - length);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** The stderr file of a sandbox's channel directory. */
export const stderrPath = (dir: string) => join(dir, STDERR);

/** A process's start time (field 22 of /proc/<pid>/stat), which tells it from a later process of the same pid; '' when gone. */
export function processStartTime(pid: number): string {
  try {
    if (!existsSync(`/proc/${pid}`)) return '';
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19] ?? '';
  } catch {
    return '';
  }
}
