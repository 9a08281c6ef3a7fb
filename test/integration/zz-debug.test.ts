import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { backendSandbox, localEnv } from '../helpers/local.js';
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp(localEnv({}));
});
afterAll(async () => {
  await t?.close();
});
it('debug', async () => {
  const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
  for (let i = 0; i < 60; i++) await t.post('/run_code', { sandbox_id: id, code: 'print(1)' });
  const sup = backendSandbox(t.service, id).pids()[1];
  console.log('PROF\n' + readFileSync(`/proc/${sup}/root/tmp/ckprof.log`, 'utf8').split('\n').slice(-12).join('\n'));
  expect(1).toBe(1);
});
