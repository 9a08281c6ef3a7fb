/**
 * The bubblewrap command line for one sandbox, as a pure function of its inputs, so it can be read and
 * tested on its own. What it builds: new user (no nested ones), pid, net, ipc, uts, cgroup and mount namespaces; the host's
 * /usr read-only (merged-/usr symlinks recreated); a handful of /etc files; a fresh /proc, /dev and /tmp;
 * the workspace as a size-limited tmpfs (a hard disk quota that vanishes with the sandbox); no
 * capabilities; an empty environment apart from what is listed.
 */
import { agentEnvironment, type AgentSettings } from '../agent/settings.js';

export interface BwrapInput {
  /**
   * Keep running when the service process dies (default: die with it): a new service process then takes the
   * sandbox over through its channel FIFOs (sandbox-process.ts).
   */
  readonly outliveService?: boolean;
  /** Host path of the directory holding agent.py (bound read-only at /opt/ciw). */
  readonly agentDir: string;
  /** Host files to bind as the sandbox's /etc/passwd and /etc/group. */
  readonly passwdFile: string;
  readonly groupFile: string;
  /** Top-level host paths that are symlinks (merged /usr): name → link target. */
  readonly rootSymlinks: Readonly<Record<string, string>>;
  /** /etc entries that exist on the host and should be visible read-only. */
  readonly etcEntries: readonly string[];
  readonly workspace: string;
  readonly workspaceBytes: number;
  readonly python: string;
  /** uid/gid as seen inside the sandbox. */
  readonly innerUid: number;
  readonly env: Readonly<Record<string, string>>;
  readonly hostname: string;
  /** Host path of the egress proxy socket, for a sandbox with network (bound at PROXY_SOCKET). */
  readonly proxySocket?: string;
  /** Host directories of extra Python packages, bound read-only at EXTRA_PYTHONPATH/<n>. */
  readonly extraPythonPaths?: readonly string[];
  /** A descriptor bubblewrap reads the seccomp filter from (seccomp.ts). */
  readonly seccompFd?: number;
}

/** Where extra package directories appear inside; PYTHONPATH lists them. */
export const EXTRA_PYTHONPATH = '/opt/python-packages';
export const extraPythonPath = (dirs: readonly string[]) => dirs.map((_, i) => `${EXTRA_PYTHONPATH}/${i}`).join(':');

/** Where a sandbox with network finds the egress proxy socket, and the port the agent relays it to. */
export const PROXY_SOCKET = '/run/ciw/proxy.sock';
export const PROXY_PORT = 3128;

/** /etc entries worth seeing inside: dynamic linker cache, alternatives symlinks, time zone, TLS roots, MIME. */
export const ETC_CANDIDATES = [
  'alternatives',
  'ld.so.cache',
  'ld.so.conf',
  'ld.so.conf.d',
  'localtime',
  'timezone',
  'ssl/certs',
  'ca-certificates',
  'mime.types',
  'fonts',
  'matplotlibrc',
  'nsswitch.conf',
  'protocols',
  'services',
] as const;

/** Size of /dev/shm (POSIX shared memory, multiprocessing semaphores). */
const SHM_BYTES = 64 * 1024 * 1024;

export function bwrapArgs(input: BwrapInput): string[] {
  const args = [
    '--unshare-user',
    '--disable-userns',
    '--uid',
    String(input.innerUid),
    '--gid',
    String(input.innerUid),
    '--unshare-pid',
    '--unshare-net',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    ...(input.outliveService ? [] : ['--die-with-parent']),
    '--new-session',
    '--cap-drop',
    'ALL',
    // Without network the supervisor is the sandbox's pid 1 and reaps orphans itself (it watches its
    // children anyway): no bubblewrap reaper process, 1.3 MiB less per sandbox. With network its relay
    // keeps it busy otherwise, and bubblewrap's reaper stays.
    ...(input.proxySocket ? [] : ['--as-pid-1']),
    '--hostname',
    input.hostname,
    '--ro-bind',
    '/usr',
    '/usr',
  ];
  for (const [name, target] of Object.entries(input.rootSymlinks)) args.push('--symlink', target, `/${name}`);
  for (const entry of input.etcEntries) args.push('--ro-bind', `/etc/${entry}`, `/etc/${entry}`);
  args.push(
    '--ro-bind',
    input.passwdFile,
    '/etc/passwd',
    '--ro-bind',
    input.groupFile,
    '/etc/group',
    '--proc',
    '/proc',
    '--dev',
    '/dev',
    '--size',
    String(Math.min(SHM_BYTES, input.workspaceBytes)),
    '--tmpfs',
    '/dev/shm',
    '--size',
    String(input.workspaceBytes),
    '--tmpfs',
    '/tmp',
    '--size',
    String(input.workspaceBytes),
    '--tmpfs',
    input.workspace,
    // E2B's SDKs and the code written for them expect the user's home at /home/user: the workspace, by another name.
    '--dir',
    '/home',
    '--symlink',
    input.workspace,
    '/home/user',
    '--ro-bind',
    input.agentDir,
    '/opt/ciw',
    ...(input.proxySocket ? ['--ro-bind', input.proxySocket, PROXY_SOCKET] : []),
    ...(input.extraPythonPaths ?? []).flatMap((dir, i) => ['--ro-bind', dir, `${EXTRA_PYTHONPATH}/${i}`]),
    // Every writable place is a size-limited tmpfs: the root and /dev themselves become read-only.
    '--remount-ro',
    '/dev',
    '--remount-ro',
    '/',
    '--chdir',
    input.workspace,
    ...(input.seccompFd !== undefined ? ['--seccomp', String(input.seccompFd)] : []),
    '--clearenv',
  );
  for (const [key, value] of Object.entries(input.env)) args.push('--setenv', key, value);
  // -I: the agent never imports from PYTHONPATH, a user site or its script's directory (see agent.py).
  args.push(input.python, '-I', '-S', '-u', '/opt/ciw/agent.py');
  return args;
}

/** Proxy variables for a sandbox with network: HTTP(S) goes through the filtering egress proxy. */
function proxyEnv(): Record<string, string> {
  const url = `http://127.0.0.1:${PROXY_PORT}`;
  return {
    HTTP_PROXY: url,
    HTTPS_PROXY: url,
    http_proxy: url,
    https_proxy: url,
    NO_PROXY: 'localhost,127.0.0.1,::1',
    no_proxy: 'localhost,127.0.0.1,::1',
  };
}

/**
 * The environment of a sandbox's agent. User processes (kernels, shell commands) see defaults, then the
 * user's variables; the agent hands them that environment (CIW_USER_ENV, JSON) and runs itself only with
 * the defaults and its own CIW_* settings, so that no variable a user chooses — LD_PRELOAD, PYTHONHOME,
 * PYTHONPATH — applies to the agent, which holds the service's channel.
 */
export function sandboxEnv(
  workspace: string,
  user: Readonly<Record<string, string>>,
  agent: Omit<AgentSettings, 'workspace' | 'userEnv' | 'proxy'>,
  network = false,
): Record<string, string> {
  const defaults = {
    PATH: '/usr/local/bin:/usr/bin:/bin',
    HOME: workspace,
    USER: 'sandbox',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
    TERM: 'dumb',
    TMPDIR: '/tmp',
    MPLBACKEND: 'Agg',
    PYTHONDONTWRITEBYTECODE: '1',
  };
  return {
    ...defaults,
    ...agentEnvironment({
      ...agent,
      workspace,
      userEnv: { ...defaults, ...(network ? proxyEnv() : {}), ...user },
      proxy: network ? { socket: PROXY_SOCKET, port: PROXY_PORT } : undefined,
    }),
  };
}
