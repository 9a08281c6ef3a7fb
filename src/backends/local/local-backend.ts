/**
 * The embedded local backend: one bubblewrap sandbox per sandbox id, with the in-sandbox agent inside.
 * At start it prepares a runtime directory (a copy of the agent, passwd/group files) and proves that a
 * sandbox can start; if it cannot, it refuses to run code unless ALLOW_UNSANDBOXED is set.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Writable } from 'node:stream';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import type { BackendStatus, CreateSandboxOptions, Sandbox, SandboxBackend } from '../types.js';
import { bwrapArgs, extraPythonPath, sandboxEnv } from './bwrap-args.js';
import { INNER_UID, prepareRuntimeDir, releaseRuntimeDir } from './runtime-dir.js';
import { LocalSandbox } from './local-sandbox.js';
import { SandboxProcess, closeAll, openSandboxEnds, openServiceEnds, processStartTime, stderrPath, tailOf } from './sandbox-process.js';
import { ChannelDirs } from './channel-dirs.js';
import { findAdoptable, letGo, liveDir, writeFacts, type LiveFacts } from './adoption.js';
import { UidPool } from './uid-pool.js';
import { killAll, pidsInUidRange, pidsOfUid, processTree } from './proc.js';
import { agentSettingsOf, frameLimitsOf, maxStateBytesOf, type LocalBackendOptions } from './options.js';
import { spawnUnsandboxed } from './unsandboxed.js';
import { detectCgroups, type CgroupManager, type SandboxCgroup } from './cgroups.js';
import { startEgressProxy, type EgressProxy } from './egress-proxy.js';
import { DENIED_SYSCALLS, seccompProgram } from './seccomp.js';
import { AGENT_SOURCE } from '../agent/source.js';
import { randomBytes } from 'node:crypto';

export type { LocalBackendOptions, SandboxLimits } from './options.js';

const execFileAsync = promisify(execFile);

const WORKSPACE = '/workspace';
/** The sandbox's fds of the direct channel to its Python kernel: requests, and replies (bubblewrap mode). */
const KERNEL_FD = 3;
const KERNEL_OUT_FD = 5;
/** The sandbox's end of its lifeline (sandbox-process.ts). */
const LIFELINE_FD = 6;
const SECCOMP_FD = 4;
const READY_TIMEOUT_MS = 15_000;
/** How long a sandbox taken over from an earlier service process has to answer. */
const ADOPT_TIMEOUT_MS = 5_000;

type Mode = 'bubblewrap' | 'unsandboxed';

export function createLocalBackend(options: LocalBackendOptions): SandboxBackend {
  return new LocalBackend(options);
}

class LocalBackend implements SandboxBackend {
  readonly name = 'local';
  readonly canPause = true;
  private readonly live = new Set<LocalSandbox>();
  private readonly uids: UidPool;
  private readonly asRoot = process.getuid?.() === 0;
  private mode: Mode = 'bubblewrap';
  private current: BackendStatus = { name: 'local', ready: false, isolation: 'none', problem: 'not initialised' };
  private etcEntries: string[] = [];
  private rootSymlinks: Record<string, string> = {};
  /** Whether ciw-idle was built, so that idle supervisors can hibernate. */
  private canHibernate = false;
  private closed = false;
  private cgroups: CgroupManager | null = null;
  /** The seccomp filter's bytes, or null on an architecture without one. */
  private readonly seccomp = seccompProgram();
  /** Why the last sandbox failed to start, for the operator (never in an answer). */
  private lastStartFailure: string | null = null;
  /** Sandboxes keep running when the service process dies, for the next one to take over. */
  private readonly outlive: boolean;
  /** Sandboxes an earlier service process left running, until the service takes them over or lets them go. */
  private adoptable = new Map<string, LiveFacts & { dir: string }>();
  private channels: ChannelDirs | null = null;

  constructor(private readonly options: LocalBackendOptions) {
    this.uids = new UidPool(options.uidBase, options.uidCount);
    this.outlive = options.outliveService === true;
  }

  status(): BackendStatus {
    return this.current;
  }

  async init(): Promise<BackendStatus> {
    try {
      this.adoptable = findAdoptable(this.options.rootDir, this.outlive);
      const spare = new Set([...this.adoptable.values()].flatMap((f) => (f.uid !== undefined ? [f.uid] : [])));
      spare.forEach((uid) => this.uids.reserve(uid));
      const layout = prepareRuntimeDir(
        this.options.rootDir,
        AGENT_SOURCE,
        this.options.python,
        this.asRoot ? { base: this.options.uidBase, count: this.options.uidCount, spare } : null,
        (m) => this.log('warn', m),
      );
      this.etcEntries = layout.etcEntries;
      this.rootSymlinks = layout.rootSymlinks;
      this.canHibernate = layout.idleProgram;
      this.channels = new ChannelDirs(liveDir(this.options.rootDir));
      this.channels.refill();
      if (!layout.idleProgram && (this.options.supervisorIdleMs ?? 0) > 0) {
        this.log(
          'warn',
          'no C compiler (cc) to build ciw-idle: idle sandboxes keep their supervisor process (≈ 11 MiB more each); install gcc',
        );
      }
    } catch (err) {
      this.current = { name: this.name, ready: false, isolation: 'none', problem: (err as Error).message };
      this.log('error', this.current.problem!);
      return this.current;
    }
    this.cgroups = detectCgroups(this.options.cgroups && this.asRoot);
    this.log('info', `resource limits: ${this.cgroups.description}`);
    let version = '';
    try {
      version = (await execFileAsync('bwrap', ['--version'])).stdout.trim();
      this.mode = 'bubblewrap';
      await this.selfTest();
      const who = this.asRoot ? 'a dedicated unprivileged host uid per sandbox' : `the service's own uid ${process.getuid?.()}`;
      this.current = {
        name: this.name,
        ready: true,
        isolation:
          `${version} (user, pid, net, ipc, uts, cgroup and mount namespaces; no capabilities; no network; ${who}; ` +
          `${this.seccomp ? `seccomp refuses ${DENIED_SYSCALLS.join(', ')}` : `no seccomp filter for ${process.arch}`}); limits: ${this.cgroups.description}`,
      };
      if (!this.asRoot) this.log('warn', "not running as root: sandboxes run as the service's own uid (weaker separation from the host)");
    } catch (err) {
      const why = version
        ? `bubblewrap failed its self-test: ${this.lastStartFailure ?? (err as Error).message}`
        : 'bubblewrap (bwrap) is not installed';
      if (this.options.allowUnsandboxed) {
        this.mode = 'unsandboxed';
        this.current = { name: this.name, ready: true, isolation: `NONE (ALLOW_UNSANDBOXED=true; ${why})` };
        this.log('error', `${why}; running code WITHOUT isolation because ALLOW_UNSANDBOXED=true`);
      } else {
        this.current = {
          name: this.name,
          ready: false,
          isolation: 'none',
          problem: `${why}; ${version ? 'in a container, give it the security options of deploy/dify/compose.yaml (docs/container.md)' : 'install the Debian package bubblewrap'}, or set ALLOW_UNSANDBOXED=true to run code without isolation (unsafe)`,
        };
        this.log('error', this.current.problem!);
      }
    }
    return this.current;
  }

  async create(opts: CreateSandboxOptions): Promise<Sandbox> {
    if (this.closed) throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the local backend is shutting down');
    if (!this.current.ready)
      throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, this.current.problem ?? 'the local backend is not ready');
    const sandbox =
      this.mode === 'bubblewrap'
        ? await this.spawnBubblewrap(opts)
        : spawnUnsandboxed(opts, this.options, (workspace) => sandboxEnv(workspace, opts.env, this.agentSettings(opts)));
    this.track(sandbox);
    try {
      await sandbox.ready(READY_TIMEOUT_MS);
      // Processes forked before the cgroup was joined join it now, before any user code runs.
      await sandbox.joinLimits();
    } catch (err) {
      await sandbox.destroy();
      // The details (paths, Python's own start-up errors) are the operator's, not the caller's.
      this.lastStartFailure = `${(err as Error).message} ${sandbox.stderr.trim()}`.trim();
      this.log('error', `sandbox ${opts.id} failed to start: ${this.lastStartFailure}`);
      throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the sandbox failed to start; the service log says why', { cause: err });
    }
    return sandbox;
  }

  /**
   * Takes over sandbox `id` from the service process that started it, if it still runs: its channels are
   * opened again, its agent answers, and it is limited and watched like a sandbox started here.
   */
  async adopt(id: string): Promise<Sandbox | null> {
    const facts = this.adoptable.get(id);
    if (!facts || !this.current.ready || this.mode !== 'bubblewrap') return null;
    this.adoptable.delete(id);
    let sandbox: LocalSandbox | undefined;
    try {
      const proc = SandboxProcess.adopted(facts.pid, facts.startTime, facts.dir);
      const cgroup = this.cgroups!.create(`${id}-${facts.pid}`, this.options.limits);
      sandbox = this.sandboxOf(id, proc, { uid: facts.uid, cgroup, dir: facts.dir, warm: facts.warm, adopted: true });
      this.track(sandbox);
      await sandbox.ready(ADOPT_TIMEOUT_MS);
      await sandbox.joinLimits();
      this.log('info', `sandbox ${id} taken over from an earlier service process`);
      return sandbox;
    } catch (err) {
      this.log('warn', `sandbox ${id} could not be taken over: ${(err as Error).message} ${sandbox?.stderr.trim() ?? ''}`.trim());
      if (sandbox) await sandbox.destroy();
      else await letGo(facts, (uid) => this.reapUid(uid));
      return null;
    }
  }

  /** A sandbox of this backend until it exits (close() ends those left). */
  private track(sandbox: LocalSandbox): void {
    this.live.add(sandbox);
    sandbox.exited.then(() => this.live.delete(sandbox));
  }

  /** Ends the sandboxes of an earlier service process that this one did not take over. */
  async forgetUnadopted(): Promise<void> {
    const left = [...this.adoptable.values()];
    this.adoptable.clear();
    await Promise.all(left.map((f) => letGo(f, (uid) => this.reapUid(uid))));
    if (left.length > 0) this.log('info', `${left.length} sandbox(es) of an earlier service process were not taken over and were stopped`);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.forgetUnadopted();
    this.channels?.close();
    await Promise.all([...this.live].map((s) => s.destroy()));
    this.cgroups?.close();
    releaseRuntimeDir(this.options.rootDir);
  }

  /**
   * Starts one sandbox. Whatever it takes — a host uid, an egress proxy, a cgroup, the process — is given
   * back if a later step fails, so a create that cannot succeed (a value the OS refuses, a full disk) costs
   * nothing that lasts: repeated, it must not drain the uid range or leave proxies listening.
   */
  private async spawnBubblewrap(opts: CreateSandboxOptions): Promise<LocalSandbox> {
    let uid: number | undefined;
    try {
      uid = this.asRoot ? this.uids.acquire() : undefined;
    } catch (err) {
      throw new ServiceError(
        ErrorCode.BACKEND_UNAVAILABLE,
        `no sandbox uid is free (${(err as Error).message}); stop sandboxes or widen SANDBOX_UID_COUNT`,
        { cause: err },
      );
    }
    let proxy: EgressProxy | undefined;
    let cgroup: SandboxCgroup | undefined;
    let child: ChildProcess | undefined;
    let channelDir: string | undefined;
    let handle: SandboxProcess | undefined;
    try {
      if (opts.network) {
        const socketPath = join(this.options.rootDir, 'net', `${randomBytes(12).toString('hex')}.sock`);
        try {
          proxy = await startEgressProxy(socketPath, this.options.outbound, uid !== undefined ? { uid, gid: uid } : undefined);
        } catch (err) {
          throw new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, `could not start the sandbox's network proxy: ${(err as Error).message}`, {
            cause: err,
          });
        }
      }
      const extra = this.options.extraPythonPaths ?? [];
      const args = bwrapArgs({
        proxySocket: proxy?.socketPath,
        extraPythonPaths: extra,
        agentDir: join(this.options.rootDir, 'agent'),
        passwdFile: join(this.options.rootDir, 'passwd'),
        groupFile: join(this.options.rootDir, 'group'),
        rootSymlinks: this.rootSymlinks,
        etcEntries: this.etcEntries,
        workspace: WORKSPACE,
        workspaceBytes: this.options.workspaceBytes,
        python: this.options.python,
        innerUid: INNER_UID,
        hostname: 'sandbox',
        env: sandboxEnv(
          WORKSPACE,
          { ...(extra.length > 0 ? { PYTHONPATH: extraPythonPath(extra) } : {}), ...opts.env },
          this.agentSettings(opts, true),
          opts.network === true,
        ),
        seccompFd: this.seccomp ? SECCOMP_FD : undefined,
        // A sandbox with network needs the service's egress proxy, which ends with it: it ends too.
        outliveService: this.outlive && !opts.network,
      });
      // fds 0/1: the agent's channel; 3 and 5: the Python kernel's (FIFOs that outlive the service); 4: seccomp.
      channelDir = join(this.options.rootDir, 'live', opts.id);
      await this.channels!.take(opts.id);
      const made = openSandboxEnds(channelDir);
      const [agentIn, agentOut, kernelIn, kernelOut] = made.fifos;
      let spawned: ChildProcess;
      try {
        spawned = spawn('bwrap', args, {
          stdio: [agentIn, agentOut, made.stderr, kernelIn, this.seccomp ? 'pipe' : 'ignore', kernelOut, made.lifeline],
          env: {},
          uid,
          gid: uid,
        });
      } finally {
        closeAll([...made.fifos, made.stderr, made.lifeline]);
      }
      child = spawned;
      if (this.seccomp) {
        const filter = spawned.stdio[SECCOMP_FD] as Writable;
        filter.on('error', () => undefined); // bubblewrap gone before it read the filter: its start fails anyway
        filter.end(this.seccomp);
      }
      const dir = channelDir;
      const processHandle = SandboxProcess.ofChild(spawned, openServiceEnds(dir), () => tailOf(stderrPath(dir)));
      handle = processHandle;
      cgroup = this.cgroups!.create(`${opts.id}-${spawned.pid}`, this.options.limits);
      if (this.outlive && !opts.network && spawned.pid !== undefined) {
        writeFacts(dir, { id: opts.id, uid, pid: spawned.pid, startTime: processStartTime(spawned.pid), warm: opts.warm !== undefined });
      }
      return this.sandboxOf(opts.id, processHandle, { uid, cgroup, proxy, dir, warm: opts.warm !== undefined });
    } catch (err) {
      handle?.dispose();
      try {
        if (channelDir) rmSync(channelDir, { recursive: true, force: true });
      } catch {
        // a path the OS refused to create in the first place
      }
      if (child) {
        // Our ends of its descriptors go too: a sandbox process bubblewrap forked before it could be told
        // to die with it sees end-of-file and exits (and, as root, the uid's reaping below kills it anyway).
        for (const stream of child.stdio) stream?.destroy();
        const started = child;
        if (started.pid !== undefined && started.exitCode === null && started.signalCode === null) {
          const exited = new Promise((r) => started.once('exit', r));
          started.kill('SIGKILL');
          await exited;
        }
      }
      await cgroup?.remove();
      await proxy?.close();
      if (uid !== undefined) await this.reapUid(uid);
      this.lastStartFailure = (err as Error).message;
      this.log('error', `a sandbox failed to start: ${this.lastStartFailure}`);
      throw err instanceof ServiceError
        ? err
        : new ServiceError(ErrorCode.BACKEND_UNAVAILABLE, 'the sandbox failed to start; the service log says why', { cause: err });
    }
  }

  /** The LocalSandbox of a bubblewrap process this service started, or took over from an earlier one. */
  private sandboxOf(
    id: string,
    proc: SandboxProcess,
    held: { uid?: number; cgroup: SandboxCgroup; proxy?: EgressProxy; dir: string; warm: boolean; adopted?: boolean },
  ): LocalSandbox {
    const { uid, cgroup, proxy, dir } = held;
    return new LocalSandbox({
      cgroup,
      id,
      workspace: WORKSPACE,
      child: proc,
      graceMs: this.options.interruptGraceMs,
      frameLimits: frameLimitsOf(this.options),
      maxOutputBytes: this.options.maxOutputBytes,
      maxStateBytes: maxStateBytesOf(this.options),
      warm: held.warm,
      adopted: held.adopted,
      ...(!proxy && (this.options.checkpoints?.kept ?? 0) > 0 ? { checkpoints: { waitMs: this.options.checkpoints!.waitMs } } : {}),
      listPids: () => (uid !== undefined ? pidsInUidRange(uid, 1) : proc.pid ? [proc.pid] : []), // diagnostics, tests
      afterExit: async () => {
        if (uid !== undefined) await this.reapUid(uid);
        await cgroup.remove();
        await proxy?.close();
        rmSync(dir, { recursive: true, force: true });
      },
      // Kill everything inside (pid 1 of the sandbox — the supervisor, or bubblewrap's reaper in a sandbox
      // with network — takes its namespace with it) but not the outer bubblewrap, which then reaps it and
      // exits: no zombie is left for the host's init to collect.
      // Without a uid of its own (not root), the tree below bubblewrap: a sandbox that outlives the service is
      // not killed by bubblewrap's death.
      killTree: async () =>
        killAll((uid !== undefined ? await pidsOfUid(uid) : proc.pid ? await processTree(proc.pid) : []).filter((p) => p !== proc.pid)),
    });
  }

  /** Frees the uid of a sandbox that ended once its processes are gone (uid-pool.ts). */
  private reapUid(uid: number): Promise<void> {
    return this.uids.reap(uid, (m) => this.log('error', m));
  }

  /** In bubblewrap mode (`fifos`), the kernel's replies have a FIFO of their own, and so has the lifeline. */
  private agentSettings(opts: CreateSandboxOptions, fifos = false) {
    return agentSettingsOf(this.options, opts, {
      kernelFds: fifos ? [KERNEL_FD, KERNEL_OUT_FD] : [KERNEL_FD],
      lifelineFd: fifos && this.outlive && !opts.network ? LIFELINE_FD : undefined,
      nproc: this.cgroups?.mode === 'none',
      hibernate: this.canHibernate,
    });
  }

  private async selfTest(): Promise<void> {
    this.current = { name: this.name, ready: true, isolation: 'self-test' };
    const sandbox = await this.create({ id: 'self-test', env: {} });
    try {
      const r = await sandbox.runCode({ code: 'print(6 * 7)', timeoutMs: 10_000 });
      if (r.stdout !== '42\n') throw new Error(`unexpected self-test output ${JSON.stringify(r.output)}`);
    } finally {
      await sandbox.destroy();
    }
  }

  private log(level: 'info' | 'warn' | 'error', message: string): void {
    this.options.log?.(level, message);
  }
}
