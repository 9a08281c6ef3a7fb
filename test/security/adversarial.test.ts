/**
 * The adversarial suite: attacks through the API and from code inside real sandboxes. Each must fail
 * safely — a clear 4xx or a contained failure — with nothing leaked and the service healthy afterwards.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY_A = 'tenant-a-key';
const KEY_B = 'tenant-b-key';
let t: TestApp;
const as = (key: string) => ({ authorization: `Bearer ${key}` });
const postA = (path: string, body: unknown) => t.post(path, body, as(KEY_A));
const getA = (url: string) => t.app.inject({ method: 'GET', url, headers: as(KEY_A) });
let id: string;

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: `${KEY_A},${KEY_B}`, MAX_FILE_BYTES: String(1024 * 1024) }));
  id = (await postA('/create_sandbox', {})).body.sandbox_id;
  await postA('/execute_command', {
    sandbox_id: id,
    command: 'mkdir -p d && echo inside > d/ok.txt && ln -s /etc escape && ln -s /proc/1/root rootlink',
  });
});
afterAll(async () => {
  // The service is still healthy, and code still runs, after everything below.
  const h = await t.app.inject({ method: 'GET', url: '/health' });
  expect(JSON.parse(h.body).status).toBe('ok');
  expect((await postA('/run_code', { sandbox_id: id, code: 'print("still fine")' })).body.output).toBe('still fine\n');
  await t.close();
});

const TRAVERSALS = [
  '../etc/passwd',
  '../../../../etc/shadow',
  '/etc/passwd',
  '/workspace/../etc/passwd',
  'd/../../etc/passwd',
  'escape/passwd',
  'escape/../escape/hostname',
  'rootlink/etc/passwd',
  '/proc/self/environ',
  '/proc/1/environ',
];

describe('path traversal in every file endpoint', () => {
  it.each(TRAVERSALS)('download_file and list_files refuse %s', async (path) => {
    const d = await postA('/download_file', { sandbox_id: id, remote_path: path });
    expect([400, 404]).toContain(d.status);
    expect(['PATH_OUTSIDE_WORKSPACE', 'FILE_NOT_FOUND']).toContain(d.body.error.code);
    const l = await postA('/list_files', { sandbox_id: id, path });
    expect([400, 404]).toContain(l.status);
  });

  it.each(TRAVERSALS)('write_file refuses %s', async (path) => {
    const w = await postA('/write_file', { sandbox_id: id, remote_path: path, content: 'pwned' });
    expect(w.status).toBe(400);
    expect(w.body.error.code).toBe('PATH_OUTSIDE_WORKSPACE');
  });

  it('GET /files refuses encoded and raw traversal', async () => {
    for (const p of [
      '..%2Fetc%2Fpasswd',
      '%2e%2e/%2e%2e/etc/passwd',
      '..%252f..%252fetc',
      'escape/passwd',
      '%2Fetc%2Fpasswd',
      'd%2F..%2F..%2Fetc%2Fpasswd',
      'rootlink/etc/hostname',
    ]) {
      const r = await getA(`/files/${id}/${p}`);
      expect(r.statusCode, p).toBeGreaterThanOrEqual(400);
      expect(r.statusCode, p).toBeLessThan(500);
      expect(r.body).not.toMatch(/root:x:0:0/);
    }
    expect((await getA(`/files/${id}/d/ok.txt`)).body).toBe('inside\n');
  });

  it('refuses NUL bytes and absurd paths', async () => {
    expect((await postA('/write_file', { sandbox_id: id, remote_path: 'a\u0000b', content: 'x' })).status).toBe(400);
    expect((await postA('/write_file', { sandbox_id: id, remote_path: 'a/'.repeat(3000), content: 'x' })).status).toBe(400);
    const long = await postA('/write_file', { sandbox_id: id, remote_path: 'x'.repeat(300), content: 'x' });
    expect(long.status).toBeGreaterThanOrEqual(400);
    expect(long.status).toBeLessThan(500);
  });

  it('upload_file refuses a traversing remote_filename before fetching anything', async () => {
    const r = await postA('/upload_file', { sandbox_id: id, file_url: 'http://127.0.0.1:9/x', remote_filename: '../../tmp/ciw-pwned' });
    expect(r.status).toBeGreaterThanOrEqual(400);
    expect(r.status).toBeLessThan(500);
    expect(existsSync('/tmp/ciw-pwned')).toBe(false);
  });
});

describe('malformed requests', () => {
  const cases: Array<[string, string, unknown]> = [
    ['/run_code', 'code as an object', { sandbox_id: 'x', code: { a: 1 } }],
    ['/run_code', 'sandbox_id as an object', { sandbox_id: { $ne: null }, code: 'print(1)' }],
    ['/run_code', 'negative timeout', { sandbox_id: 'x', code: 'print(1)', timeout: -1 }],
    ['/run_code', 'timeout as text', { sandbox_id: 'x', code: 'print(1)', timeout: 'forever' }],
    ['/execute_command', 'env with a bad name', { sandbox_id: 'x', command: 'true', env: { 'BAD-NAME': 'x' } }],
    ['/execute_command', 'env with a non-string value', { sandbox_id: 'x', command: 'true', env: { A: { b: 1 } } }],
    ['/create_sandbox', 'env as a list', { env: ['A=1'] }],
    ['/write_file', 'content as an array', { sandbox_id: 'x', remote_path: 'a', content: ['a'] }],
    ['/write_file', 'unknown encoding', { sandbox_id: 'x', remote_path: 'a', content: 'a', encoding: 'rot13' }],
  ];
  it.each(cases)('%s with %s is a 400', async (path, _what, body) => {
    const r = await postA(path, body);
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('VALIDATION_FAILED');
  });

  it('refuses prototype pollution, broken JSON and an array body', async () => {
    for (const payload of ['{"__proto__": {"admin": true}, "code": "1", "sandbox_id": "x"}', '{"code": "1", ', '[1, 2, 3]', 'null']) {
      const r = await t.app.inject({
        method: 'POST',
        url: '/run_code',
        payload,
        headers: { ...as(KEY_A), 'content-type': 'application/json' },
      });
      expect(r.statusCode, payload).toBe(400);
    }
    expect(({} as Record<string, unknown>).admin).toBeUndefined();
  });

  it('answers a huge body with 413 without running anything', async () => {
    const r = await postA('/run_code', { sandbox_id: id, code: `x = "${'a'.repeat(4 * 1024 * 1024)}"` });
    expect(r.status).toBe(413);
  });

  it('never shows a stack trace', async () => {
    const r = await t.app.inject({
      method: 'POST',
      url: '/run_code',
      payload: '\u0000\u0001garbage',
      headers: { ...as(KEY_A), 'content-type': 'application/json' },
    });
    expect(r.statusCode).toBe(400);
    expect(r.body).not.toMatch(/at .*\.(js|ts):\d+/);
  });
});

describe('ids and ownership', () => {
  it('answers unknown, malformed and foreign ids with 404', async () => {
    for (const sid of ['sbx_000000000000000000000000', '../sbx', 'sbx_' + 'f'.repeat(100), id.toUpperCase()]) {
      expect((await postA('/run_code', { sandbox_id: sid, code: 'print(1)' })).status, sid).toBe(404);
    }
    const foreign = await t.post('/run_code', { sandbox_id: id, code: 'print(1)' }, as(KEY_B));
    expect(foreign.status).toBe(404);
    expect((await t.post('/download_file', { sandbox_id: id, remote_path: 'd/ok.txt' }, as(KEY_B))).status).toBe(404);
    expect((await t.post('/get_sandbox_info', { sandbox_id: id }, as(KEY_B))).status).toBe(404);
    expect((await t.post('/stop_sandbox', { sandbox_id: id }, as(KEY_B))).body.status).toBe('not_found');
    const list = await t.app.inject({ method: 'GET', url: '/sandboxes', headers: as(KEY_B) });
    expect(JSON.parse(list.body).sandboxes).toEqual([]);
    // A conversation id is per key too.
    const a = await t.post('/create_sandbox', { conversation_id: 'shared-name' }, as(KEY_A));
    const b = await t.post('/create_sandbox', { conversation_id: 'shared-name' }, as(KEY_B));
    expect(b.body.sandbox_id).not.toBe(a.body.sandbox_id);
  });
});

describe('attacks from inside a sandbox', () => {
  it("cannot see another sandbox's files", async () => {
    const other = (await postA('/create_sandbox', {})).body.sandbox_id;
    await postA('/write_file', { sandbox_id: other, remote_path: 'neighbour-secret-7f3a.txt', content: 'neighbour' });
    const r = await postA('/execute_command', { sandbox_id: id, command: 'find / -name "neighbour-secret-*" 2>/dev/null; echo done' });
    expect(r.body.stdout).toBe('done\n');
  });

  it('cannot gain privileges, write system directories or use nested namespaces', async () => {
    const r = await postA('/execute_command', {
      sandbox_id: id,
      command: [
        'grep -E "^(CapEff|CapBnd|NoNewPrivs)" /proc/self/status',
        'touch /usr/pwned 2>/dev/null && echo usr-writable || echo usr-readonly',
        'for d in / /etc /dev /opt/ciw; do touch $d/pwned 2>/dev/null && echo $d-writable; done; echo rootfs-checked',
        'df --output=size -B1M /dev/shm | tail -1 | tr -d " "',
        'echo 1 > /proc/sys/kernel/sysrq 2>/dev/null && echo sysctl-writable || echo sysctl-readonly',
        'ls /sys 2>/dev/null | head -1; echo sys-checked',
        'unshare -U true 2>/dev/null && echo userns-allowed || echo userns-denied',
        'mount -t tmpfs none /tmp 2>/dev/null && echo mount-allowed || echo mount-denied',
        'su -c id 2>/dev/null </dev/null && echo su-worked || echo su-failed',
        'id -u',
      ].join('; '),
    });
    expect(r.body.stdout).toBe(
      [
        'CapEff:\t0000000000000000',
        'CapBnd:\t0000000000000000',
        'NoNewPrivs:\t1',
        'usr-readonly',
        'rootfs-checked',
        '64',
        'sysctl-readonly',
        'sys-checked',
        'userns-denied',
        'mount-denied',
        'su-failed',
        '1000',
        '',
      ].join('\n'),
    );
  });

  it("cannot forge the agent's replies through /proc", async () => {
    const code = [
      'import os',
      'results = []',
      '# The supervisor: agent.py without a role argument, and not this kernel (forked from it, same command line).',
      'for pid in [p for p in os.listdir("/proc") if p.isdigit() and int(p) != os.getpid()]:',
      '    try:',
      '        cmd = open(f"/proc/{pid}/cmdline", "rb").read()',
      '    except OSError:',
      '        continue',
      '    if b"agent.py" in cmd and b"--" not in cmd:',
      '        try:',
      '            fd = os.open(f"/proc/{pid}/fd/1", os.O_WRONLY)',
      '            os.write(fd, b\'{"id": 1, "ok": true, "blob": 99999999999}\\n\')',
      '            results.append("forged")',
      '        except OSError as e:',
      '            results.append(type(e).__name__)',
      'print(results)',
    ].join('\n');
    const r = await postA('/run_code', { sandbox_id: id, code });
    expect(r.body.stdout).toBe("['PermissionError']\n");
  });

  it('cannot reach the service or its secrets', async () => {
    const r = await postA('/execute_command', {
      sandbox_id: id,
      command: `cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n' | grep -c -E "${KEY_A}|${KEY_B}"; ls /root /home 2>&1 | head -2`,
    });
    expect(r.body.stdout.split('\n')[0]).toBe('0');
    expect(r.body.stdout).toMatch(/No such file or directory/);
  });
});
