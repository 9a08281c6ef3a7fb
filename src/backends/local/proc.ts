/** Host /proc helpers for finding a sandbox's processes. */
import { readdirSync, readFileSync } from 'node:fs';

/** Pids of all live host processes whose real uid is `uid` (zombies, which run nothing, are left out). */
export function pidsOfUid(uid: number): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const status = readFileSync(`/proc/${name}/status`, 'utf8');
      const m = /^Uid:\s+(\d+)/m.exec(status);
      if (m && Number(m[1]) === uid && !/^State:\s+Z/m.test(status)) found.push(Number(name));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}
