/**
 * Done-when of the E2B front end: a script written for E2B's cloud (examples/e2b/quickstart.mjs) runs unchanged
 * against the server as ./scripts/start.sh runs it, with only E2B_API_URL, E2B_SANDBOX_URL and E2B_API_KEY set.
 */
import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, expect, it } from 'vitest';
import { startServerProcess, type ServerProcess } from '../helpers/server-process.js';

const KEY = `e2b_${'c'.repeat(40)}`;
let server: ServerProcess | undefined;
afterAll(() => {
  server?.child.kill('SIGTERM');
});

it('runs an E2B cloud script unchanged with three environment variables', async () => {
  server = startServerProcess({
    PORT: '0',
    HOST: '127.0.0.1',
    API_KEYS: KEY,
    STATE_DIR: mkdtempSync(join(tmpdir(), 'ciw-e2b-')),
    SANDBOX_ROOT: mkdtempSync(join(tmpdir(), 'ciw-e2b-root-')),
  });
  const base = await server.listening(30_000);
  const root = new URL('../..', import.meta.url).pathname;
  const { stdout } = await promisify(execFile)(process.execPath, [join(root, 'examples/e2b/quickstart.mjs')], {
    cwd: root,
    env: { PATH: process.env.PATH, E2B_API_URL: base, E2B_SANDBOX_URL: base, E2B_API_KEY: KEY },
    timeout: 90_000,
  });
  expect(stdout).toBe(
    [
      'state kept: 12',
      'chart png bytes: true',
      'rows read: 2',
      'file out: "a,b\\n1,2\\n3,4\\n"',
      'shell: data.csv out.csv outputs', // outputs/: where this service also saves figures as files
      'background server answered: true',
      'killed',
      '',
    ].join('\n'),
  );
}, 120_000);
