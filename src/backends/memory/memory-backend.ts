/**
 * An in-memory SandboxBackend for HTTP tests: files live in a Map, code runs in a tiny Python-shaped
 * interpreter (mini-python.ts), commands understand `echo` and `exit`. It runs no real code and isolates
 * nothing; it exists so the HTTP layer can be tested fast through the same interface as real backends.
 */
import { posix } from 'node:path';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import type {
  BackendStatus,
  CreateSandboxOptions,
  FileEntry,
  KernelState,
  RestoredState,
  RunCodeOptions,
  RunCodeResult,
  RunCommandOptions,
  RunCommandResult,
  Sandbox,
  SandboxBackend,
  StateSink,
} from '../types.js';
import { runMiniPython } from './mini-python.js';

const WORKSPACE = '/workspace';

export function createMemoryBackend(): SandboxBackend {
  const live = new Set<MemorySandbox>();
  const status: BackendStatus = { name: 'memory', ready: true, isolation: 'none (in-memory test double; runs no real code)' };
  return {
    name: 'memory',
    canPause: true,
    init: async () => status,
    status: () => status,
    create: async (opts: CreateSandboxOptions) => {
      const s = new MemorySandbox(opts.id, () => live.delete(s));
      live.add(s);
      return s;
    },
    close: async () => {
      for (const s of live) s.dead = true;
      live.clear();
    },
  };
}

class MemorySandbox implements Sandbox {
  readonly workspace = WORKSPACE;
  dead = false;
  private readonly ns = new Map<string, number | string>();
  private readonly store = new Map<string, { data: Buffer; modifiedMs: number }>();
  private cell = 0;

  constructor(
    readonly id: string,
    private readonly forget: () => void,
  ) {}

  async destroy(): Promise<void> {
    this.dead = true;
    this.forget();
  }

  /** Its files and variables as JSON (a test double's snapshot: the real backends' are made inside the sandbox). */
  async saveState(sink: StateSink): Promise<{ kernels: KernelState[] }> {
    this.alive();
    const files = [...this.store].map(([path, f]) => [path, f.data.toString('base64'), f.modifiedMs]);
    const data = Buffer.from(JSON.stringify({ version: 1, ns: [...this.ns], files }));
    sink.start(data.length);
    await sink.write(data);
    return { kernels: [{ language: 'python', names: [...this.ns.keys()].sort(), skipped: [] }] };
  }

  async restoreState(state: Buffer): Promise<RestoredState> {
    this.alive();
    let parsed: { version: number; ns: Array<[string, number | string]>; files: Array<[string, string, number]> };
    try {
      parsed = JSON.parse(state.toString('utf8'));
      if (parsed.version !== 1 || !Array.isArray(parsed.ns) || !Array.isArray(parsed.files)) throw new Error('not a snapshot');
    } catch (err) {
      throw new ServiceError(ErrorCode.STATE_CORRUPT, `the stored snapshot is damaged (${(err as Error).message})`);
    }
    for (const [name, value] of parsed.ns) this.ns.set(name, value);
    for (const [path, data, modifiedMs] of parsed.files) this.store.set(path, { data: Buffer.from(data, 'base64'), modifiedMs });
    return { kernels: [{ language: 'python', names: [...this.ns.keys()].sort(), skipped: [] }], skippedFiles: [] };
  }

  private alive(): void {
    if (this.dead) throw new ServiceError(ErrorCode.SANDBOX_LOST, 'the sandbox was stopped');
  }

  private resolve(path: string): string {
    if (path === '' || path.includes('\0')) throw new ServiceError(ErrorCode.BAD_PATH, 'path must be a non-empty string without NUL bytes');
    const full = posix.normalize(posix.isAbsolute(path) ? path : posix.join(WORKSPACE, path));
    if (full !== WORKSPACE && !full.startsWith(WORKSPACE + '/')) {
      throw new ServiceError(ErrorCode.PATH_OUTSIDE_WORKSPACE, `path '${path}' resolves outside the workspace ${WORKSPACE}`);
    }
    return full.replace(/\/$/, '');
  }

  private isDir(full: string): boolean {
    if (full === WORKSPACE) return true;
    for (const key of this.store.keys()) if (key.startsWith(full + '/')) return true;
    return false;
  }

  async runCode(options: RunCodeOptions): Promise<RunCodeResult> {
    this.alive();
    if (options.language && options.language !== 'python') {
      throw new ServiceError(ErrorCode.UNSUPPORTED_LANGUAGE, 'the memory backend only runs its mini-Python');
    }
    const r = runMiniPython(options.code, this.ns, ++this.cell);
    if (r.stdout) options.onOutput?.('stdout', r.stdout);
    return {
      stdout: r.stdout,
      stderr: '',
      output: r.stdout,
      outputTruncated: false,
      results: r.results,
      error: r.error,
      timedOut: false,
      statePreserved: true,
      durationMs: 0,
      files: [],
      filesTruncated: false,
    };
  }

  async runCommand(options: RunCommandOptions): Promise<RunCommandResult> {
    this.alive();
    let stdout = '';
    let exitCode = 0;
    for (const part of options.command.split(/\s*(?:&&|;)\s*/)) {
      const m = /^(echo|exit)\b\s*(.*)$/.exec(part.trim());
      if (!m) {
        const name = part.trim().split(/\s+/)[0];
        return this.commandResult(stdout, `bash: ${name}: command not found\n`, 127, options);
      }
      if (m[1] === 'exit') {
        exitCode = Number(m[2] || 0);
        break;
      }
      stdout += m[2].replace(/^(['"])(.*)\1$/, '$2') + '\n';
    }
    return this.commandResult(stdout, '', exitCode, options);
  }

  private commandResult(stdout: string, stderr: string, exitCode: number, options: RunCommandOptions): RunCommandResult {
    if (stdout) options.onOutput?.('stdout', stdout);
    if (stderr) options.onOutput?.('stderr', stderr);
    const error = exitCode === 0 ? null : { name: 'CommandFailed', value: `exit code ${exitCode}`, traceback: '' };
    return {
      stdout,
      stderr,
      output: stdout + stderr,
      outputTruncated: false,
      exitCode,
      error,
      timedOut: false,
      durationMs: 0,
      files: [],
      filesTruncated: false,
    };
  }

  readonly files = {
    write: async (path: string, data: Uint8Array) => {
      this.alive();
      const full = this.resolve(path);
      if (this.isDir(full)) throw new ServiceError(ErrorCode.IS_A_DIRECTORY, `${full} is a directory, not a file`);
      this.store.set(full, { data: Buffer.from(data), modifiedMs: Date.now() });
      return { path: full, size: data.length };
    },
    read: async (path: string, maxBytes: number) => {
      this.alive();
      const full = this.resolve(path);
      const f = this.store.get(full);
      if (!f) {
        if (this.isDir(full)) throw new ServiceError(ErrorCode.IS_A_DIRECTORY, `${full} is a directory, not a file`);
        throw new ServiceError(ErrorCode.FILE_NOT_FOUND, `no such file or directory in the sandbox: ${full}`);
      }
      if (f.data.length > maxBytes) {
        throw new ServiceError(ErrorCode.FILE_TOO_LARGE, `${full} is ${f.data.length} bytes, more than the ${maxBytes}-byte limit`);
      }
      return { path: full, data: Buffer.from(f.data) };
    },
    stat: async (path: string): Promise<FileEntry> => {
      this.alive();
      const full = this.resolve(path);
      const f = this.store.get(full);
      if (f) return { name: posix.basename(full), path: full, type: 'file', size: f.data.length, modifiedMs: f.modifiedMs };
      if (this.isDir(full)) return { name: posix.basename(full), path: full, type: 'directory', size: 0, modifiedMs: 0 };
      throw new ServiceError(ErrorCode.FILE_NOT_FOUND, `no such file or directory in the sandbox: ${full}`);
    },
    list: async (path: string, options: { recursive: boolean; limit: number }) => {
      this.alive();
      const full = this.resolve(path);
      if (this.store.has(full)) throw new ServiceError(ErrorCode.NOT_A_DIRECTORY, `${full} is not a directory`);
      if (!this.isDir(full)) throw new ServiceError(ErrorCode.FILE_NOT_FOUND, `no such file or directory in the sandbox: ${full}`);
      const seen = new Map<string, FileEntry>();
      for (const [key, f] of [...this.store.entries()].sort(([a], [b]) => a.localeCompare(b))) {
        if (!key.startsWith(full + '/')) continue;
        const rest = key.slice(full.length + 1).split('/');
        const depthParts = options.recursive ? rest.map((_, i) => rest.slice(0, i + 1)) : [rest.slice(0, 1)];
        for (const parts of depthParts) {
          const p = `${full}/${parts.join('/')}`;
          if (seen.has(p)) continue;
          const isFile = p === key;
          seen.set(p, {
            name: parts[parts.length - 1],
            path: p,
            type: isFile ? 'file' : 'directory',
            size: isFile ? f.data.length : 0,
            modifiedMs: isFile ? f.modifiedMs : 0,
          });
        }
      }
      const entries = [...seen.values()];
      return { path: full, entries: entries.slice(0, options.limit), truncated: entries.length > options.limit };
    },
  };

  pids(): readonly number[] {
    return [];
  }

  onExit(): void {
    // an in-memory sandbox never dies by itself
  }
}
