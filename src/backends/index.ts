/** The one switch on the configured backend. */
import type { Config } from '../config.js';
import type { SandboxBackend } from './types.js';
import { createLocalBackend } from './local/local-backend.js';
import { createMemoryBackend } from './memory/memory-backend.js';
import { createPooledBackend } from './pool.js';
import { createAgentCubeBackend } from './agentcube/agentcube-backend.js';

export function createBackend(config: Config, log?: (level: 'info' | 'warn' | 'error', message: string) => void): SandboxBackend {
  switch (config.SANDBOX_BACKEND) {
    case 'memory':
      return createMemoryBackend();
    case 'agentcube':
      if (!config.AGENTCUBE_WORKLOAD_MANAGER_URL || !config.AGENTCUBE_ROUTER_URL) {
        throw new Error('invalid configuration: SANDBOX_BACKEND=agentcube needs AGENTCUBE_WORKLOAD_MANAGER_URL and AGENTCUBE_ROUTER_URL');
      }
      return createAgentCubeBackend({
        workloadManagerUrl: config.AGENTCUBE_WORKLOAD_MANAGER_URL.replace(/\/+$/, ''),
        routerUrl: config.AGENTCUBE_ROUTER_URL.replace(/\/+$/, ''),
        namespace: config.AGENTCUBE_NAMESPACE,
        name: config.AGENTCUBE_CODE_INTERPRETER,
        token: config.AGENTCUBE_TOKEN || undefined,
        tokenFile: config.AGENTCUBE_TOKEN_FILE || undefined,
        createTimeoutMs: config.AGENTCUBE_CREATE_TIMEOUT_S * 1000,
        requestTimeoutMs: config.AGENTCUBE_REQUEST_TIMEOUT_S * 1000,
        maxOutputBytes: config.MAX_OUTPUT_BYTES,
        interruptGraceMs: config.INTERRUPT_GRACE_MS,
        cpuSecondsPerCall: config.EXEC_CPU_LIMIT_S,
        log,
      });
    case 'local': {
      const local = createLocalBackend({
        rootDir: config.SANDBOX_ROOT,
        python: config.SANDBOX_PYTHON,
        workspaceBytes: config.SANDBOX_DISK_BYTES,
        maxOutputBytes: config.MAX_OUTPUT_BYTES,
        maxFileBytes: config.MAX_FILE_BYTES,
        interruptGraceMs: config.INTERRUPT_GRACE_MS,
        supervisorIdleMs: config.SUPERVISOR_IDLE_MS,
        uidBase: config.SANDBOX_UID_BASE,
        uidCount: config.SANDBOX_UID_COUNT,
        allowUnsandboxed: config.ALLOW_UNSANDBOXED,
        cgroups: config.SANDBOX_CGROUPS,
        checkpoints: { kept: config.CHECKPOINTS_KEPT, maxFileBytes: config.CHECKPOINT_MAX_FILE_BYTES, waitMs: config.CHECKPOINT_WAIT_MS },
        outbound: config.outbound,
        // Paused and running sandboxes are what STATE_DIR keeps: with it, they outlive a crash of the service.
        outliveService: config.STATE_DIR !== 'off',
        orphanTimeoutS: config.SANDBOX_ORPHAN_TIMEOUT_S,
        extraPythonPaths: config.SANDBOX_EXTRA_PYTHONPATH.split(':')
          .map((d) => d.trim())
          .filter(Boolean),
        limits: {
          memoryBytes: config.SANDBOX_MEMORY_BYTES,
          maxProcesses: config.SANDBOX_MAX_PROCESSES,
          cpus: config.SANDBOX_CPUS,
          cpuSecondsPerCall: config.EXEC_CPU_LIMIT_S,
          cpuSecondsPerSandbox: config.SANDBOX_CPU_LIMIT_S,
        },
        log,
      });
      const networkSize = config.SANDBOX_NETWORK_ALLOWED ? config.POOL_NETWORK_SIZE : 0;
      if (config.POOL_SIZE === 0 && networkSize === 0) return local;
      const preload = config.POOL_PRELOAD.split(',')
        .map((m) => m.trim())
        .filter(Boolean);
      return createPooledBackend(local, { size: config.POOL_SIZE, networkSize, preload, log });
    }
  }
}
