/** Options for real local-backend tests: a private runtime dir per test file, short grace. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLocalBackend, type LocalBackendOptions } from '../../src/backends/local/local-backend.js';
import { parsePolicy } from '../../src/service/outbound.js';

export function localOptions(overrides: Partial<LocalBackendOptions> = {}): LocalBackendOptions {
  return {
    rootDir: mkdtempSync(join(tmpdir(), 'ciw-test-')),
    python: '/usr/bin/python3',
    workspaceBytes: 64 * 1024 * 1024,
    maxOutputBytes: 1024 * 1024,
    interruptGraceMs: 1000,
    uidBase: 1_600_000_000 + (process.pid % 1000) * 10_000,
    uidCount: 1024,
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
    SANDBOX_UID_BASE: String(o.uidBase),
    INTERRUPT_GRACE_MS: '1000',
    SANDBOX_DISK_BYTES: String(64 * 1024 * 1024),
    ...extra,
  };
}
