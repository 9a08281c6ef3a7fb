/**
 * The one conformance suite every SandboxBackend runs. Code uses only the subset of Python that the
 * in-memory backend's interpreter understands, so the same assertions hold for every backend. A backend
 * may skip a case only by naming it in `skip` with a reason.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { randomBytes } from 'node:crypto';
import type { Sandbox, SandboxBackend } from '../../src/backends/types.js';
import { ServiceError } from '../../src/core/errors.js';

export interface ContractOptions {
  /** Case name → why this backend cannot pass it. */
  readonly skip?: Readonly<Record<string, string>>;
}

async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof ServiceError) return err.code;
    throw err;
  }
  throw new Error('expected the call to fail');
}

export function backendContract(name: string, makeBackend: () => SandboxBackend, options: ContractOptions = {}): void {
  describe(`SandboxBackend contract: ${name}`, () => {
    let backend: SandboxBackend;
    const made: Sandbox[] = [];
    const fresh = async () => {
      const s = await backend.create({ id: `contract-${made.length}`, env: {} });
      made.push(s);
      return s;
    };
    const test = (caseName: string, fn: () => Promise<void>) => {
      const reason = options.skip?.[caseName];
      if (reason) it.skip(`${caseName} (skipped: ${reason})`, fn);
      else it(caseName, fn);
    };

    beforeAll(async () => {
      backend = makeBackend();
      const status = await backend.init();
      expect(status.ready, status.problem).toBe(true);
    });
    afterAll(async () => {
      for (const s of made) await s.destroy();
      await backend.close();
    });

    test('keeps Python state between calls', async () => {
      const s = await fresh();
      expect((await s.runCode({ code: 'x = 41', timeoutMs: 10_000 })).error).toBeNull();
      const r = await s.runCode({ code: 'print(x + 1)', timeoutMs: 10_000 });
      expect(r.stdout).toBe('42\n');
      expect(r.output).toBe('42\n');
      expect(r.statePreserved).toBe(true);
    });

    test('returns the value of a last bare expression', async () => {
      const s = await fresh();
      const r = await s.runCode({ code: 'y = 20\ny + 22', timeoutMs: 10_000 });
      expect(r.results).toEqual([{ type: 'execute_result', data: { 'text/plain': '42' } }]);
      expect(r.stdout).toBe('');
    });

    test('reports an exception as a code error with the user line', async () => {
      const s = await fresh();
      const r = await s.runCode({ code: 'print("before")\nraise ValueError("bad input")', timeoutMs: 10_000 });
      expect(r.stdout).toBe('before\n');
      expect(r.error?.name).toBe('ValueError');
      expect(r.error?.value).toBe('bad input');
      expect(r.error?.traceback).toContain('line 2');
      expect(r.error?.traceback).toContain('ValueError: bad input');
      expect(r.error?.traceback).not.toContain('agent.py');
    });

    test('isolates the state of two sandboxes', async () => {
      const a = await fresh();
      const b = await fresh();
      await a.runCode({ code: 'secret = 1', timeoutMs: 10_000 });
      const r = await b.runCode({ code: 'secret', timeoutMs: 10_000 });
      expect(r.error?.name).toBe('NameError');
    });

    test('runs a command and reports its exit code', async () => {
      const s = await fresh();
      const ok = await s.runCommand({ command: 'echo hello && echo world', timeoutMs: 10_000 });
      expect(ok.stdout).toBe('hello\nworld\n');
      expect(ok.exitCode).toBe(0);
      const bad = await s.runCommand({ command: 'echo partial; exit 3', timeoutMs: 10_000 });
      expect(bad.exitCode).toBe(3);
      expect(bad.stdout).toBe('partial\n');
      expect(bad.timedOut).toBe(false);
    });

    test('round-trips binary files byte for byte', async () => {
      const s = await fresh();
      const data = randomBytes(256 * 1024);
      const w = await s.files.write('data/blob.bin', data);
      expect(w.size).toBe(data.length);
      expect(w.path).toBe(`${s.workspace}/data/blob.bin`);
      const r = await s.files.read('data/blob.bin', 1024 * 1024);
      expect(Buffer.compare(r.data, data)).toBe(0);
      const abs = await s.files.read(`${s.workspace}/data/blob.bin`, 1024 * 1024);
      expect(abs.data.length).toBe(data.length);
    });

    test('stats and lists files', async () => {
      const s = await fresh();
      await s.files.write('dir/a.txt', Buffer.from('aaa'));
      await s.files.write('dir/sub/b.txt', Buffer.from('bb'));
      const st = await s.files.stat('dir/a.txt');
      expect(st).toMatchObject({ name: 'a.txt', type: 'file', size: 3 });
      expect((await s.files.stat('dir')).type).toBe('directory');
      const flat = await s.files.list('dir', { recursive: false, limit: 100 });
      expect(flat.entries.map((e) => e.name).sort()).toEqual(['a.txt', 'sub']);
      const deep = await s.files.list('dir', { recursive: true, limit: 100 });
      expect(deep.entries.map((e) => e.path).sort()).toEqual([
        `${s.workspace}/dir/a.txt`,
        `${s.workspace}/dir/sub`,
        `${s.workspace}/dir/sub/b.txt`,
      ]);
      const limited = await s.files.list('dir', { recursive: true, limit: 1 });
      expect(limited.entries.length).toBe(1);
      expect(limited.truncated).toBe(true);
    });

    test('refuses paths outside the workspace and reports missing files', async () => {
      const s = await fresh();
      expect(await codeOf(s.files.read('../etc/passwd', 1000))).toBe('PATH_OUTSIDE_WORKSPACE');
      expect(await codeOf(s.files.write('/etc/evil', Buffer.from('x')))).toBe('PATH_OUTSIDE_WORKSPACE');
      expect(await codeOf(s.files.read('nope.txt', 1000))).toBe('FILE_NOT_FOUND');
      expect(await codeOf(s.files.stat('nope.txt'))).toBe('FILE_NOT_FOUND');
    });

    test('enforces the read size limit and refuses to read a directory', async () => {
      const s = await fresh();
      await s.files.write('big.bin', Buffer.alloc(2048));
      expect(await codeOf(s.files.read('big.bin', 1024))).toBe('FILE_TOO_LARGE');
      await s.files.write('d/x', Buffer.from('x'));
      expect(await codeOf(s.files.read('d', 1024))).toBe('IS_A_DIRECTORY');
    });

    test('makes a destroyed sandbox unusable, and destroy is idempotent', async () => {
      const s = await fresh();
      await s.destroy();
      await s.destroy();
      expect(await codeOf(s.runCode({ code: 'print(1)', timeoutMs: 5_000 }))).toBe('SANDBOX_LOST');
    });
  });
}
