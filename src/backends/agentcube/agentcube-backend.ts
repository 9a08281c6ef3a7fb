/**
 * The AgentCube backend: sandboxes are AgentCube sessions (pods scheduled by AgentCube on Kubernetes), and
 * this service keeps no state of its own about them — a sandbox id names its session, and what the service
 * needs later (owner, workspace, mode) is written into the pod — so any instance behind a load balancer can
 * serve any sandbox. Creating a sandbox creates a session through the WorkloadManager, copies the agent into
 * the pod and starts it as a daemon; a session whose setup fails is deleted, never leaked.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import type { BackendStatus, CreateSandboxOptions, Sandbox, SandboxBackend } from '../types.js';
import { AGENT_SOURCE } from '../agent/source.js';
import { AgentCubeClient, type AgentCubeSettings } from './client.js';
import { AGENT_DIR, AGENT_SOCKET, AgentCubeSandbox, type SandboxState } from './agentcube-sandbox.js';
import { agentEnvironment } from '../agent/settings.js';
import { agentRequest } from '../agent/protocol.js';

export interface AgentCubeBackendOptions extends AgentCubeSettings {
  readonly maxOutputBytes: number;
  readonly interruptGraceMs: number;
  readonly cpuSecondsPerCall: number;
  readonly log?: (level: 'info' | 'warn' | 'error', message: string) => void;
}

const ID_PREFIX = 'sbx_ac_';
const META = `${AGENT_DIR}/meta.json`;
const PING_ATTEMPTS = 25;
const PING_INTERVAL_MS = 100;

export function createAgentCubeBackend(options: AgentCubeBackendOptions): SandboxBackend {
  return new AgentCubeBackend(options);
}

class AgentCubeBackend implements SandboxBackend {
  readonly name = 'agentcube';
  readonly shared = true;
  private readonly client: AgentCubeClient;
  private current: BackendStatus = { name: 'agentcube', ready: false, isolation: 'none', problem: 'not initialised' };
  private readonly agentFiles: Array<{ name: string; data: Buffer }>;

  constructor(private readonly options: AgentCubeBackendOptions) {
    this.client = new AgentCubeClient(options);
    this.agentFiles = readdirSync(AGENT_SOURCE)
      .filter((n) => /\.(py|mjs)$/.test(n))
      .map((name) => ({ name, data: readFileSync(join(AGENT_SOURCE, name)) }));
  }

  status(): BackendStatus {
    return this.current;
  }

  async init(): Promise<BackendStatus> {
    const isolation = `AgentCube sessions (CodeInterpreter ${this.options.namespace}/${this.options.name}): pod isolation as the CodeInterpreter's runtimeClass gives it`;
    try {
      await this.client.check();
      this.current = { name: this.name, ready: true, isolation };
    } catch (err) {
      this.current = { name: this.name, ready: false, isolation, problem: (err as Error).message };
      this.options.log?.('error', this.current.problem!);
    }
    return this.current;
  }

  async create(opts: CreateSandboxOptions): Promise<Sandbox> {
    if (opts.network) {
      throw new ServiceError(
        ErrorCode.NETWORK_NOT_ALLOWED,
        'on the AgentCube backend a sandbox\'s network is set by the CodeInterpreter and the cluster\'s network policies, not per sandbox; create it without "network"',
      );
    }
    const sessionId = await this.client.createSession();
    try {
      return await this.bootstrap(sessionId, opts);
    } catch (err) {
      // Created but not handed out: delete it rather than leave it to AgentCube's idle GC.
      await this.client
        .deleteSession(sessionId)
        .catch((e: Error) => this.options.log?.('error', `could not delete AgentCube session ${sessionId}: ${e.message}`));
      throw err;
    }
  }

  private sandbox(sessionId: string, state: SandboxState): AgentCubeSandbox {
    return new AgentCubeSandbox(`${ID_PREFIX}${sessionId}`, sessionId, state, this.client, {
      maxOutputBytes: this.options.maxOutputBytes,
      graceMs: this.options.interruptGraceMs,
      restartAgent: (s) => this.startAgent(s, s.state.workspace).then((ok) => ok),
    });
  }

  private async bootstrap(sessionId: string, opts: CreateSandboxOptions): Promise<Sandbox> {
    const pwd = await this.client.execute(sessionId, ['pwd'], { timeoutMs: 30_000 });
    const workspace = pwd.stdout.trim() || '/root';
    await Promise.all(this.agentFiles.map((f) => this.client.writeFile(sessionId, `${AGENT_DIR}/${f.name}`, f.data)));
    const sandbox = this.sandbox(sessionId, { workspace, mode: 'agent', owner: opts.owner ?? '' });
    const ok = await this.startAgent(sandbox, workspace, opts.env);
    if (!ok) {
      const log = await this.client.execute(
        sessionId,
        [
          'bash',
          '-c',
          `tail -c 300 ${AGENT_DIR}/agent.log 2>/dev/null; command -v python3 >/dev/null || echo "python3 is not installed in the sandbox image"`,
        ],
        { timeoutMs: 30_000 },
      );
      const reason = `the stateful agent could not start in this sandbox image (${(log.stdout.trim() || log.stderr.trim() || 'no log').split('\n').pop()})`;
      this.options.log?.('warn', `AgentCube session ${sessionId}: ${reason}; falling back to one script per call`);
      sandbox.state = { ...sandbox.state, mode: 'script', reason };
    }
    await this.client.writeFile(sessionId, META, Buffer.from(JSON.stringify(sandbox.state)));
    return sandbox;
  }

  /** Starts the agent daemon detached from PicoD (which waits for its commands' pipes), then pings it. */
  private async startAgent(sandbox: AgentCubeSandbox, workspace: string, userEnv: Readonly<Record<string, string>> = {}): Promise<boolean> {
    // The user's variables reach only user processes (see ciw_supervisor.py); the daemon runs isolated (-I).
    const env = agentEnvironment({
      workspace,
      userEnv,
      maxOutputBytes: this.options.maxOutputBytes,
      interruptGraceMs: this.options.interruptGraceMs,
      cpuSecondsPerCall: this.options.cpuSecondsPerCall,
    });
    const script = `cd "$1" && (setsid python3 -I -S ${AGENT_DIR}/agent.py --serve "$1/${AGENT_DIR}/${AGENT_SOCKET}" > ${AGENT_DIR}/agent.log 2>&1 < /dev/null &)`;
    await this.client.execute(sandbox.sessionId, ['bash', '-c', script, 'bash', workspace], { timeoutMs: 30_000, env });
    for (let i = 0; i < PING_ATTEMPTS; i++) {
      if (await sandbox.agent(agentRequest('ping', {}), 30_000).catch(() => null)) return true;
      await new Promise((r) => setTimeout(r, PING_INTERVAL_MS));
    }
    return false;
  }

  /** A sandbox another instance created: found by its id, its state read from the pod, its owner checked. */
  async attach(id: string, owner: string | null): Promise<Sandbox | null> {
    if (!id.startsWith(ID_PREFIX)) return null;
    const sessionId = id.slice(ID_PREFIX.length);
    let state: SandboxState;
    try {
      state = JSON.parse((await this.client.download(sessionId, META)).toString('utf8')) as SandboxState;
    } catch (err) {
      if (err instanceof ServiceError && (err.code === ErrorCode.SANDBOX_NOT_FOUND || err.code === ErrorCode.FILE_NOT_FOUND)) return null;
      throw err;
    }
    return owner === null || state.owner === owner ? this.sandbox(sessionId, state) : null;
  }

  async close(): Promise<void> {
    // Sessions outlive this instance: others may serve them, and AgentCube's GC ends idle ones.
    await this.client.close();
  }
}
