/**
 * Sandboxes that outlive the service: what a service process writes down about each sandbox it starts
 * (SANDBOX_ROOT/live/<id>/facts.json, beside its channel FIFOs), and what the next process finds there at
 * start. A sandbox whose outer process is still the same process (same pid, same start time) can be taken
 * over; the rest is swept away.
 */
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { processStartTime } from './sandbox-process.js';
import { killAll, processTree } from './proc.js';

/** What a new service process needs to take a sandbox over. */
export interface LiveFacts {
  readonly id: string;
  /** Its host uid (as root), which its processes run under. */
  readonly uid?: number;
  /** Its outer (bubblewrap) process, and that process's start time (so a reused pid is not mistaken for it). */
  readonly pid: number;
  readonly startTime: string;
  readonly warm: boolean;
}

const FACTS = 'facts.json';

export const liveDir = (root: string) => join(root, 'live');

export function writeFacts(dir: string, facts: LiveFacts): void {
  writeFileSync(join(dir, FACTS), JSON.stringify(facts), { mode: 0o600 });
}

/**
 * The sandboxes of an earlier service process that still run, by id (none when sandboxes do not outlive the
 * service); the directories of the others are removed.
 */
export function findAdoptable(root: string, outlive: boolean): Map<string, LiveFacts & { dir: string }> {
  const found = new Map<string, LiveFacts & { dir: string }>();
  const live = liveDir(root);
  if (!outlive) rmSync(live, { recursive: true, force: true });
  if (!outlive || !existsSync(live)) return found;
  for (const name of readdirSync(live)) {
    const dir = join(live, name);
    try {
      const facts = JSON.parse(readFileSync(join(dir, FACTS), 'utf8')) as LiveFacts;
      if (facts.id === name && Number.isInteger(facts.pid) && facts.startTime && processStartTime(facts.pid) === facts.startTime) {
        found.set(name, { ...facts, dir });
        continue;
      }
    } catch {
      // no facts: it never started, or it is not ours
    }
    rmSync(dir, { recursive: true, force: true });
  }
  return found;
}

/** Ends a sandbox of an earlier service process that is not taken over: every process of its uid, or of its tree. */
export async function letGo(facts: LiveFacts & { dir: string }, reapUid: (uid: number) => Promise<void>): Promise<void> {
  if (facts.uid !== undefined) await reapUid(facts.uid);
  else if (processStartTime(facts.pid) === facts.startTime) killAll(await processTree(facts.pid));
  rmSync(facts.dir, { recursive: true, force: true });
}
