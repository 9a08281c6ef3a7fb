/**
 * The agent's settings, as the CIW_* environment variables it reads at start (ciw_common.py and
 * ciw_supervisor.py read them): built here only, for every backend that starts the agent.
 */

export interface AgentSettings {
  /** The workspace inside the sandbox (the agent's working directory, HOME of user processes). */
  readonly workspace: string;
  /** The environment of user processes (kernels, shell commands): never applied to the agent itself. */
  readonly userEnv: Readonly<Record<string, string>>;
  /** Output cap of a call (MAX_OUTPUT_BYTES). */
  readonly maxOutputBytes: number;
  /** How long an interrupted kernel has to stop before it is restarted (INTERRUPT_GRACE_MS). */
  readonly interruptGraceMs: number;
  /** CPU seconds of one call (EXEC_CPU_LIMIT_S). */
  readonly cpuSecondsPerCall: number;
  /** rlimits the agent sets on itself before anything runs (inherited by every user process). */
  readonly rlimits?: Readonly<Record<string, number>>;
  /** The fd of the direct channel to the Python kernel (requests; replies too unless kernelOutFd). */
  readonly kernelFd?: number;
  /** The fd the Python kernel writes its replies to, when the channel is two FIFOs. */
  readonly kernelOutFd?: number;
  /** A FIFO's read end that hangs up when no service process holds the sandbox, and how long it then waits. */
  readonly lifelineFd?: number;
  readonly orphanMs?: number;
  /** Idle time after which the supervisor hibernates (becomes ciw-idle). */
  readonly idleMs?: number;
  /** Start the Python kernel at once, with these modules imported (a pooled sandbox). */
  readonly warm?: { readonly preload: readonly string[] };
  /** The egress proxy's socket inside the sandbox and the loopback port the agent relays it on. */
  readonly proxy?: { readonly socket: string; readonly port: number };
  /** Checkpoints the direct kernel keeps (CHECKPOINTS_KEPT; 0: none), and the largest file they copy. */
  readonly checkpoints?: { readonly kept: number; readonly maxFileBytes: number; readonly waitMs: number };
}

export function agentEnvironment(s: AgentSettings): Record<string, string> {
  return {
    CIW_WORKSPACE: s.workspace,
    CIW_USER_ENV: JSON.stringify(s.userEnv),
    CIW_MAX_OUTPUT_BYTES: String(s.maxOutputBytes),
    CIW_INTERRUPT_GRACE_MS: String(s.interruptGraceMs),
    CIW_CPU_SECONDS_PER_CALL: String(s.cpuSecondsPerCall),
    ...(s.rlimits ? { CIW_RLIMITS: JSON.stringify(s.rlimits) } : {}),
    ...(s.kernelFd !== undefined ? { CIW_KERNEL_FD: String(s.kernelFd) } : {}),
    ...(s.kernelOutFd !== undefined ? { CIW_KERNEL_OUT_FD: String(s.kernelOutFd) } : {}),
    ...(s.lifelineFd !== undefined ? { CIW_LIFELINE_FD: String(s.lifelineFd), CIW_ORPHAN_MS: String(s.orphanMs ?? 0) } : {}),
    ...(s.idleMs !== undefined ? { CIW_IDLE_MS: String(s.idleMs) } : {}),
    ...(s.warm ? { CIW_WARM: '1', CIW_PRELOAD: s.warm.preload.join(',') } : {}),
    ...(s.proxy ? { CIW_PROXY_SOCKET: s.proxy.socket, CIW_PROXY_PORT: String(s.proxy.port) } : {}),
    ...(s.checkpoints && s.checkpoints.kept > 0
      ? {
          CIW_CHECKPOINTS_KEPT: String(s.checkpoints.kept),
          CIW_CHECKPOINT_MAX_FILE_BYTES: String(s.checkpoints.maxFileBytes),
          CIW_CHECKPOINT_WAIT_MS: String(s.checkpoints.waitMs),
        }
      : {}),
  };
}
