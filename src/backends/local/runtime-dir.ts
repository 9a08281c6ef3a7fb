/**
 * The local backend's runtime directory (SANDBOX_ROOT): a copy of the agent every sandbox uid can read,
 * passwd/group files for inside, the egress proxy sockets, and the workspaces of unsandboxed mode. One
 * service instance owns it at a time (owner.pid); on start, whatever a crashed earlier instance left —
 * processes under the sandbox uids, sockets, workspaces — is removed before anything is served.
 */
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  readlinkSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { ETC_CANDIDATES } from './bwrap-args.js';
import { pidsInUidRange } from './proc.js';

export const INNER_UID = 1000;
const ROOT_LINK_CANDIDATES = ['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32'];

export interface HostLayout {
  /** /etc entries that exist on this host and are shown read-only inside. */
  readonly etcEntries: string[];
  /** Top-level merged-/usr symlinks: name → target. */
  readonly rootSymlinks: Record<string, string>;
  /** Whether ciw-idle (what an idle supervisor becomes) could be built. */
  readonly idleProgram: boolean;
}

/**
 * Builds a C part of the agent into the agent directory with the first of `variants` (compiler flags) that
 * works: ciw-idle (src/agent/ciw_idle.c) static when the C library allows (a smaller resident set in every
 * idle sandbox), else dynamic; ciw-fork.so (ciw_fork.c), the checkpoints' fork. False without a working C compiler.
 */
function buildC(source: string, target: string, variants: string[][] = [['-static'], []]): boolean {
  // Built by an earlier start from the same source: a restart (one that takes sandboxes over) is faster.
  try {
    if (statSync(target).mtimeMs >= statSync(source).mtimeMs) return true;
  } catch {
    // not built yet
  }
  for (const link of variants) {
    try {
      execFileSync('cc', ['-O2', '-o', target, source, ...link], { stdio: 'ignore', timeout: 60_000 });
      chmodSync(target, 0o755);
      return true;
    } catch {
      rmSync(target, { force: true });
    }
  }
  return false;
}

function claim(root: string): void {
  const lock = join(root, 'owner.pid');
  const owner = existsSync(lock) ? Number(readFileSync(lock, 'utf8').trim()) : NaN;
  if (Number.isInteger(owner) && owner !== process.pid && existsSync(`/proc/${owner}`)) {
    throw new Error(
      `${root} is in use by another running service (pid ${owner}); give each instance its own SANDBOX_ROOT and SANDBOX_UID_BASE`,
    );
  }
  writeFileSync(lock, `${process.pid}\n`);
}

/**
 * Claims and prepares `root`; kills leftover sandbox processes (uids [uidBase, uidBase + uidCount)) when
 * running as root. Returns what the bubblewrap arguments need to know about this host.
 */
export function prepareRuntimeDir(
  root: string,
  agentSource: string /* the agent's source directory */,
  python: string,
  uids: { base: number; count: number; spare?: ReadonlySet<number> } | null,
  log: (m: string) => void,
): HostLayout {
  mkdirSync(root, { recursive: true });
  claim(root);
  if (uids) {
    // Sandboxes an earlier service process left running for this one to take over are spared.
    const spare = uids.spare ?? new Set<number>();
    const left = pidsInUidRange(uids.base, uids.count).filter((pid) => !spare.has(uidOf(pid)));
    if (left.length > 0) {
      log(`killing ${left.length} process(es) left by an earlier run under sandbox uids`);
      for (const pid of left) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
    }
  }
  for (const dir of ['net', 'unsandboxed']) rmSync(join(root, dir), { recursive: true, force: true });
  mkdirSync(join(root, 'net'), { recursive: true });
  chmodSync(root, 0o711);
  chmodSync(join(root, 'net'), 0o711);
  // The agent's directory is bound into every sandbox, including those an earlier service process left
  // running for this one to take over: it is kept (a new directory would leave them a deleted one), and
  // each file is replaced by rename, so that a sandbox never reads one half-written.
  const agentDir = join(root, 'agent');
  mkdirSync(agentDir, { recursive: true, mode: 0o755 });
  chmodSync(agentDir, 0o755);
  const sources = readdirSync(agentSource).filter((name) => /\.(py|mjs)$/.test(name));
  for (const name of readdirSync(agentDir)) {
    if (!sources.includes(name) && !['__pycache__', 'ciw-idle', 'ciw-fork.so'].includes(name))
      rmSync(join(agentDir, name), { recursive: true, force: true });
  }
  for (const name of sources) {
    copyFileSync(join(agentSource, name), join(agentDir, `${name}.new`));
    chmodSync(join(agentDir, `${name}.new`), 0o644);
    renameSync(join(agentDir, `${name}.new`), join(agentDir, name));
  }
  // Byte-compiled once here: inside, the directory is read-only and every sandbox start would compile again.
  try {
    execFileSync(python, ['-m', 'compileall', '-q', join(root, 'agent')], { stdio: 'ignore', timeout: 60_000 });
    execFileSync('chmod', ['-R', 'a+rX', join(root, 'agent')], { stdio: 'ignore' });
  } catch {
    // slower starts, same behaviour
  }
  writeFileSync(
    join(root, 'passwd'),
    `sandbox:x:${INNER_UID}:${INNER_UID}:sandbox:/workspace:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`,
    { mode: 0o644 },
  );
  writeFileSync(join(root, 'group'), `sandbox:x:${INNER_UID}:\nnogroup:x:65534:\n`, { mode: 0o644 });

  const rootSymlinks: Record<string, string> = {};
  for (const name of ROOT_LINK_CANDIDATES) {
    try {
      if (lstatSync(`/${name}`).isSymbolicLink()) rootSymlinks[name] = readlinkSync(`/${name}`);
    } catch {
      // absent on this host
    }
  }
  const idleProgram = buildC(join(agentSource, 'ciw_idle.c'), join(root, 'agent', 'ciw-idle'));
  // Without it, checkpoints fork with os.fork() and hold about 0.5 MiB more each (ciw_fork.c says why).
  buildC(join(agentSource, 'ciw_fork.c'), join(root, 'agent', 'ciw-fork.so'), [['-shared', '-fPIC']]);
  return { etcEntries: ETC_CANDIDATES.filter((e) => existsSync(join('/etc', e))), rootSymlinks, idleProgram };
}

/** Gives the directory up at shutdown. */
export function releaseRuntimeDir(root: string): void {
  const lock = join(root, 'owner.pid');
  try {
    if (Number(readFileSync(lock, 'utf8').trim()) === process.pid) rmSync(lock);
  } catch {
    // not ours, or already gone
  }
}

/** The real uid of a process (-1 when it is gone). */
function uidOf(pid: number): number {
  try {
    return Number(/^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  } catch {
    return -1;
  }
}
