/**
 * Pause, resume and what survives a restart, through the HTTP API over the memory backend: the service's
 * rules (ownership, retention, space, truthful notices, STATE_DIR as the only memory across processes) on
 * the real SandboxService and StateStore. The local backend's own snapshots: test/integration/durability.test.ts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startTestApp, type TestApp } from '../helpers/app.js';

const apps: TestApp[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

async function app(env: Record<string, string> = {}, now?: () => number): Promise<TestApp> {
  const a = await startTestApp(env, now);
  apps.push(a);
  return a;
}

const KEYS = { API_KEYS: 'key-one,key-two' };
const one = { 'x-api-key': 'key-one' };
const two = { 'x-api-key': 'key-two' };

describe('pause and resume', () => {
  it('pauses to disk on request (no live sandbox left) and resumes on the next call, with the same id, files and variables', async () => {
    const t = await app();
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'x = 41' });
    await t.post('/write_file', { sandbox_id: id, remote_path: 'keep.txt', content: 'kept' });
    const paused = await t.post('/pause_sandbox', { sandbox_id: id });
    expect(paused.status).toBe(200);
    expect(paused.body).toMatchObject({ sandbox_id: id, status: 'paused', saved: ['x'], not_saved: [], info: { status: 'paused' } });
    expect(paused.body.state_bytes).toBeGreaterThan(0);
    expect(t.service.size).toBe(0);
    expect(existsSync(join(t.config.STATE_DIR, id, 'state.tar'))).toBe(true);
    const info = await t.post('/get_sandbox_info', { sandbox_id: id });
    expect(info.body).toMatchObject({ status: 'paused', state_bytes: paused.body.state_bytes });
    expect(t.service.size).toBe(0); // describing it does not resume it
    const r = await t.post('/run_code', { sandbox_id: id, code: 'x + 1' });
    expect(r.body).toMatchObject({ sandbox_id: id, state_preserved: true, error: null });
    expect(r.body.results[0].data['text/plain']).toBe('42');
    expect(r.body.notice).toMatch(new RegExp(`sandbox ${id} was resumed from its pause at .* when asked to`));
    const file = await t.app.inject({ method: 'GET', url: `/files/${id}/keep.txt` });
    expect(file.body).toBe('kept');
    // The notice is told once.
    expect((await t.post('/run_code', { sandbox_id: id, code: 'x' })).body.notice).toBeNull();
  });

  it('pauses an idle sandbox instead of stopping it, and its conversation goes on', async () => {
    let now = Date.now();
    const t = await app({}, () => now);
    const id = (await t.post('/run_code', { conversation_id: 'chat-1', code: 'y = 7' })).body.sandbox_id;
    now += 1801_000;
    await t.service.reap();
    expect(t.service.size).toBe(0);
    const listed = await t.app.inject({ method: 'GET', url: '/sandboxes' });
    expect(JSON.parse(listed.body).sandboxes).toMatchObject([{ sandbox_id: id, status: 'paused' }]);
    const r = await t.post('/run_code', { conversation_id: 'chat-1', code: 'y' });
    expect(r.body).toMatchObject({ sandbox_id: id, state_preserved: true, previous_sandbox_id: null });
    expect(r.body.results[0].data['text/plain']).toBe('7');
    expect(r.body.notice).toMatch(/resumed from its pause at .* after it was idle/);
  });

  it('resume_sandbox resumes at once and says what came back; pausing a paused sandbox is a no-op', async () => {
    const t = await app();
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
    await t.post('/pause_sandbox', { sandbox_id: id });
    expect((await t.post('/pause_sandbox', { sandbox_id: id })).body.status).toBe('paused');
    const r = await t.post('/resume_sandbox', { sandbox_id: id });
    expect(r.body).toMatchObject({ sandbox_id: id, status: 'running', state_preserved: true, info: { status: 'running' } });
    expect(r.body.notice).toMatch(/was resumed/);
    expect((await t.post('/resume_sandbox', { sandbox_id: id })).body).toMatchObject({ status: 'running', notice: null });
  });

  it('another API key can neither pause, resume, use, stop nor list a paused sandbox', async () => {
    const t = await app(KEYS);
    const id = (await t.post('/create_sandbox', {}, one)).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'secret = 1' }, one);
    expect((await t.post('/pause_sandbox', { sandbox_id: id }, two)).status).toBe(404);
    expect((await t.post('/pause_sandbox', { sandbox_id: id }, one)).status).toBe(200);
    for (const path of ['/resume_sandbox', '/run_code', '/get_sandbox_info', '/list_files']) {
      const r = await t.post(path, { sandbox_id: id, code: 'secret' }, two);
      expect(r.status, path).toBe(404);
      expect(JSON.stringify(r.body), path).not.toMatch(/paused|secret/);
    }
    expect((await t.post('/stop_sandbox', { sandbox_id: id }, two)).body.status).toBe('not_found');
    expect(JSON.parse((await t.app.inject({ method: 'GET', url: '/sandboxes', headers: two })).body).sandboxes).toEqual([]);
    expect((await t.post('/run_code', { sandbox_id: id, code: 'secret' }, one)).body.results[0].data['text/plain']).toBe('1');
  });

  it('stop_sandbox deletes the stored state of a paused sandbox, and later calls are told it was stopped', async () => {
    const t = await app();
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
    await t.post('/pause_sandbox', { sandbox_id: id });
    expect((await t.post('/stop_sandbox', { sandbox_id: id })).body.status).toBe('stopped');
    expect(existsSync(join(t.config.STATE_DIR, id, 'state.tar'))).toBe(false);
    const r = await t.post('/run_code', { sandbox_id: id, code: '1' });
    expect(r.status).toBe(404);
    expect(r.body.error.message).toMatch(/was stopped at/);
  });

  it('deletes a paused sandbox after PAUSED_RETENTION_S, and its conversation gets a new sandbox that says so', async () => {
    let now = Date.now();
    const t = await app({ PAUSED_RETENTION_S: '3600' }, () => now);
    const id = (await t.post('/run_code', { conversation_id: 'c', code: 'z = 1' })).body.sandbox_id;
    await t.post('/pause_sandbox', { sandbox_id: id });
    now += 3599_000;
    await t.service.reap();
    expect(existsSync(join(t.config.STATE_DIR, id, 'state.tar'))).toBe(true);
    now += 2_000;
    await t.service.reap();
    expect(existsSync(join(t.config.STATE_DIR, id, 'state.tar'))).toBe(false);
    expect((await t.post('/run_code', { sandbox_id: id, code: 'z' })).body.error.message).toMatch(/deleted at .*PAUSED_RETENTION_S=3600/);
    const r = await t.post('/run_code', { conversation_id: 'c', code: 'z' });
    expect(r.body.sandbox_id).not.toBe(id);
    expect(r.body).toMatchObject({ state_preserved: false, previous_sandbox_id: id });
    expect(r.body.notice).toMatch(new RegExp(`new, empty sandbox .* previous sandbox ${id} ended .*PAUSED_RETENTION_S`));
    expect(r.body.error.name).toBe('NameError');
  });

  it('refuses a pause that would pass STATE_MAX_BYTES (413, nothing written) and the sandbox keeps running', async () => {
    const t = await app({ STATE_MAX_BYTES: '2000' });
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'x = 5' });
    await t.post('/write_file', { sandbox_id: id, remote_path: 'big.txt', content: 'a'.repeat(5000) });
    const r = await t.post('/pause_sandbox', { sandbox_id: id });
    expect(r.status).toBe(413);
    expect(r.body.error).toMatchObject({ code: 'STATE_STORAGE_FULL' });
    expect(r.body.error.message).toMatch(/STATE_MAX_BYTES/);
    expect(readdirSync(join(t.config.STATE_DIR, id)).filter((f) => f.startsWith('state'))).toEqual([]);
    // A fork that does not fit leaves nothing behind either.
    const before = readdirSync(t.config.STATE_DIR).sort();
    expect((await t.post('/fork_sandbox', { sandbox_id: id })).status).toBe(413);
    expect(readdirSync(t.config.STATE_DIR).sort()).toEqual(before);
    expect((await t.post('/run_code', { sandbox_id: id, code: 'x' })).body.results[0].data['text/plain']).toBe('5');
  });

  it('a damaged stored state gives a clear notice and a usable, empty sandbox under the same id (no 5xx)', async () => {
    const t = await app();
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'x = 5' });
    await t.post('/pause_sandbox', { sandbox_id: id });
    writeFileSync(join(t.config.STATE_DIR, id, 'state.tar'), 'garbage');
    const r = await t.post('/run_code', { sandbox_id: id, code: 'x' });
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ sandbox_id: id, state_preserved: false });
    expect(r.body.notice).toMatch(/could not be restored \(the stored snapshot is damaged.*\): this is an empty sandbox under the same id/);
    expect(r.body.error.name).toBe('NameError');
    expect((await t.post('/run_code', { sandbox_id: id, code: 'w = 2' })).body.error).toBeNull();
  });
});

describe('fork', () => {
  it('forks a running or a paused sandbox into a new one of the same key, and the two diverge', async () => {
    const t = await app(KEYS);
    const id = (await t.post('/create_sandbox', {}, one)).body.sandbox_id;
    await t.post('/run_code', { sandbox_id: id, code: 'x = 1' }, one);
    await t.post('/write_file', { sandbox_id: id, remote_path: 'f.txt', content: 'original' }, one);
    const f = await t.post('/fork_sandbox', { sandbox_id: id }, one);
    expect(f.status).toBe(200);
    expect(f.body).toMatchObject({
      forked_from: id,
      status: 'paused',
      saved: ['x'],
      not_saved: [],
      info: { status: 'paused', conversation_id: null },
    });
    const fork = f.body.sandbox_id;
    expect(fork).not.toBe(id);
    const first = await t.post('/run_code', { sandbox_id: fork, code: 'x = x + 10' }, one);
    expect(first.body.notice).toMatch(new RegExp(`as a fork of ${id}`));
    await t.post('/write_file', { sandbox_id: fork, remote_path: 'f.txt', content: 'changed' }, one);
    expect((await t.post('/run_code', { sandbox_id: fork, code: 'x' }, one)).body.results[0].data['text/plain']).toBe('11');
    expect((await t.post('/run_code', { sandbox_id: id, code: 'x' }, one)).body.results[0].data['text/plain']).toBe('1');
    expect((await t.app.inject({ method: 'GET', url: `/files/${id}/f.txt`, headers: one })).body).toBe('original');
    // A paused sandbox is forked from its stored state, without resuming it.
    await t.post('/pause_sandbox', { sandbox_id: id }, one);
    const again = await t.post('/fork_sandbox', { sandbox_id: id }, one);
    expect(again.body.saved).toEqual(['x']);
    expect((await t.post('/get_sandbox_info', { sandbox_id: id }, one)).body.status).toBe('paused');
    expect((await t.post('/run_code', { sandbox_id: again.body.sandbox_id, code: 'x' }, one)).body.results[0].data['text/plain']).toBe('1');
    // Another key can neither fork it nor see the forks.
    expect((await t.post('/fork_sandbox', { sandbox_id: id }, two)).status).toBe(404);
    expect((await t.post('/run_code', { sandbox_id: fork, code: 'x' }, two)).status).toBe(404);
  });

  it('refuses (429) a fork or a pause past MAX_PAUSED_SANDBOXES_PER_KEY; an idle pause past it stops the sandbox and says why', async () => {
    let now = Date.now();
    const t = await app({ MAX_PAUSED_SANDBOXES_PER_KEY: '1' }, () => now);
    const a = (await t.post('/create_sandbox', {})).body.sandbox_id;
    const b = (await t.post('/create_sandbox', {})).body.sandbox_id;
    expect((await t.post('/fork_sandbox', { sandbox_id: a })).status).toBe(200);
    const refused = await t.post('/pause_sandbox', { sandbox_id: a });
    expect(refused.status).toBe(429);
    expect(refused.body.error.message).toMatch(/MAX_PAUSED_SANDBOXES_PER_KEY/);
    expect((await t.post('/fork_sandbox', { sandbox_id: a })).status).toBe(429);
    now += 1801_000;
    await t.service.reap();
    const r = await t.post('/run_code', { sandbox_id: b, code: '1' });
    expect(r.status).toBe(404);
    expect(r.body.error.message).toMatch(/could not be paused \(this API key keeps 1 paused sandboxes.*its files and variables are lost/);
  });
});

describe('across service processes (STATE_DIR)', () => {
  it('a new service with the same STATE_DIR resumes the sandboxes the last one paused at shutdown', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciw-state-'));
    const first = await startTestApp({ STATE_DIR: dir });
    const id = (await first.post('/run_code', { conversation_id: 'chat', code: 'kept = 3' })).body.sandbox_id;
    await first.app.close();
    await first.service.close({ pauseDeadlineMs: 5_000 });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
    const second = await app({ STATE_DIR: dir });
    const r = await second.post('/run_code', { conversation_id: 'chat', code: 'kept' });
    expect(r.body).toMatchObject({ sandbox_id: id, state_preserved: true });
    expect(r.body.results[0].data['text/plain']).toBe('3');
    expect(r.body.notice).toMatch(/when the service shut down/);
  });

  it('after a crash, a sandbox never paused is reported lost, and one paused before resumes from that pause, saying what is lost', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciw-state-'));
    const first = await startTestApp({ STATE_DIR: dir });
    const never = (await first.post('/run_code', { conversation_id: 'a', code: 'v = 1' })).body.sandbox_id;
    const once = (await first.post('/run_code', { conversation_id: 'b', code: 'v = 1' })).body.sandbox_id;
    await first.post('/pause_sandbox', { sandbox_id: once });
    await first.post('/run_code', { sandbox_id: once, code: 'v = 2' }); // resumed; then the service "crashes"
    await new Promise((r) => setTimeout(r, 50)); // its records reach the disk
    const second = await app({ STATE_DIR: dir });
    const lost = await second.post('/run_code', { sandbox_id: never, code: 'v' });
    expect(lost.status).toBe(404);
    expect(lost.body.error.message).toMatch(/was lost: the service stopped unexpectedly .* never been paused/);
    const fresh = await second.post('/run_code', { conversation_id: 'a', code: 'v' });
    expect(fresh.body).toMatchObject({ state_preserved: false, previous_sandbox_id: never });
    const back = await second.post('/run_code', { conversation_id: 'b', code: 'v' });
    expect(back.body).toMatchObject({ sandbox_id: once, state_preserved: false });
    expect(back.body.results[0].data['text/plain']).toBe('1');
    expect(back.body.notice).toMatch(/before the service stopped unexpectedly; what happened after that pause is lost/);
    await first.close();
  });
});
