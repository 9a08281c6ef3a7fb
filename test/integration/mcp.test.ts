/** The MCP endpoint, driven by the official MCP client over real HTTP on 127.0.0.1, on the local backend. */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';

const KEY = 'mcp-key';
let t: TestApp;
let base: string;

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEY: KEY, PUBLIC_BASE_URL: 'http://ciw.test:8000' }));
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  base = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
});
afterAll(async () => t.close());

/** A fresh client and session per call, the way Dify uses MCP servers. */
async function withClient<T>(fn: (c: Client) => Promise<T>, { key = KEY, sse = false } = {}): Promise<T> {
  const client = new Client({ name: 'test-client', version: '1.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(`${base}/mcp${sse ? '?sse=1' : ''}`), {
    requestInit: { headers: { authorization: `Bearer ${key}` } },
  });
  await client.connect(transport);
  try {
    return await fn(client);
  } finally {
    await client.close();
  }
}

type Content = Array<{ type: string; text?: string; data?: string; mimeType?: string; uri?: string; name?: string }>;

describe('MCP server', () => {
  it('lists the tools with input schemas and descriptions', async () => {
    const { tools } = await withClient((c) => c.listTools());
    expect(tools.map((x) => x.name)).toEqual([
      'create_sandbox',
      'run_code',
      'run_command',
      'write_file',
      'upload_file',
      'read_file',
      'list_files',
      'pause_sandbox',
      'fork_sandbox',
      'stop_sandbox',
      'start_process',
      'process_output',
      'send_input',
      'signal_process',
      'list_processes',
      'create_context',
      'move_file',
      'remove_file',
      'list_checkpoints',
      'rollback',
    ]);
    const run = tools.find((x) => x.name === 'run_code')!;
    expect(run.description).toMatch(/keep variables/);
    expect(run.inputSchema.properties).toHaveProperty('code');
    expect(run.inputSchema.required).toEqual(['code']);
    expect(run.outputSchema).toBeDefined();
  });

  it('creates a sandbox, keeps state across sessions, returns a chart as an image, and stops it', async () => {
    const created = await withClient((c) => c.callTool({ name: 'create_sandbox', arguments: {} }));
    const id = (created.structuredContent as { sandbox_id: string }).sandbox_id;
    expect(id).toMatch(/^sbx_/);
    const first = await withClient((c) => c.callTool({ name: 'run_code', arguments: { sandbox_id: id, code: 'x = 41' } }));
    expect(first.isError).toBe(false);
    const second = await withClient((c) => c.callTool({ name: 'run_code', arguments: { sandbox_id: id, code: 'print(x + 1)' } }), {
      sse: true,
    });
    expect((second.content as Content)[0].text).toBe('42');
    expect((second.structuredContent as { stdout: string }).stdout).toBe('42\n');
    const chart = await withClient((c) =>
      c.callTool({
        name: 'run_code',
        arguments: { sandbox_id: id, code: 'import matplotlib.pyplot as plt\nplt.plot([1, 4, 9])\nopen("notes.txt", "w").write("hi")' },
      }),
    );
    const content = chart.content as Content;
    const image = content.find((x) => x.type === 'image')!;
    expect(image.mimeType).toBe('image/png');
    expect(Buffer.from(image.data!, 'base64').subarray(1, 4).toString()).toBe('PNG');
    const link = content.find((x) => x.type === 'resource_link')!;
    expect(link.name).toBe('notes.txt');
    expect(link.uri).toMatch(/^http:\/\/ciw\.test:8000\/files\/sbx_\w+\/notes\.txt\?exp=\d+&sig=/);
    const read = await withClient((c) => c.callTool({ name: 'read_file', arguments: { sandbox_id: id, remote_path: 'notes.txt' } }));
    expect((read.content as Content)[0]).toEqual({ type: 'text', text: 'hi' });
    const stopped = await withClient((c) => c.callTool({ name: 'stop_sandbox', arguments: { sandbox_id: id } }));
    expect(stopped.structuredContent).toEqual({ status: 'stopped', sandbox_id: id });
    const gone = await withClient((c) => c.callTool({ name: 'run_code', arguments: { sandbox_id: id, code: '1' } }));
    expect(gone.isError).toBe(true);
    expect((gone.content as Content)[0].text).toMatch(/^SANDBOX_NOT_FOUND: .*was stopped/);
  });

  it('reports failures of user code and bad arguments as isError results', async () => {
    const failed = await withClient((c) => c.callTool({ name: 'run_code', arguments: { conversation_id: 'mcp-conv', code: '1 / 0' } }));
    expect(failed.isError).toBe(true);
    expect((failed.content as Content)[0].text).toMatch(/ZeroDivisionError/);
    const bad = await withClient((c) => c.callTool({ name: 'run_code', arguments: { conversation_id: 'mcp-conv' } }));
    expect(bad.isError).toBe(true);
    expect((bad.content as Content)[0].text).toMatch(/^VALIDATION_FAILED: .*code/);
    const cmd = await withClient((c) =>
      c.callTool({ name: 'run_command', arguments: { conversation_id: 'mcp-conv', command: 'echo hi; exit 2' } }),
    );
    expect(cmd.isError).toBe(true);
    expect((cmd.content as Content)[0].text).toBe('hi\nCommandFailed: exit code 2\nexit code 2');
  });

  it('refuses clients without a valid key', async () => {
    await expect(withClient((c) => c.listTools(), { key: 'wrong' })).rejects.toThrow(/UNAUTHORIZED.*invalid API key/);
    const res = await fetch(`${base}/mcp`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(res.status).toBe(401);
  });
});

describe('MCP read_file holds no more than it can return', () => {
  it('answers a file over 2 MiB with its link alone, and a small one with its content', async () => {
    const id = await withClient(
      async (c) => (await c.callTool({ name: 'create_sandbox', arguments: {} })).structuredContent as { sandbox_id: string },
    ).then((s) => s.sandbox_id);
    await t.post(
      '/execute_command',
      { sandbox_id: id, command: 'head -c 5000000 /dev/zero > big.bin && echo small > small.txt' },
      { authorization: `Bearer ${KEY}` },
    );
    const big = await withClient((c) => c.callTool({ name: 'read_file', arguments: { sandbox_id: id, remote_path: 'big.bin' } }));
    const bigContent = big.content as Content;
    expect(bigContent[0].text).toMatch(/5000000 bytes: too large to return here/);
    expect(bigContent[1].type).toBe('resource_link');
    expect(JSON.stringify(big).length).toBeLessThan(10_000);
    const small = await withClient((c) => c.callTool({ name: 'read_file', arguments: { sandbox_id: id, remote_path: 'small.txt' } }));
    expect((small.content as Content)[0].text).toBe('small\n');
    const dir = await withClient((c) => c.callTool({ name: 'read_file', arguments: { sandbox_id: id, remote_path: '.' } }));
    expect(dir.isError).toBe(true);
    expect((dir.content as Content)[0].text).toMatch(/IS_A_DIRECTORY/);
  });
});
