/**
 * A sandbox without isolation (ALLOW_UNSANDBOXED, when bubblewrap cannot run): the agent as a plain child
 * process in a workspace directory of its own, on pipes. Nothing outlives the service: there is no pid
 * namespace to keep, and nothing a later service process could take over.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import type { CreateSandboxOptions } from '../types.js';
import { LocalSandbox } from './local-sandbox.js';
import { frameLimitsOf, maxStateBytesOf, type LocalBackendOptions } from './options.js';
import { SandboxProcess } from './sandbox-process.js';

export function spawnUnsandboxed(
  opts: CreateSandboxOptions,
  options: LocalBackendOptions,
  envOf: (workspace: string) => Record<string, string>,
): LocalSandbox {
  const workspace = join(options.rootDir, 'unsandboxed', opts.id);
  mkdirSync(workspace, { recursive: true });
  const child = spawn(options.python, ['-I', '-S', '-u', join(options.rootDir, 'agent', 'agent.py')], {
    stdio: ['pipe', 'pipe', 'pipe', 'pipe'],
    cwd: workspace,
    env: envOf(workspace),
    detached: true,
  });
  let stderr = '';
  child.stderr.on('data', (chunk: Buffer) => (stderr = (stderr + chunk.toString('utf8')).slice(-4000)));
  const kernel = child.stdio[3] as Duplex;
  const proc = SandboxProcess.ofChild(
    child,
    { stdin: child.stdin, stdout: child.stdout, kernelIn: kernel, kernelOut: kernel },
    () => stderr,
  );
  const sandbox = new LocalSandbox({
    id: opts.id,
    workspace,
    child: proc,
    graceMs: options.interruptGraceMs,
    frameLimits: frameLimitsOf(options),
    maxOutputBytes: options.maxOutputBytes,
    maxStateBytes: maxStateBytesOf(options),
    warm: opts.warm !== undefined,
    listPids: () => (child.pid ? [child.pid] : []),
    killTree: () => {
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    },
  });
  sandbox.exited.then(() => rmSync(workspace, { recursive: true, force: true }));
  return sandbox;
}
