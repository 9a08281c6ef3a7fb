/** Host /proc helpers for finding a sandbox's processes. */
import { readdirSync, readFileSync } from 'node:fs';

/** Pids of live processes whose real uid is in [first, first + count) (zombies, which run nothing, left out). */
export function pidsInUidRange(first: number, count: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
      if (uid >= first && uid < first + count && !/^State:\s+Z/m.test(status)) found.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

/** Pids of all live host processes whose real uid is `uid`. */
export const pidsOfUid = (uid: number): number[] => pidsInUidRange(uid, 1);

/** `root` and all its live descendants, found through the parent pids in /proc. */
export function processTree(root: number): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (fields[0] === 'Z') continue;
      const ppid = Number(fields[1]);
      const list = children.get(ppid) ?? [];
      list.push(Number(name));
      children.set(ppid, list);
    } catch {
      // ended while we looked
    }
  }
  const out: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift()!;
    out.push(pid);
    queue.push(...(children.get(pid) ?? []));
  }
  return out;
}
