/**
 * Checkpoints under attack, on real sandboxes: another key or none, NUL and lone surrogates, a 100 MB body and
 * deep JSON on both routes; from inside, code that rewrites the checkpoint index and manifests in /tmp (they
 * are the sandbox's own files) gets 4xx answers and never makes the supervisor signal another process, write
 * outside the workspace or lose the running interpreter; the forks of one sandbox are invisible to another.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { postChunked, startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const A = { authorization: 'Bearer key-a' };
const B = { authorization: 'Bearer key-b' };
let t: TestApp;

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: 'key-a,key-b', MAX_BODY_BYTES_PER_KEY: String(8 * 1024 ** 3), CHECKPOINT_WAIT_MS: '0' }));
});
afterAll(async () => {
  await t?.close();
});

async function sandbox(): Promise<string> {
  return (await t.post('/create_sandbox', {}, A)).body.sandbox_id;
}

async function run(id: string, code: string): Promise<Record<string, any>> {
  const r = await t.post('/run_code', { sandbox_id: id, code }, A);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body;
}

const ROUTES: Array<[string, Record<string, unknown>, string[]]> = [
  ['/checkpoints', {}, []],
  ['/rollback', { checkpoint_id: 'c1' }, ['checkpoint_id']],
];

const send = (url: string, payload: Buffer | string) => postChunked(t.app, url, payload, { ...A, 'content-type': 'application/json' });

describe('checkpoint routes', () => {
  it("answer another key's sandbox with a 404 and no key with a 401, and leave its checkpoints alone", async () => {
    const id = await sandbox();
    await run(id, 'v = "mine"');
    await run(id, 'v = "still mine"');
    for (const [url, body] of ROUTES) {
      const other = await t.post(url, { sandbox_id: id, ...body }, B);
      expect(other.status, url).toBe(404);
      expect(other.body.error.code, url).toBe('SANDBOX_NOT_FOUND');
      expect(JSON.stringify(other.body)).not.toContain('mine');
      expect((await t.post(url, { sandbox_id: id, ...body }, {})).status, url).toBe(401);
    }
    const steps = await t.post('/rollback', { sandbox_id: id, steps_back: 1 }, B);
    expect(steps.status).toBe(404);
    expect((await run(id, 'print(v)')).stdout).toBe('still mine\n');
    expect((await t.post('/checkpoints', { sandbox_id: id }, A)).body.checkpoints.length).toBe(3);
  });

  it('answer NUL, lone surrogates and bad targets with a 4xx', async () => {
    const id = await sandbox();
    await run(id, 'x = 1');
    for (const bad of ['c\u00001', 'c\ud8001', '../c1', 'c1; rm -rf /']) {
      for (const [url, body, fields] of ROUTES) {
        for (const field of ['sandbox_id', ...fields]) {
          const r = await t.post(url, { sandbox_id: id, ...body, [field]: bad }, A);
          expect(r.status, `${url} ${field} ${JSON.stringify(bad)}`).toBeGreaterThanOrEqual(400);
          expect(r.status, `${url} ${field} ${JSON.stringify(bad)}`).toBeLessThan(500);
        }
      }
    }
    for (const body of [{ steps_back: 0 }, { steps_back: 51 }, { steps_back: 1.5 }, { steps_back: 1, checkpoint_id: 'c1' }]) {
      const r = await t.post('/rollback', { sandbox_id: id, ...body }, A);
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await t.post('/rollback', { sandbox_id: id, checkpoint_id: 'c999' }, A)).status).toBe(404);
  });

  it('refuse a 100 MB body at the route’s limit and deeply nested JSON', async () => {
    const id = await sandbox();
    const huge = Buffer.alloc(100 * 1024 * 1024, 0x20);
    for (const [url] of ROUTES) {
      expect((await send(url, huge)).statusCode, url).toBe(413);
      const deep = await send(url, `{"sandbox_id": "${id}", "y": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`);
      expect(deep.statusCode, url).toBe(400);
    }
  }, 60_000);
});

describe('the checkpoint store, rewritten by code in the sandbox', () => {
  it('garbage or a giant index: the list stays bounded, a rollback is a 4xx, the interpreter keeps its state', async () => {
    const id = await sandbox();
    await run(id, 'kept = 42');
    await run(id, 'import os, json\nidx = "/tmp/.ciw-checkpoints/index.json"');
    for (const payload of [
      'open(idx, "w").write("not json {")',
      'json.dump({"next": "x", "entries": [1, "a", None, {"pid": "1"}]}, open(idx, "w"))',
      'json.dump({"next": 9, "calls": 9, "entries": [{"id": "c%d" % i, "pid": 1, "manifest": "m1-1"} for i in range(100000)]}, open(idx, "w"))',
    ]) {
      await run(id, payload);
      const list = await t.post('/checkpoints', { sandbox_id: id }, A);
      expect(list.status, payload).toBe(200);
      expect(list.body.checkpoints.length, payload).toBeLessThanOrEqual(64);
      // What the garbage named is never alive (pid 1 is the supervisor, not a checkpoint); the kernel's own
      // checkpoint after this call is.
      expect(
        list.body.checkpoints.filter((c: any) => c.after === null).every((c: any) => !c.alive),
        payload,
      ).toBe(true);
      const r = await t.post('/rollback', { sandbox_id: id, checkpoint_id: payload.includes('100000') ? 'c99995' : 'c5' }, A);
      expect(r.status, payload).toBeGreaterThanOrEqual(400);
      expect(r.status, payload).toBeLessThan(500);
      expect((await run(id, 'print(kept)')).stdout, payload).toBe('42\n');
    }
  });

  it('a manifest that names places outside the workspace is refused before anything is touched', async () => {
    const id = await sandbox();
    await run(id, 'state = "before"');
    await run(id, 'state = "after"');
    const list = (await t.post('/checkpoints', { sandbox_id: id }, A)).body.checkpoints;
    const target = list[0].id;
    const tamper = await run(
      id,
      [
        'import json, glob',
        'for m in glob.glob("/tmp/.ciw-checkpoints/manifests/*.json"):',
        '    d = json.load(open(m))',
        '    d["entries"]["/opt/ciw/evil.py"] = ["f", 0, 3, 420, "0" * 64]',
        '    d["entries"]["/workspace/../etc/x"] = ["d", 0, 0, 493, None]',
        '    json.dump(d, open(m, "w"))',
        'print("done")',
      ].join('\n'),
    );
    expect(tamper.stdout).toBe('done\n');
    const r = await t.post('/rollback', { sandbox_id: id, checkpoint_id: target }, A);
    expect(r.status, JSON.stringify(r.body)).toBe(409);
    expect(r.body.error.code).toBe('CHECKPOINT_LOST');
    // Nothing was touched: the interpreter runs on with its state, the checkpoints are all there.
    expect((await run(id, 'print(state)')).stdout).toBe('after\n');
    const again = (await t.post('/checkpoints', { sandbox_id: id }, A)).body.checkpoints;
    expect(again.filter((c: any) => c.alive).length).toBeGreaterThanOrEqual(2);
  });

  it("one sandbox's forks are invisible to another's code", async () => {
    const one = await sandbox();
    const two = await sandbox();
    for (let i = 0; i < 3; i++) await run(one, `a${i} = ${i}`);
    await run(two, 'b = 1');
    const count =
      'import os\nprint(sum(1 for p in os.listdir("/proc") if p.isdigit() and open(f"/proc/{p}/comm").read().strip() == "ciw-checkpoint"))';
    const listedTwo = (await t.post('/checkpoints', { sandbox_id: two }, A)).body.checkpoints.length;
    expect(listedTwo).toBe(1);
    expect(Number((await run(two, count)).stdout)).toBe(listedTwo);
    expect((await t.post('/checkpoints', { sandbox_id: one }, A)).body.checkpoints.length).toBeGreaterThanOrEqual(3);
  });
});
