/**
 * The example Dify chatflow (examples/dify-code-interpreter.yml), checked and then played through: its
 * Code nodes run on this service's dify-sandbox API as Dify's Code node would run them, and its HTTP
 * Request node's request is sent as Dify would send it (raw-text body, params, bearer key).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { parse } from 'yaml';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';
import { DIFY_HEADERS } from '../helpers/dify.js';

interface Node {
  id: string;
  data: Record<string, any>;
}
const dsl = parse(readFileSync(new URL('../../examples/dify-code-interpreter.yml', import.meta.url), 'utf8'));
const nodes: Node[] = dsl.workflow.graph.nodes;
const node = (id: string) => nodes.find((n) => n.id === id)!;

const KEY = 'example-key';
let t: TestApp;
beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, PUBLIC_BASE_URL: 'http://ciw.test:8000' }));
});
afterAll(async () => t.close());

/** Runs a Code node's Python the way Dify does: its runner script, through /v1/sandbox/run. */
async function codeNode(id: string, inputs: Record<string, unknown>): Promise<Record<string, unknown>> {
  const b64 = Buffer.from(JSON.stringify(inputs)).toString('base64');
  const runner = `${node(id).data.code}\nimport json\nfrom base64 import b64decode\ninputs_obj = json.loads(b64decode('${b64}').decode('utf-8'))\noutput_obj = main(**inputs_obj)\nprint(f'''<<RESULT>>{json.dumps(output_obj)}<<RESULT>>''')\n`;
  const res = await t.app.inject({
    method: 'POST',
    url: '/v1/sandbox/run',
    headers: { 'x-api-key': KEY },
    payload: { language: 'python3', code: runner },
  });
  const data = JSON.parse(res.body).data;
  expect(data.error, data.stderr).toBe('');
  return JSON.parse(/<<RESULT>>([\s\S]*)<<RESULT>>/.exec(data.stdout)![1]);
}

describe('the example chatflow', () => {
  it('is a well-formed chatflow whose edges join existing nodes', () => {
    expect(dsl.kind).toBe('app');
    expect(dsl.app.mode).toBe('advanced-chat');
    const ids = new Set(nodes.map((n) => n.id));
    for (const e of dsl.workflow.graph.edges) {
      expect(ids.has(e.source), e.id).toBe(true);
      expect(ids.has(e.target), e.id).toBe(true);
    }
    expect(dsl.workflow.environment_variables.map((v: { name: string }) => v.name)).toEqual(['CIW_URL', 'CIW_API_KEY']);
  });

  it("sets the HTTP node's real timeouts (timeout.read, not only the sliders' max_*) and an Idempotency-Key for its retries", () => {
    const http = node('run').data;
    // Dify's HttpRequestNodeTimeout: connect / read / write are what the node uses; max_* only bound the UI.
    expect(http.timeout).toMatchObject({ connect: 10, read: 120, write: 30 });
    expect(http.retry_config.retry_enabled).toBe(true);
    const headers = Object.fromEntries(
      String(http.headers)
        .split('\n')
        .filter(Boolean)
        .map((line) => [line.slice(0, line.indexOf(':')).trim(), line.slice(line.indexOf(':') + 1).trim()]),
    );
    expect(headers['Idempotency-Key']).toBe('{{#sys.workflow_run_id#}}-run');
  });

  it('runs end to end: model text → clean code → /run_code as Dify sends it → markdown answer, twice in one conversation', async () => {
    const http = node('run').data;
    expect(http.body.type).toBe('raw-text');
    expect(http.url).toBe('{{#env.CIW_URL#}}/run_code');
    const conversation = 'c0ffee00-1111-2222-3333-444455556666';
    const turn = async (llmText: string) => {
      const { code } = (await codeNode('clean', { text: llmText })) as { code: string };
      const params = new URLSearchParams();
      for (const line of String(http.params).split('\n').filter(Boolean)) {
        const [k, ...v] = line.split(':');
        params.set(k.trim(), v.join(':').trim().replace('{{#sys.conversation_id#}}', conversation));
      }
      const res = await t.app.inject({
        method: 'POST',
        url: `/run_code?${params}`,
        headers: { authorization: `Bearer ${KEY}`, 'content-type': 'text/plain', ...DIFY_HEADERS },
        payload: String(http.body.data[0].value).replace('{{#clean.code#}}', code),
      });
      return codeNode('show', { body: res.body, status_code: res.statusCode }) as Promise<{ markdown: string }>;
    };
    const first = await turn(
      'Here you go:\n```python\nimport matplotlib.pyplot as plt\nsquares = [x * x for x in range(-5, 6)]\nplt.plot(range(-5, 6), squares)\nprint("max", max(squares))\n```',
    );
    expect(first.markdown).toContain('max 25');
    expect(first.markdown).toMatch(
      /!\[cell1-1\.png\]\(http:\/\/ciw\.test:8000\/files\/sbx_\w+\/outputs\/cell1-1\.png\?exp=\d+&sig=[\w-]+\)/,
    );
    const second = await turn('```python\nsum(squares)\n```');
    expect(second.markdown).toContain('110');
  });
});
