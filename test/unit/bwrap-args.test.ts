import { describe, expect, it } from 'vitest';
import { bwrapArgs, sandboxEnv } from '../../src/backends/local/bwrap-args.js';

const input = {
  agentDir: '/run/ciw/agent',
  passwdFile: '/run/ciw/passwd',
  groupFile: '/run/ciw/group',
  rootSymlinks: { bin: 'usr/bin', lib: 'usr/lib' },
  etcEntries: ['alternatives', 'ld.so.cache'],
  workspace: '/workspace',
  workspaceBytes: 1048576,
  python: '/usr/bin/python3',
  innerUid: 1000,
  env: sandboxEnv('/workspace', { FOO: 'bar' }, { maxOutputBytes: 10, interruptGraceMs: 500, cpuSecondsPerCall: 60 }),
  hostname: 'sandbox',
};

/** Index of `flag` followed by `values` in args, or -1. */
function find(args: string[], ...seq: string[]): number {
  for (let i = 0; i + seq.length <= args.length; i++) if (seq.every((s, j) => args[i + j] === s)) return i;
  return -1;
}

describe('bwrapArgs', () => {
  const args = bwrapArgs(input);

  it('unshares every namespace, network included, and drops all capabilities', () => {
    for (const flag of [
      '--unshare-user',
      '--unshare-pid',
      '--unshare-net',
      '--unshare-ipc',
      '--unshare-uts',
      '--die-with-parent',
      '--new-session',
    ]) {
      expect(args).toContain(flag);
    }
    expect(find(args, '--cap-drop', 'ALL')).toBeGreaterThanOrEqual(0);
    expect(args).not.toContain('--share-net');
  });

  it('binds system directories read-only and never the host root or /home (its /home/user is a link to the workspace)', () => {
    expect(find(args, '--ro-bind', '/usr', '/usr')).toBeGreaterThanOrEqual(0);
    expect(find(args, '--bind', '/', '/')).toBe(-1);
    expect(args.filter((a) => a === '--bind' || a === '--dev-bind')).toEqual([]);
    expect(args.some((a) => a.startsWith('/root'))).toBe(false);
    const home = args.flatMap((a, i) => (a.startsWith('/home') ? [`${args[i - 2]} ${args[i - 1]} ${a}`] : []));
    expect(home).toEqual(['/workspace --dir /home', '--symlink /workspace /home/user']);
  });

  it('makes every writable place a size-limited tmpfs and the rest read-only', () => {
    expect(find(args, '--size', '1048576', '--tmpfs', '/workspace')).toBeGreaterThanOrEqual(0);
    expect(find(args, '--size', '1048576', '--tmpfs', '/tmp')).toBeGreaterThanOrEqual(0);
    expect(find(args, '--size', '1048576', '--tmpfs', '/dev/shm')).toBeGreaterThanOrEqual(0);
    expect(find(args, '--remount-ro', '/')).toBeGreaterThan(args.indexOf('/workspace'));
    expect(find(args, '--remount-ro', '/dev')).toBeGreaterThan(args.indexOf('/dev/shm'));
    expect(args.filter((a, i) => a === '--tmpfs' && args[i - 2] !== '--size')).toEqual([]);
  });

  it('forbids nested user namespaces', () => {
    expect(args).toContain('--disable-userns');
  });

  it('clears the environment before setting only the listed variables', () => {
    const clear = args.indexOf('--clearenv');
    const setenvs = args.map((a, i) => (a === '--setenv' ? i : -1)).filter((i) => i >= 0);
    expect(clear).toBeGreaterThanOrEqual(0);
    expect(setenvs.every((i) => i > clear)).toBe(true);
    expect(find(args, '--setenv', 'FOO', 'bar')).toBe(-1); // user variables travel in CIW_USER_ENV only
    expect(JSON.parse(args[args.indexOf('CIW_USER_ENV') + 1]).FOO).toBe('bar');
    expect(find(args, '--setenv', 'CIW_WORKSPACE', '/workspace')).toBeGreaterThan(clear);
  });

  it('recreates merged-/usr symlinks and ends with the agent command', () => {
    expect(find(args, '--symlink', 'usr/bin', '/bin')).toBeGreaterThanOrEqual(0);
    expect(args.slice(-5)).toEqual(['/usr/bin/python3', '-I', '-S', '-u', '/opt/ciw/agent.py']);
  });

  it("keeps user variables out of the agent's own environment: they reach only user processes", () => {
    const env = sandboxEnv(
      '/workspace',
      { CIW_WORKSPACE: '/etc', PATH: '/x', LD_PRELOAD: '/workspace/x.so', PYTHONHOME: '/x' },
      { maxOutputBytes: 10, interruptGraceMs: 500, cpuSecondsPerCall: 60 },
    );
    expect(env.CIW_WORKSPACE).toBe('/workspace');
    expect(env.PATH).toBe('/usr/local/bin:/usr/bin:/bin');
    expect(env).not.toHaveProperty('LD_PRELOAD');
    expect(env).not.toHaveProperty('PYTHONHOME');
    const user = JSON.parse(env.CIW_USER_ENV);
    expect(user).toMatchObject({ PATH: '/x', LD_PRELOAD: '/workspace/x.so', PYTHONHOME: '/x' });
  });
});
