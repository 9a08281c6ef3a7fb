/**
 * Runs the README's curl examples, in order, against a real service on the local backend and compares
 * what they print with what the README shows (sandbox ids, times, durations, the port and the host's
 * isolation facts aside). `UPDATE_README=1 npx vitest run test/docs` writes the new outputs into the README.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { AddressInfo } from 'node:net';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

interface Example {
  command: string;
  expected: string;
}

const README = new URL('../../README.md', import.meta.url);

function readmeExamples(): Example[] {
  const readme = readFileSync(README, 'utf8');
  const section = readme.split('<!-- examples:start -->')[1].split('<!-- examples:end -->')[0];
  const examples: Example[] = [];
  // Fences at line starts only: outputs hold ``` inside JSON strings (the markdown field).
  for (const block of section.matchAll(/^```console\n([\s\S]*?)^```$/gm)) {
    for (const chunk of block[1].split(/^\$ /m).slice(1)) {
      const [command, ...out] = chunk.replace(/\n$/, '').split('\n');
      examples.push({ command, expected: out.join('\n') });
    }
  }
  return examples;
}

function normalize(text: string, port: number): string {
  return text
    .replace(/\r/g, '')
    .replace(new RegExp(`(localhost|127\\.0\\.0\\.1):(8000|${port})`, 'g'), 'HOST')
    .replace(/sbx_[0-9a-f]{24}/g, 'sbx_ID')
    .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z/g, 'TIME')
    .replace(/"duration_ms":[0-9.]+/g, '"duration_ms":N')
    .replace(/"(cpu_ms|memory_bytes|memory_peak_bytes)":(\d+|null)/g, '"$1":N')
    .replace(/"isolation":"[^"]*"/g, '"isolation":"…"')
    .replace(/exp=\d+&sig=[\w-]+/g, 'exp=E&sig=S')
    .replace(/"ready":\d+/g, '"ready":N')
    .replace(/^Date: .*\n/m, '')
    .trimEnd();
}

describe('README examples', () => {
  let t: TestApp;
  let port: number;
  const examples = readmeExamples();
  const outputs: string[] = [];

  beforeAll(async () => {
    // The defaults a user gets from ./scripts/start.sh, warm pool included.
    // A checkpoint after every call, as a person typing the commands gets (the script runs them within
    // CHECKPOINT_WAIT_MS of each other, which would make the checkpoints it shows depend on timing).
    t = await startTestApp(localEnv({ POOL_SIZE: '2', CHECKPOINT_WAIT_MS: '0' }));
    await t.app.listen({ port: 0, host: '127.0.0.1' });
    port = (t.app.server.address() as AddressInfo).port;
    const marker = '@@README-EXAMPLE-END@@';
    const script = examples
      .map((e) => `${e.command.replace(/(localhost|127\.0\.0\.1):8000/g, `127.0.0.1:${port}`)}\nprintf '\\n${marker}\\n'`)
      .join('\n');
    // Asynchronous: the service answering these requests runs in this very process.
    const run = await promisify(execFile)('bash', ['-c', script], { encoding: 'utf8', timeout: 60_000, cwd: '/tmp' });
    outputs.push(...run.stdout.split(`\n${marker}\n`).slice(0, examples.length));
    if (process.env.UPDATE_README) {
      let readme = readFileSync(README, 'utf8');
      examples.forEach((e, i) => {
        const actual = outputs[i]
          .replace(/\r/g, '')
          .replace(/^Date: .*\n/m, '')
          .replace(new RegExp(`127\\.0\\.0\\.1:${port}`, 'g'), 'localhost:8000')
          .trimEnd();
        readme = readme.replace(`$ ${e.command}\n${e.expected}`, `$ ${e.command}\n${actual}`);
      });
      writeFileSync(README, readme);
    }
  }, 90_000);
  afterAll(async () => t?.close());

  it('has examples for every endpoint', () => {
    const all = examples.map((e) => e.command).join('\n');
    for (const path of [
      '/health',
      '/create_sandbox',
      '/run_code',
      '/execute_command',
      '/write_file',
      '/upload_file',
      '/list_files',
      '/download_file',
      '/files/',
      '/get_sandbox_info',
      '/sandboxes',
      '/stop_sandbox',
    ]) {
      expect(all).toContain(path);
    }
  });

  it.each(readmeExamples().map((e, i) => [i, e.command.slice(0, 90)] as const))('example %i prints what the README shows: %s', (i) => {
    expect(normalize(outputs[i], port)).toBe(normalize(examples[i].expected, port));
  });
});
