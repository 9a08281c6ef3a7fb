/**
 * The service on the AgentCube backend, against the fake AgentCube on 127.0.0.1: stateless across
 * instances, the fallback without python3, error mapping, and no leaked sessions.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { agentcubeEnv } from '../helpers/local.js';
import { FakeAgentCube } from '../helpers/fake-agentcube.js';

const KEYS = 'key-a,key-b';
const asA = { authorization: 'Bearer key-a' };
const asB = { authorization: 'Bearer key-b' };
const shared = { API_KEYS: KEYS, URL_SIGNING_KEY: 'shared-signing-secret', PUBLIC_BASE_URL: 'http://ciw.test' };

let fake: FakeAgentCube;
let one: TestApp;
let two: TestApp;
beforeAll(async () => {
  fake = await new FakeAgentCube({ token: 'cluster-token' }).start();
  one = await startTestApp(agentcubeEnv(fake.url, { ...shared, AGENTCUBE_TOKEN: 'cluster-token' }));
  two = await startTestApp(agentcubeEnv(fake.url, { ...shared, AGENTCUBE_TOKEN: 'cluster-token' }));
});
afterAll(async () => {
  await one.close();
  await two.close();
  await fake.stop();
});

describe('AgentCube backend', () => {
  it('keeps a sandbox and its state across a restart of the service (the session lives in its pod); pause is a clear 409', async () => {
    const first = await startTestApp(agentcubeEnv(fake.url, { ...shared, AGENTCUBE_TOKEN: 'cluster-token' }));
    const id = (await first.post('/run_code', { conversation_id: 'restart', code: 'kept = 5' }, asA)).body.sandbox_id as string;
    const paused = await first.post('/pause_sandbox', { sandbox_id: id }, asA);
    expect(paused.status).toBe(409);
    expect(paused.body.error).toMatchObject({ code: 'PAUSE_NOT_SUPPORTED' });
    expect(paused.body.error.message).toMatch(/agentcube backend cannot pause/);
    await first.close(); // a restart: the instance goes, the session stays
    const second = await startTestApp(agentcubeEnv(fake.url, { ...shared, AGENTCUBE_TOKEN: 'cluster-token' }));
    try {
      const r = await second.post('/run_code', { sandbox_id: id, code: 'print(kept)' }, asA);
      expect(r.body).toMatchObject({ sandbox_id: id, stdout: '5\n', state_preserved: true });
    } finally {
      await second.post('/stop_sandbox', { sandbox_id: id }, asA);
      await second.close();
    }
  });

  it('serves one sandbox from two service instances: created through one, state read through the other', async () => {
    const c = await one.post('/create_sandbox', {}, asA);
    expect(c.status).toBe(200);
    const id = c.body.sandbox_id as string;
    expect(id).toMatch(/^sbx_ac_[0-9a-f-]{36}$/);
    expect(c.body.info.backend).toBe('agentcube');
    expect((await one.post('/run_code', { sandbox_id: id, code: 'x = 41' }, asA)).body.error).toBeNull();
    const r = await two.post('/run_code', { sandbox_id: id, code: 'print(x + 1)' }, asA);
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ stdout: '42\n', state_preserved: true, notice: null });
    // Files and signed links work across instances too.
    await one.post('/write_file', { sandbox_id: id, remote_path: 'out/a.txt', content: 'from one' }, asA);
    const d = await one.post('/download_file', { sandbox_id: id, remote_path: 'out/a.txt' }, asA);
    const u = new URL(d.body.download_url);
    const fetched = await two.app.inject({ method: 'GET', url: u.pathname + u.search });
    expect(fetched.statusCode).toBe(200);
    expect(fetched.body).toBe('from one');
    const listing = await two.post('/list_files', { sandbox_id: id }, asA);
    expect(listing.body.entries.map((e: { name: string }) => e.name)).toEqual(['out']);
    // Another key sees nothing, on either instance.
    expect((await two.post('/run_code', { sandbox_id: id, code: 'x' }, asB)).status).toBe(404);
    // Stopped through the second, gone for the first.
    expect((await two.post('/stop_sandbox', { sandbox_id: id }, asA)).body.status).toBe('stopped');
    const after = await one.post('/run_code', { sandbox_id: id, code: 'x' }, asA);
    expect(after.status).toBe(404);
    expect(after.body.error.code).toBe('SANDBOX_NOT_FOUND');
    // …and the first instance no longer lists it.
    const listed = await one.app.inject({ method: 'GET', url: '/sandboxes', headers: asA });
    expect(JSON.parse(listed.body).sandboxes.map((s: { id: string }) => s.id)).not.toContain(id);
  });

  it('runs shell commands as bash -c with exit codes, timeouts and rich results from the agent', async () => {
    const id = (await one.post('/create_sandbox', {}, asA)).body.sandbox_id;
    const cmd = await one.post('/execute_command', { sandbox_id: id, command: 'echo one | tr a-z A-Z && exit 3' }, asA);
    expect(cmd.body).toMatchObject({ stdout: 'ONE\n', exit_code: 3, timed_out: false });
    expect(cmd.body.notice).toMatch(/files they change are not listed/);
    const slow = await one.post('/execute_command', { sandbox_id: id, command: 'sleep 30', timeout: 1 }, asA);
    expect(slow.body).toMatchObject({ exit_code: 124, timed_out: true });
    const loop = await one.post('/run_code', { sandbox_id: id, code: 'kept = 1\nwhile True: pass', timeout: 1 }, asA);
    expect(loop.body).toMatchObject({ timed_out: true, state_preserved: true });
    expect((await one.post('/run_code', { sandbox_id: id, code: 'kept' }, asA)).body.results[0].data['text/plain']).toBe('1');
    const created = await one.post('/run_code', { sandbox_id: id, code: 'open("report.csv", "w").write("a,b\\n")' }, asA);
    expect(created.body.files.map((f: { path: string }) => f.path)).toEqual([expect.stringMatching(/\/report\.csv$/)]);
  });

  it('restarts the agent if user code kills it, and says the state is lost', async () => {
    const id = (await one.post('/create_sandbox', {}, asA)).body.sandbox_id;
    await one.post('/run_code', { sandbox_id: id, code: 'lost = 1' }, asA);
    await one.post('/execute_command', { sandbox_id: id, command: 'pkill -f "agent.py --serve"; true' }, asA);
    const r = await one.post('/run_code', { sandbox_id: id, code: 'print("back")' }, asA);
    expect(r.body).toMatchObject({ stdout: 'back\n', state_preserved: false });
    expect(r.body.notice).toMatch(/restarted/);
  });

  it('says so when a sandbox has no network switch', async () => {
    const r = await one.post('/create_sandbox', { network: true }, asA);
    expect(r.status).toBe(403);
    expect(r.body.error.message).toMatch(/CodeInterpreter/);
  });

  it('maps AgentCube errors: an expired session, an unknown CodeInterpreter, bad credentials', async () => {
    const id = (await one.post('/create_sandbox', {}, asA)).body.sandbox_id as string;
    fake.expire(id.slice('sbx_ac_'.length));
    const gone = await one.post('/run_code', { sandbox_id: id, code: '1' }, asA);
    expect(gone.status).toBe(404);
    expect(gone.body.error.message).toMatch(/AgentCube session.*no longer exists/);
    const wrongName = await startTestApp(agentcubeEnv(fake.url, { AGENTCUBE_TOKEN: 'cluster-token', AGENTCUBE_CODE_INTERPRETER: 'nope' }));
    try {
      const r = await wrongName.post('/create_sandbox', {});
      expect(r.status).toBe(503);
      expect(r.body.error.message).toMatch(/no such CodeInterpreter.*AGENTCUBE_CODE_INTERPRETER/);
    } finally {
      await wrongName.close();
    }
    const badToken = await startTestApp(agentcubeEnv(fake.url, { AGENTCUBE_TOKEN: 'wrong' }));
    try {
      const r = await badToken.post('/create_sandbox', {});
      expect(r.status).toBe(503);
      expect(r.body.error.message).toMatch(/refused the service's credentials.*AGENTCUBE_TOKEN/);
    } finally {
      await badToken.close();
    }
  });
});

describe('AgentCube without python3 in the image', () => {
  it('falls back to one script per call and says state is not kept, and why', async () => {
    const bare = await new FakeAgentCube({ python: false }).start();
    const app = await startTestApp(agentcubeEnv(bare.url));
    try {
      const id = (await app.post('/create_sandbox', {})).body.sandbox_id;
      const r = await app.post('/run_code', { sandbox_id: id, code: 'print(1)' });
      expect(r.status).toBe(200);
      expect(r.body.state_preserved).toBe(false);
      expect(r.body.notice).toMatch(/no state between calls: the stateful agent could not start/);
      expect(r.body.error.name).toBe('ScriptFailed');
      expect(r.body.stderr).toMatch(/executable file not found/);
      expect((await app.post('/execute_command', { sandbox_id: id, command: 'echo shell works' })).body.stdout).toBe('shell works\n');
    } finally {
      await app.close();
      await bare.stop();
    }
  });
});

describe('no leaked sessions', () => {
  it('deletes a session whose set-up failed', async () => {
    const broken = await new FakeAgentCube({ brokenUploads: true }).start();
    const app = await startTestApp(agentcubeEnv(broken.url));
    try {
      const r = await app.post('/create_sandbox', {});
      expect(r.status).toBe(503);
      expect(broken.log.filter((l) => l.startsWith('POST /v1/code-interpreter'))).toHaveLength(1);
      expect(broken.log.some((l) => l.startsWith('DELETE /v1/code-interpreter/sessions/'))).toBe(true);
      expect(broken.sessions.size).toBe(0);
    } finally {
      await app.close();
      await broken.stop();
    }
  });
});
