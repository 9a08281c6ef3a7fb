/** Sandboxes with network: HTTP(S) through the filtering egress proxy, nothing else. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { startServer } from '../helpers/http-server.js';
import { localEnv } from '../helpers/local.js';

let host: Awaited<ReturnType<typeof startServer>>;
let open: TestApp;
let strict: TestApp;
let port: string;

beforeAll(async () => {
  host = await startServer({ '/secret': (_q, s) => s.end('host-only secret') });
  port = new URL(host.url).port;
  // `open` allow-lists 127.0.0.1 so a reachable destination exists without internet; `strict` does not.
  open = await startTestApp(localEnv({ OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32' }));
  strict = await startTestApp(localEnv());
});
afterAll(async () => {
  await open.close();
  await strict.close();
  await host.close();
});

const py = (lines: string[]) => lines.join('\n');
const fetchVia = (url: string) =>
  py([
    'import urllib.request, urllib.error',
    'try:',
    `    print(urllib.request.urlopen(${JSON.stringify(url)}, timeout=10).read().decode())`,
    'except urllib.error.HTTPError as e:',
    '    print("HTTP", e.code, e.read().decode().strip())',
    'except Exception as e:',
    '    print("FAILED", type(e).__name__)',
  ]);

describe('sandbox network', () => {
  it('is off by default: no proxy, no route', async () => {
    const id = (await strict.post('/create_sandbox', {})).body.sandbox_id;
    const r = await strict.post('/run_code', { sandbox_id: id, code: 'import os\nprint(os.environ.get("HTTP_PROXY"))' });
    expect(r.body.stdout).toBe('None\n');
    expect((await strict.post('/get_sandbox_info', { sandbox_id: id })).body.network).toBe(false);
  });

  it('reaches an allowed destination through the proxy, by plain HTTP and by CONNECT', async () => {
    const c = await open.post('/create_sandbox', { network: true });
    expect(c.body.info.network).toBe(true);
    const id = c.body.sandbox_id;
    // NO_PROXY sends 127.0.0.1 (the sandbox's own loopback) direct, so lift it to reach the host's.
    const plain = await open.post('/run_code', {
      sandbox_id: id,
      code: `import os\nos.environ.pop("no_proxy")\nos.environ.pop("NO_PROXY")\n${fetchVia(`http://127.0.0.1:${port}/secret`)}`,
    });
    expect(plain.body.stdout).toBe('host-only secret\n');
    const tunnel = await open.post('/run_code', {
      sandbox_id: id,
      code: py([
        'import http.client',
        'c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)',
        `c.set_tunnel("127.0.0.1", ${port})`,
        'c.request("GET", "/secret")',
        'print(c.getresponse().read().decode())',
      ]),
    });
    expect(tunnel.body.stdout).toBe('host-only secret\n');
  });

  // Only loopback destinations here: a regression must not send traffic anywhere else. Private and metadata
  // ranges are refused by the same check (literalDenied / guardedLookup), unit-tested in outbound.test.ts.
  it('refuses loopback destinations in every spelling, by HTTP and by CONNECT, unless allow-listed', async () => {
    const id = (await strict.post('/create_sandbox', { network: true })).body.sandbox_id;
    const code = py([
      'import os, urllib.request, http.client',
      'os.environ.pop("no_proxy"); os.environ.pop("NO_PROXY")',
      'opener = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))',
      'def get(url):',
      '    try:',
      '        return opener.open(url, timeout=10).read().decode()',
      '    except urllib.error.HTTPError as e:',
      '        return "HTTP %d %s" % (e.code, e.read().decode().strip())',
      `for url in ["http://127.0.0.1:${port}/secret", "http://localhost:${port}/secret", "http://127.0.0.2:${port}/secret", "http://[::ffff:127.0.0.1]:${port}/secret", "http://[::1]:${port}/secret"]:`,
      '    print(get(url))',
      'c = http.client.HTTPConnection("127.0.0.1", 3128, timeout=10)',
      `c.set_tunnel("127.0.0.1", ${port})`,
      'try:',
      '    c.request("GET", "/secret")',
      'except OSError as e:',
      '    print("CONNECT refused:", e)',
    ]);
    const r = await strict.post('/run_code', { sandbox_id: id, code, timeout: 60 });
    expect(r.body.error).toBeNull();
    const lines = r.body.stdout.trim().split('\n');
    expect(lines, r.body.output).toHaveLength(6);
    for (const line of lines.slice(0, 5)) expect(line).toMatch(/^HTTP 403 blocked by the sandbox network policy/);
    expect(lines[5]).toMatch(/CONNECT refused: Tunnel connection failed: 403/);
    expect(r.body.stdout).not.toContain('host-only secret');
  });

  it('keeps raw sockets and DNS unavailable even with network', async () => {
    const id = (await strict.post('/create_sandbox', { network: true })).body.sandbox_id;
    const r = await strict.post('/run_code', {
      sandbox_id: id,
      code: fetchVia(`http://127.0.0.1:${port}/secret`).replace(
        'urllib.request.urlopen',
        'urllib.request.build_opener(urllib.request.ProxyHandler({})).open',
      ),
    });
    expect(r.body.stdout).toMatch(/^FAILED/);
  });

  it('can be forbidden by the operator', async () => {
    const t = await startTestApp({ SANDBOX_NETWORK_ALLOWED: 'false' });
    try {
      const r = await t.post('/create_sandbox', { network: true });
      expect(r.status).toBe(403);
      expect(r.body.error.code).toBe('NETWORK_NOT_ALLOWED');
    } finally {
      await t.close();
    }
  });
});
