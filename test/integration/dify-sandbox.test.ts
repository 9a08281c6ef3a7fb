/**
 * The dify-sandbox compatible API with the runner scripts Dify's Code node and Template Transform node send
 * (built here the way Dify's python3, nodejs and jinja2 transformers build them), on the real local backend.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY = 'dify-sandbox';
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, DIFY_SANDBOX_TIMEOUT_S: '3' }));
});
afterAll(async () => t.close());

const b64 = (inputs: object) => Buffer.from(JSON.stringify(inputs), 'utf8').toString('base64');

function python3Runner(code: string, inputs: object): string {
  return `${code}

import json
from base64 import b64decode

# decode and prepare input dict
inputs_obj = json.loads(b64decode('${b64(inputs)}').decode('utf-8'))

# execute main function
output_obj = main(**inputs_obj)

# convert output to json and print
output_json = json.dumps(output_obj, indent=4)
result = f'''<<RESULT>>{output_json}<<RESULT>>'''
print(result)
`;
}

function nodejsRunner(code: string, inputs: object): string {
  return `// declare main function
${code}

// decode and prepare input object
var inputs_obj = JSON.parse(Buffer.from('${b64(inputs)}', 'base64').toString('utf-8'))

// execute main function
var output_obj = main(inputs_obj)

// convert output to json and print
var output_json = JSON.stringify(output_obj)
var result = \`<<RESULT>>\${output_json}<<RESULT>>\`
console.log(result)
`;
}

function jinja2Runner(template: string, inputs: object): string {
  return `
import jinja2
template = jinja2.Template('''${template}''')

import json
from base64 import b64decode

# decode and prepare input dict
inputs_obj = json.loads(b64decode('${b64(inputs)}').decode('utf-8'))

# render template
output = template.render(**inputs_obj)

# print result
result = f'''<<RESULT>>{output}<<RESULT>>'''
print(result)
`;
}

/** How Dify's code executor reads the answer. */
async function run(language: string, code: string, headers: Record<string, string> = { 'x-api-key': KEY }) {
  const res = await t.app.inject({
    method: 'POST',
    url: '/v1/sandbox/run',
    headers,
    payload: { language, code, preload: '', enable_network: true },
  });
  return { status: res.statusCode, body: res.body ? JSON.parse(res.body) : null };
}
const resultOf = (stdout: string) => JSON.parse(/<<RESULT>>([\s\S]*)<<RESULT>>/.exec(stdout)![1]);

describe('/v1/sandbox/run', () => {
  it("runs Dify's python3 runner and returns the <<RESULT>> block intact", async () => {
    const code = 'def main(arg1: str, arg2: int) -> dict:\n    return {"result": arg1 * arg2, "unicode": "näive ✓", "quote": "\\"x\\""}';
    const r = await run('python3', python3Runner(code, { arg1: 'ab', arg2: 3 }));
    expect(r.status).toBe(200);
    expect(r.body).toMatchObject({ code: 0, message: 'success', data: { error: '', exit_code: 0 } });
    expect(resultOf(r.body.data.stdout)).toEqual({ result: 'ababab', unicode: 'näive ✓', quote: '"x"' });
  });

  it("runs Dify's nodejs runner", async () => {
    const code = 'function main({a, b}) {\n  return { sum: a + b, list: [a, b] };\n}';
    const r = await run('nodejs', nodejsRunner(code, { a: 2, b: 40 }));
    expect(r.body.data.error).toBe('');
    expect(resultOf(r.body.data.stdout)).toEqual({ sum: 42, list: [2, 40] });
  });

  it("renders Dify's jinja2 runner (sent as python3)", async () => {
    const r = await run(
      'python3',
      jinja2Runner('Hello {{ name }}! {% for i in items %}[{{ i }}]{% endfor %}', { name: 'Dify', items: [1, 2] }),
    );
    expect(r.body.data.error).toBe('');
    expect(/<<RESULT>>([\s\S]*)<<RESULT>>/.exec(r.body.data.stdout)![1]).toBe('Hello Dify! [1][2]');
  });

  it('does not report stderr output of a successful script as an error', async () => {
    const code =
      'import sys, warnings\ndef main() -> dict:\n    print("progress", file=sys.stderr)\n    warnings.warn("deprecated thing")\n    return {"ok": True}';
    const r = await run('python3', python3Runner(code, {}));
    expect(r.body.data.error).toBe('');
    expect(r.body.data.stderr).toContain('progress');
    expect(resultOf(r.body.data.stdout)).toEqual({ ok: true });
  });

  it('reports a failing script and a timeout in data.error', async () => {
    const failing = await run('python3', python3Runner('def main() -> dict:\n    raise RuntimeError("nope")', {}));
    expect(failing.status).toBe(200);
    expect(failing.body.data.error).toMatch(/^process exited with code 1\n[\s\S]*RuntimeError: nope/);
    const slow = await run('python3', 'import time\ntime.sleep(30)');
    expect(slow.body.data.error).toBe('error: timeout');
  });

  it('treats sys.exit as python3 main.py would: 0 is success, another code fails with that code', async () => {
    const ok = await run('python3', 'import sys\nprint("done")\nsys.exit(0)');
    expect(ok.body.data).toMatchObject({ stdout: 'done\n', error: '', exit_code: 0 });
    const bad = await run('python3', 'import sys\nsys.exit(3)');
    expect(bad.body.data.exit_code).toBe(3);
    expect(bad.body.data.error).toMatch(/^process exited with code 3\n/);
  });

  it('keeps nothing from one call to the next', async () => {
    await run('python3', 'open("/workspace/leftover.txt", "w").write("x")\nimport builtins\nbuiltins.LEAK = 1');
    const r = await run('python3', 'import os, builtins\nprint(os.path.exists("/workspace/leftover.txt"), hasattr(builtins, "LEAK"))');
    expect(r.body.data.stdout).toBe('False False\n');
    // Each run's sandbox ends just after its answer is sent.
    for (let i = 0; i < 100 && t.service.size > 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
    expect(t.service.size).toBe(0);
  });

  it('answers a bad key with 401 and an empty body, and an unknown language with 400', async () => {
    const bad = await t.app.inject({
      method: 'POST',
      url: '/v1/sandbox/run',
      headers: { 'x-api-key': 'wrong' },
      payload: { language: 'python3', code: 'print(1)' },
    });
    expect(bad.statusCode).toBe(401);
    expect(bad.body).toBe('');
    const lang = await run('ruby', 'puts 1');
    expect(lang.status).toBe(400);
    expect(lang.body.code).toBe(-400);
  });

  it('serves the dependency endpoints', async () => {
    for (const [method, url] of [
      ['GET', '/v1/sandbox/dependencies?language=python3'],
      ['POST', '/v1/sandbox/dependencies/update'],
      ['GET', '/v1/sandbox/dependencies/refresh'],
    ] as const) {
      const r = await t.app.inject({ method, url, headers: { 'x-api-key': KEY }, payload: method === 'POST' ? {} : undefined });
      expect(JSON.parse(r.body), url).toEqual({ code: 0, message: 'success', data: { dependencies: [] } });
    }
  });
});

describe('capacity', () => {
  it('answers 503 when no sandbox can be had', async () => {
    const small = await startTestApp(localEnv({ API_KEY: KEY, MAX_SANDBOXES: '1' }));
    try {
      await small.post('/create_sandbox', {}, { 'x-api-key': KEY });
      const r = await small.app.inject({
        method: 'POST',
        url: '/v1/sandbox/run',
        headers: { 'x-api-key': KEY },
        payload: { language: 'python3', code: 'print(1)' },
      });
      expect(r.statusCode).toBe(503);
      expect(JSON.parse(r.body)).toEqual({ code: -503, message: 'Too many requests' });
    } finally {
      await small.close();
    }
  });
});
