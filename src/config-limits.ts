/**
 * The settings of what each sandbox may hold (files, memory, processes, CPU, checkpoints): part of the one
 * schema of settings (config.ts, which spreads them in place), kept here to keep that file short.
 */
import { Type } from 'typebox';

const MiB = 1024 * 1024;

export const sandboxLimitSettings = {
  MAX_FILE_BYTES: Type.Integer({
    default: 100 * MiB,
    minimum: 1024,
    description: 'Largest file that may be written, uploaded or downloaded.',
  }),
  SANDBOX_DISK_BYTES: Type.Integer({
    default: 512 * MiB,
    minimum: MiB,
    description: "Size of each sandbox's workspace: a tmpfs, so a hard quota whose pages are memory.",
  }),
  SANDBOX_MEMORY_BYTES: Type.Integer({
    default: 1024 * MiB,
    minimum: 32 * MiB,
    description: 'Memory of each sandbox, all its processes and its tmpfs files together (cgroup; per process RLIMIT_DATA as well).',
  }),
  SANDBOX_MAX_PROCESSES: Type.Integer({
    default: 256,
    minimum: 8,
    description: 'Processes and threads a sandbox may have at once (cgroup pids; RLIMIT_NPROC without cgroups).',
  }),
  SANDBOX_CPUS: Type.Number({
    default: 1,
    minimum: 0,
    description: 'CPU cores a sandbox may use at once (cgroup CPU quota); 0 for no cap.',
  }),
  EXEC_CPU_LIMIT_S: Type.Number({ default: 600, minimum: 0, description: 'CPU seconds one call may use (RLIMIT_CPU); 0 for no limit.' }),
  CHECKPOINTS_KEPT: Type.Integer({
    default: 10,
    minimum: 0,
    maximum: 50,
    description:
      'Checkpoints (undo) each sandbox without network keeps: one after every run_code / execute_command — a stopped copy-on-write fork of the Python interpreter and copies of the files that changed — so /rollback can undo recent calls. Each holds one process of the sandbox and the memory and /tmp space its changes took; 0 turns the feature off.',
  }),
  CHECKPOINT_WAIT_MS: Type.Integer({
    default: 50,
    minimum: 0,
    maximum: 1000,
    description:
      "How long after a call the sandbox waits for the next one before it keeps a checkpoint: calls that come back to back share one (a checkpoint per call costs about a millisecond of CPU: a script or a benchmark firing calls would pay it on every call), and undoing the last of them undoes them all (the answer says how many). An agent's calls, seconds apart, each get their own. 0: one after every call.",
  }),
  CHECKPOINT_MAX_FILE_BYTES: Type.Integer({
    default: 32 * MiB,
    minimum: 0,
    description: 'Files larger than this are not copied for checkpoints: a rollback leaves them as they are and lists them.',
  }),
  SANDBOX_CGROUPS: Type.Boolean({
    default: true,
    description: 'Use cgroups (v2, or v1) for memory, process and CPU limits when the host allows; false to use rlimits only.',
  }),
};
