#!/usr/bin/env node
// The checks of scripts/container-test.sh, from outside the container: node scripts/container-checks.mjs URL KEY NAME
import { execFileSync } from 'node:child_process';
import assert from 'node:assert/strict';

const [url, key, name] = process.argv.slice(2);
const auth = { authorization: `Bearer ${key}`, 'content-type': 'application/json' };
const post = async (path, body, headers = auth) => {
  const res = await fetch(`${url}${path}`, { method: 'POST', headers, body: JSON.stringify(body) });
  const text = await res.text();
  try {
    return { status: res.status, body: JSON.parse(text) };
  } catch {
    return { status: res.status, body: text };
  }
};
const step = (what) => console.log(`container-checks: ${what}`);

async function healthy(timeoutMs) {
  const end = Date.now() + timeoutMs;
  for (;;) {
    try {
      const res = await fetch(`${url}/health`, { headers: auth });
      if (res.ok) return res.json();
    } catch {
      // not listening yet
    }
    if (Date.now() > end) throw new Error(`no answer from ${url}/health:\n${execFileSync('podman', ['logs', '--tail', '30', name]).toString()}`);
    await new Promise((r) => setTimeout(r, 300));
  }
}

const health = await healthy(60_000);
step(`health: ${JSON.stringify(health)}`);
assert.equal(health.status, 'ok');
assert.equal(health.backend_ready, true);
assert.match(health.isolation, /bubblewrap/);

step('stateful run_code, and a chart as a signed URL');
const first = await post('/run_code', { conversation_id: 'c1', code: 'x = 41\nprint("ready")' });
assert.equal(first.status, 200, JSON.stringify(first.body));
assert.equal(first.body.stdout, 'ready\n');
const second = await post('/run_code', { conversation_id: 'c1', code: 'print(x + 1)' });
assert.equal(second.body.stdout, '42\n');
const chart = await post('/run_code', {
  conversation_id: 'c1',
  code: 'import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.show()',
});
const image = chart.body.results.find((r) => r.url);
assert.ok(image, JSON.stringify(chart.body));
const png = await fetch(image.url);
assert.equal(png.status, 200);
assert.equal(png.headers.get('content-type'), 'image/png');
assert.equal(Buffer.from(await png.arrayBuffer()).subarray(1, 4).toString(), 'PNG');

step("Dify's Code node: the Python and Node.js runner templates through /v1/sandbox/run");
const inputs = Buffer.from(JSON.stringify({ a: 2, b: 3 })).toString('base64');
const python =
  'def main(a: int, b: int) -> dict:\n    return {"sum": a + b}\n' +
  `import json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('${inputs}').decode('utf-8'))\n` +
  "output_obj = main(**inputs_obj)\noutput_json = json.dumps(output_obj, indent=4)\nprint(f'''<<RESULT>>{output_json}<<RESULT>>''')\n";
const node =
  'function main({a, b}) { return { sum: a + b } }\n' +
  `var inputs_obj = JSON.parse(Buffer.from('${inputs}', 'base64').toString('utf-8'))\n` +
  'var output_obj = main(inputs_obj)\nconsole.log(`<<RESULT>>${JSON.stringify(output_obj)}<<RESULT>>`)\n';
for (const [language, code] of [
  ['python3', python],
  ['nodejs', node],
]) {
  const r = await post(
    '/v1/sandbox/run',
    { language, code, preload: '', enable_network: true },
    { 'x-api-key': key, 'content-type': 'application/json' },
  );
  assert.equal(r.body.code, 0, JSON.stringify(r.body));
  assert.equal(r.body.data.error, '', JSON.stringify(r.body));
  assert.equal(JSON.parse(/<<RESULT>>([\s\S]*)<<RESULT>>/.exec(r.body.data.stdout)[1]).sum, 5, language);
}

step('no network inside a sandbox: its loopback is its own, and it has no other interface');
const net = await post('/run_code', {
  conversation_id: 'c1',
  code:
    'import socket, os\n' +
    `s = socket.socket()\ntry:\n    s.connect(("127.0.0.1", ${new URL(url).port}))\n    print("reached the service")\nexcept OSError as e:\n    print("refused", type(e).__name__)\n` +
    'print(sorted(l.split(":")[0].strip() for l in open("/proc/net/dev").readlines()[2:]))',
});
assert.match(net.body.stdout, /^refused ConnectionRefusedError\n\['lo'\]\n$/, net.body.stdout);

step('a paused conversation survives a restart of the container');
assert.equal((await post('/pause_sandbox', { conversation_id: 'c1' })).body.status, 'paused');
execFileSync('podman', ['--runtime', 'runc', 'restart', '--time', '10', name], { stdio: 'ignore' });
await healthy(60_000);
const after = await post('/run_code', { conversation_id: 'c1', code: 'print(x + 1)' });
assert.equal(after.status, 200, JSON.stringify(after.body));
assert.equal(after.body.stdout, '42\n');
assert.match(after.body.notice, /resumed/);
step('all checks passed');
