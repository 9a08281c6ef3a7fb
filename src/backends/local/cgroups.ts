/**
 * Per-sandbox cgroups: memory (no swap), number of processes, CPU share. cgroup v2 when the unified
 * hierarchy is mounted and delegated to us, cgroup v1 (separate memory / pids / cpu hierarchies, as on
 * this project's CI machines) otherwise, and none when neither can be written — the agent then falls back
 * to rlimits. Each sandbox gets `<our cgroup>/ciw-<service pid>/<sandbox>`; the counters it exposes
 * (OOM kills, fork refusals) let the backend name the limit a call hit.
 */
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CodeError } from '../types.js';

export interface CgroupLimits {
  readonly memoryBytes: number;
  readonly maxProcesses: number;
  /** CPU cores' worth of time per period (e.g. 1.5); 0 for no CPU cap. */
  readonly cpus: number;
}

export interface LimitCounters {
  readonly oomKills: number;
  readonly pidsRefused: number;
}

/** The limit the counters say a call ran into (the OOM killer, a refused fork), as the call's error. */
export function limitErrorOf(before: LimitCounters, now: LimitCounters): CodeError | null {
  if (now.oomKills > before.oomKills) {
    return {
      name: 'MemoryLimitExceeded',
      value: 'the sandbox ran out of memory and the kernel killed a process (memory limit reached)',
      traceback: '',
    };
  }
  if (now.pidsRefused > before.pidsRefused) {
    return { name: 'ProcessLimitExceeded', value: 'the sandbox tried to start more processes than its limit allows', traceback: '' };
  }
  return null;
}

export interface SandboxCgroup {
  /** False for the stand-in used when the host has no cgroups: nothing to join. */
  readonly active: boolean;
  /** Moves a process (and later its children) into the sandbox's cgroups. */
  addProcess(pid: number): void;
  counters(): LimitCounters;
  /** CPU seconds all the sandbox's processes used so far (dead ones included), or null when not accounted. */
  cpuSeconds(): number | null;
  /** Memory all its processes use now (page cache included), or null when not accounted. */
  memoryBytes(): number | null;
  /** The most they used at once, or null when not recorded. */
  memoryPeakBytes(): number | null;
  /** Removes the cgroup directories; call once the sandbox's processes are gone. */
  remove(): Promise<void>;
}

export interface CgroupManager {
  readonly mode: 'v2' | 'v1' | 'none';
  /** Human-readable account of what is enforced, for the start-up log and /health. */
  readonly description: string;
  create(name: string, limits: CgroupLimits): SandboxCgroup;
  /** Removes this service's cgroup directories (those still in use by another instance stay). */
  close(): void;
}

const PERIOD_US = 100_000;

function read(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
}

function counter(text: string, key: string): number {
  const m = new RegExp(`^${key}\\s+(\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

/** Directory `dir` and every empty child cgroup below it; errors are ignored (it may still be busy). */
function removeTree(dir: string): void {
  if (!existsSync(dir)) return;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    if (entry.isDirectory()) removeTree(join(dir, entry.name));
  }
  try {
    rmdirSync(dir);
  } catch {
    // still has processes, or already gone
  }
}

async function removeWithRetry(dirs: readonly string[]): Promise<void> {
  for (let attempt = 0; attempt < 50; attempt++) {
    let left = 0;
    for (const d of dirs) {
      try {
        if (existsSync(d)) rmdirSync(d);
      } catch {
        left++;
      }
    }
    if (left === 0) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

const isAlive = (pid: number) => existsSync(`/proc/${pid}`);

/** Removes per-service directories left by service processes that no longer exist (a crash, a kill -9). */
function sweepStale(parent: string): void {
  if (!existsSync(parent)) return;
  for (const entry of readdirSync(parent)) {
    const m = /^ciw-(\d+)$/.exec(entry);
    if (m && Number(m[1]) !== process.pid && !isAlive(Number(m[1]))) removeTree(join(parent, entry));
  }
}

function mountsOf(type: string): Array<{ point: string; options: string }> {
  const out: Array<{ point: string; options: string }> = [];
  for (const line of read('/proc/self/mountinfo').split('\n')) {
    const [left, right] = line.split(' - ');
    if (!right) continue;
    const fields = left.split(' ');
    const [fstype, , superOptions] = right.split(' ');
    if (fstype === type) out.push({ point: fields[4], options: superOptions ?? '' });
  }
  return out;
}

function ownPaths(): Map<string, string> {
  const paths = new Map<string, string>();
  for (const line of read('/proc/self/cgroup').split('\n')) {
    const [, controllers, path] = line.split(':');
    if (path === undefined) continue;
    for (const c of controllers.split(',')) paths.set(c, path);
  }
  return paths;
}

const none = (why: string): CgroupManager => ({
  mode: 'none',
  description: `no cgroups (${why}); memory, process and CPU limits fall back to rlimits`,
  create: () => ({
    active: false,
    addProcess: () => undefined,
    counters: () => ({ oomKills: 0, pidsRefused: 0 }),
    cpuSeconds: () => null,
    memoryBytes: () => null,
    memoryPeakBytes: () => null,
    remove: async () => undefined,
  }),
  close: () => undefined,
});

function v1(): CgroupManager | string {
  const own = ownPaths();
  const base = new Map<string, string>();
  for (const controller of ['memory', 'pids', 'cpu']) {
    const mount = mountsOf('cgroup').find((m) => m.options.split(',').includes(controller));
    if (!mount) return `the cgroup v1 ${controller} controller is not mounted`;
    const parent = join(mount.point, own.get(controller) ?? '/');
    try {
      sweepStale(parent);
      const dir = join(parent, `ciw-${process.pid}`);
      mkdirSync(dir, { recursive: true });
      base.set(controller, dir);
    } catch (err) {
      return `cannot create a cgroup under ${parent}: ${(err as Error).message}`;
    }
  }
  // CPU accounting (cpuacct) where it is mounted, often together with cpu; without it, no per-sandbox total.
  const acct = mountsOf('cgroup').find((m) => m.options.split(',').includes('cpuacct'));
  if (acct) {
    try {
      const parent = join(acct.point, own.get('cpuacct') ?? '/');
      sweepStale(parent);
      const dir = join(parent, `ciw-${process.pid}`);
      mkdirSync(dir, { recursive: true });
      base.set('cpuacct', dir);
    } catch {
      // no accounting
    }
  }
  return {
    mode: 'v1',
    description: 'cgroup v1 (memory without swap, pids, cpu quota per sandbox)',
    create(name, limits) {
      const dirs: Record<string, string> = {
        memory: join(base.get('memory')!, name),
        pids: join(base.get('pids')!, name),
        cpu: join(base.get('cpu')!, name),
      };
      if (base.has('cpuacct')) dirs.cpuacct = join(base.get('cpuacct')!, name);
      for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
      writeFileSync(join(dirs.memory, 'memory.limit_in_bytes'), String(limits.memoryBytes));
      if (existsSync(join(dirs.memory, 'memory.memsw.limit_in_bytes'))) {
        writeFileSync(join(dirs.memory, 'memory.memsw.limit_in_bytes'), String(limits.memoryBytes));
      }
      writeFileSync(join(dirs.pids, 'pids.max'), String(limits.maxProcesses));
      if (limits.cpus > 0) {
        writeFileSync(join(dirs.cpu, 'cpu.cfs_period_us'), String(PERIOD_US));
        writeFileSync(join(dirs.cpu, 'cpu.cfs_quota_us'), String(Math.round(limits.cpus * PERIOD_US)));
      }
      return {
        active: true,
        addProcess(pid) {
          for (const d of new Set(Object.values(dirs))) writeFileSync(join(d, 'cgroup.procs'), String(pid));
        },
        counters: () => ({
          oomKills: counter(read(join(dirs.memory, 'memory.oom_control')), 'oom_kill'),
          pidsRefused: counter(read(join(dirs.pids, 'pids.events')), 'max'),
        }),
        cpuSeconds: () => {
          const ns = dirs.cpuacct ? Number(read(join(dirs.cpuacct, 'cpuacct.usage')).trim()) : NaN;
          return Number.isFinite(ns) && dirs.cpuacct ? ns / 1e9 : null;
        },
        memoryBytes: () => numberIn(join(dirs.memory, 'memory.usage_in_bytes')),
        memoryPeakBytes: () => numberIn(join(dirs.memory, 'memory.max_usage_in_bytes')),
        remove: () => removeWithRetry([...new Set(Object.values(dirs))]),
      };
    },
    close: () => base.forEach((dir) => removeTree(dir)),
  };
}

function v2(mountPoint: string): CgroupManager | string {
  const own = ownPaths().get('') ?? '/';
  const parent = join(mountPoint, own);
  try {
    sweepStale(parent);
    const controllers = read(join(parent, 'cgroup.controllers')).split(/\s+/);
    for (const c of ['memory', 'pids', 'cpu'])
      if (!controllers.includes(c)) return `the cgroup v2 ${c} controller is not delegated to ${parent}`;
    const base = join(parent, `ciw-${process.pid}`);
    mkdirSync(base, { recursive: true });
    writeFileSync(join(base, 'cgroup.subtree_control'), '+memory +pids +cpu');
    return {
      mode: 'v2',
      description: `cgroup v2 under ${base} (memory without swap, pids, cpu.max per sandbox)`,
      create(name, limits) {
        const dir = join(base, name);
        mkdirSync(dir, { recursive: true });
        writeFileSync(join(dir, 'memory.max'), String(limits.memoryBytes));
        if (existsSync(join(dir, 'memory.swap.max'))) writeFileSync(join(dir, 'memory.swap.max'), '0');
        writeFileSync(join(dir, 'pids.max'), String(limits.maxProcesses));
        if (limits.cpus > 0) writeFileSync(join(dir, 'cpu.max'), `${Math.round(limits.cpus * PERIOD_US)} ${PERIOD_US}`);
        return {
          active: true,
          addProcess: (pid) => writeFileSync(join(dir, 'cgroup.procs'), String(pid)),
          counters: () => ({
            oomKills: counter(read(join(dir, 'memory.events')), 'oom_kill'),
            pidsRefused: counter(read(join(dir, 'pids.events')), 'max'),
          }),
          cpuSeconds: () => {
            const m = /^usage_usec\s+(\d+)/m.exec(read(join(dir, 'cpu.stat')));
            return m ? Number(m[1]) / 1e6 : null;
          },
          memoryBytes: () => numberIn(join(dir, 'memory.current')),
          memoryPeakBytes: () => numberIn(join(dir, 'memory.peak')),
          remove: () => removeWithRetry([dir]),
        };
      },
      close: () => removeTree(base),
    };
  } catch (err) {
    // The usual cause: our cgroup holds processes, so it may not enable controllers for children
    // (run the service in a delegated cgroup of its own, e.g. systemd Delegate=yes).
    return `cannot set up cgroup v2 under ${parent}: ${(err as Error).message}`;
  }
}

/** Detects what this host lets us use. Only root (or a delegated cgroup owner) gets cgroups. */
export function detectCgroups(enabled: boolean): CgroupManager {
  if (!enabled) return none('disabled by SANDBOX_CGROUPS=false');
  const unified = mountsOf('cgroup2').find((m) => m.point === '/sys/fs/cgroup');
  const result = unified ? v2(unified.point) : v1();
  return typeof result === 'string' ? none(result) : result;
}

function numberIn(file: string): number | null {
  try {
    const n = Number(read(file).trim());
    return Number.isFinite(n) ? n : null;
  } catch {
    return null;
  }
}
