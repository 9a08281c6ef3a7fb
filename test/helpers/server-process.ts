/** The real server (src/server.ts) as a child process, for start-up and shutdown tests. */
import { spawn, type ChildProcess } from 'node:child_process';

export interface ServerProcess {
  readonly child: ChildProcess;
  /** Everything it printed so far (pino JSON lines). */
  output(): string;
  /** Resolves with its base URL once it listens. */
  listening(timeoutMs?: number): Promise<string>;
}

export function startServerProcess(env: Record<string, string>): ServerProcess {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/server.ts'], {
    cwd: new URL('../..', import.meta.url).pathname,
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  child.stderr!.on('data', (d) => (out += d));
  return {
    child,
    output: () => out,
    async listening(timeoutMs = 20_000) {
      const end = Date.now() + timeoutMs;
      for (;;) {
        const m = /Server listening at (http:\/\/[\d.:]+)/.exec(out);
        if (m) return m[1];
        if (Date.now() > end || child.exitCode !== null) throw new Error(`the server did not start:\n${out}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    },
  };
}
