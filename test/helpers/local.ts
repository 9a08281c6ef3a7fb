/** Options for real local-backend tests: a private runtime dir per test file, short grace. */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalBackend, type LocalBackendOptions } from '../../src/backends/local/local-backend.js';
import { parsePolicy } from '../../src/core/network-policy.js';
import type { Sandbox } from '../../src/backends/types.js';
import type { SandboxService } from '../../src/service/sandbox-service.js';

/**
 * A uid range of its own for every backend a test process makes: ranges never overlap across processes
 * (pid × 512) or within one (64 each, up to 8 at a time), because a starting backend kills whatever runs in
 * its range.
 */
let made = 0;
function uidRange(): { base: number; count: number } {
  const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
  const slot = (process.pid % Math.min(pidMax, 4_194_304)) * 512 + (made++ % 8) * 64;
  return { base: 1_600_000_000 + slot, count: 64 };
}

export function localOptions(overrides: Partial<LocalBackendOptions> = {}): LocalBackendOptions {
  const uids = uidRange();
  return {
    rootDir: mkdtempSync(join(tmpdir(), 'ciw-test-')),
    python: '/usr/bin/python3',
    workspaceBytes: 64 * 1024 * 1024,
    maxOutputBytes: 1024 * 1024,
    maxFileBytes: 100 * 1024 * 1024,
    interruptGraceMs: 1000,
    uidBase: uids.base,
    uidCount: uids.count,
    allowUnsandboxed: false,
    cgroups: true,
    outbound: parsePolicy('', ''),
    limits: { memoryBytes: 512 * 1024 * 1024, maxProcesses: 128, cpus: 1, cpuSecondsPerCall: 600 },
    ...overrides,
  };
}

export const makeLocalBackend = (overrides: Partial<LocalBackendOptions> = {}) => createLocalBackend(localOptions(overrides));

/** Env for startTestApp() that selects the real local backend. */
export function localEnv(extra: Record<string, string> = {}): Record<string, string> {
  const o = localOptions();
  return {
    SANDBOX_BACKEND: 'local',
    SANDBOX_ROOT: o.rootDir,
    STATE_DIR: join(o.rootDir, 'state'),
    SANDBOX_UID_BASE: String(o.uidBase),
    SANDBOX_UID_COUNT: String(o.uidCount),
    INTERRUPT_GRACE_MS: '1000',
    SANDBOX_DISK_BYTES: String(64 * 1024 * 1024),
    POOL_SIZE: '0',
    ...extra,
  };
}

/** Env for startTestApp() that selects the AgentCube backend, pointed at a fake. */
export function agentcubeEnv(fakeUrl: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SANDBOX_BACKEND: 'agentcube',
    AGENTCUBE_WORKLOAD_MANAGER_URL: fakeUrl,
    AGENTCUBE_ROUTER_URL: fakeUrl,
    INTERRUPT_GRACE_MS: '1000',
    ...extra,
  };
}

/** The backend's object of a live sandbox, to see its processes (reads the service's registry: tests only). */
export function backendSandbox(service: SandboxService, id: string): Sandbox {
  const registry = (service as unknown as { registry: { peek(id: string): { sandbox: Sandbox } | undefined } }).registry;
  const record = registry.peek(id);
  if (!record) throw new Error(`no live sandbox ${id}`);
  return record.sandbox;
}
