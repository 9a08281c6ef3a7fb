/**
 * Host /proc helpers for finding a sandbox's processes. The scans read a file per host process; with
 * thousands of processes that is a good part of a second, so the ones on a request's path (create, stop)
 * are asynchronous and never hold the event loop. The synchronous one is for start-up only.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';

/** Files read at once by an asynchronous scan. */
const SCAN_CONCURRENCY = 32;

const isPid = (name: string) => name.length > 0 && name.length < 11 && [...name].every((c) => c >= '0' && c <= '9');

function uidOf(status: string): number {
  const m = /^Uid:\s+(\d+)/m.exec(status);
  return m ? Number(m[1]) : NaN;
}

const isZombie = (status: string) => /^State:\s+Z/m.test(status);

/** Pids of live processes whose real uid is in [first, first + count) (zombies, which run nothing, left out). Start-up only. */
export function pidsInUidRange(first: number, count: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!isPid(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const uid = uidOf(status);
      if (uid >= first && uid < first + count && !isZombie(status)) found.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

/** Reads `/proc/<pid>/<file>` for every process, a few at a time, and hands each text to `visit`. */
async function scanProc(file: string, visit: (pid: number, text: string) => void): Promise<void> {
  const pids = (await readdir('/proc')).filter(isPid);
  let next = 0;
  const worker = async () => {
    while (next < pids.length) {
      const name = pids[next++];
      try {
        visit(Number(name), await readFile(`/proc/${name}/${file}`, 'utf8'));
      } catch {
        // ended while we looked
      }
    }
  };
  await Promise.all(Array.from({ length: SCAN_CONCURRENCY }, worker));
}

/** Pids of all live host processes whose real uid is `uid`. */
export async function pidsOfUid(uid: number): Promise<number[]> {
  const found: number[] = [];
  await scanProc('status', (pid, status) => {
    if (uidOf(status) === uid && !isZombie(status)) found.push(pid);
  });
  return found;
}

/**
 * `root` and all its live descendants. Through each task's `children` list (a handful of small reads, which
 * is what a sandbox start needs); where the kernel has no such list, through the parent pids of every
 * process in /proc, asynchronously.
 */
export async function processTree(root: number): Promise<number[]> {
  const viaChildren = childrenTree(root);
  return viaChildren ?? scanTree(root);
}

function childrenTree(root: number): number[] | null {
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    let tasks: string[];
    try {
      tasks = readdirSync(`/proc/${pid}/task`);
    } catch {
      continue; // ended meanwhile
    }
    out.push(pid);
    for (const tid of tasks) {
      let children: string;
      try {
        children = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8');
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT' && pid === root && tid === String(root)) return null; // no such list here
        continue;
      }
      for (const child of children.split(' ')) if (child.trim()) queue.push(Number(child));
    }
  }
  return out;
}

async function scanTree(root: number): Promise<number[]> {
  const children = new Map<number, number[]>();
  await scanProc('stat', (pid, stat) => {
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (fields[0] === 'Z') return;
    const ppid = Number(fields[1]);
    const list = children.get(ppid) ?? [];
    list.push(pid);
    children.set(ppid, list);
  });
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}

/** SIGKILL to each of `pids`, ignoring those already gone. */
export function killAll(pids: readonly number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

/** Resident memory of these processes, in bytes (those that ended meanwhile count nothing). */
export function residentBytes(pids: readonly number[]): number {
  let total = 0;
  for (const pid of pids) {
    try {
      total += Number(readFileSync(`/proc/${pid}/statm`, 'utf8').split(' ')[1]) * PAGE_BYTES;
    } catch {
      // ended meanwhile
    }
  }
  return total;
}

const PAGE_BYTES = 4096;

/**
 * Memory only each process holds — Private_Clean + Private_Dirty of its smaps_rollup: what ending it frees —
 * for the processes among `hostPids` whose pid inside their own pid namespace (the last of NSpid) is in
 * `inner`. The service may read these of a sandbox's processes (it owns their user namespace), dumpable or not.
 */
export async function privateBytesOf(hostPids: readonly number[], inner: ReadonlySet<number>): Promise<Map<number, number>> {
  const found = new Map<number, number>();
  await Promise.all(
    hostPids.map(async (pid) => {
      try {
        const nspid = /^NSpid:\s*([\d\s]+)$/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
        const innerPid = Number(nspid?.[1]?.trim().split(/\s+/).pop());
        if (!inner.has(innerPid)) return;
        const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
        let kb = 0;
        for (const m of rollup.matchAll(/^Private_(?:Clean|Dirty):\s+(\d+) kB$/gm)) kb += Number(m[1]);
        found.set(innerPid, kb * 1024);
      } catch {
        // ended meanwhile, or not readable
      }
    }),
  );
  return found;
}
