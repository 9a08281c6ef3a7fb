/**
 * The same operation gives the same result through every front end: an upload through DIFY_FILES_URL_REWRITE,
 * a write and a listing, once over HTTP and once with the official MCP client (memory backend; the file
 * server and the service on 127.0.0.1).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startTestApp, type TestApp } from '../helpers/app.js';

let t: TestApp;
let origin: Server;
let base: string;
/** What Dify would put in a file variable's url: its public FILES_URL, which only the rewrite makes reachable. */
let publicUrl: string;

beforeAll(async () => {
  origin = createServer((req, res) => res.writeHead(req.url?.startsWith('/files/report.csv') ? 200 : 404).end('a,b\n1,2\n'));
  await new Promise<void>((r) => origin.listen(0, '127.0.0.1', r));
  const internal = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
  // The public prefix points at a closed loopback port: without the rewrite the fetch fails, and nothing
  // ever leaves this machine.
  publicUrl = 'http://localhost:1/files/report.csv?timestamp=1&sign=x';
  t = await startTestApp({ DIFY_FILES_URL_REWRITE: `http://localhost:1=${internal}`, OUTBOUND_ALLOW_CIDRS: '127.0.0.1/32' });
  await t.app.listen({ port: 0, host: '127.0.0.1' });
  base = `http://127.0.0.1:${(t.app.server.address() as AddressInfo).port}`;
});
afterAll(async () => {
  await t.close();
  origin.close();
});

async function mcp(name: string, args: Record<string, unknown>) {
  const client = new Client({ name: 'front-ends', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(`${base}/mcp`)));
  try {
    const r = await client.callTool({ name, arguments: args });
    if (r.isError) throw new Error(JSON.stringify(r.content));
    return r.structuredContent as Record<string, unknown>;
  } finally {
    await client.close();
  }
}

describe('HTTP and MCP give the same results', () => {
  it('an upload through DIFY_FILES_URL_REWRITE, a write, and the listing', async () => {
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id as string;
    const http = await t.post('/upload_file', { sandbox_id: id, file_url: publicUrl, remote_filename: 'http/report.csv' });
    expect(http.status).toBe(200);
    const viaMcp = await mcp('upload_file', { sandbox_id: id, file_url: publicUrl, remote_filename: 'mcp/report.csv' });
    const { files: _files, ...httpStored } = http.body;
    expect({ ...viaMcp, remote_path: '' }).toEqual({ ...httpStored, remote_path: '' });
    expect(viaMcp.size).toBe(8);

    // Named after the URL's file when no name is given, by both.
    expect((await t.post('/upload_file', { sandbox_id: id, file_url: publicUrl })).body.remote_path).toBe('/workspace/report.csv');
    expect((await mcp('upload_file', { sandbox_id: id, file_url: publicUrl })).remote_path).toBe('/workspace/report.csv');

    const written = await t.post('/write_file', { sandbox_id: id, remote_path: 'notes.txt', content: 'hi' });
    expect(await mcp('write_file', { sandbox_id: id, remote_path: 'notes.txt', content: 'hi' })).toEqual(written.body);

    const listed = await t.post('/list_files', { sandbox_id: id, path: '.', recursive: true });
    expect(listed.body.entries.length).toBeGreaterThanOrEqual(3);
    expect(listed.body.entries[0]).toHaveProperty('modified_at');
    expect(await mcp('list_files', { sandbox_id: id, path: '.', recursive: true })).toEqual(listed.body);
  });
});

describe('pause through MCP, resume through HTTP', () => {
  it('pause_sandbox gives the HTTP answer, and the next HTTP call resumes the sandbox with its variables', async () => {
    const id = (await t.post('/create_sandbox', {})).body.sandbox_id as string;
    await t.post('/run_code', { sandbox_id: id, code: 'n = 12' });
    const viaMcp = await mcp('pause_sandbox', { sandbox_id: id });
    expect(viaMcp).toMatchObject({ sandbox_id: id, status: 'paused', saved: ['n'], not_saved: [] });
    const info = (await t.post('/get_sandbox_info', { sandbox_id: id })).body;
    expect(viaMcp.info).toEqual(info);
    const r = await t.post('/run_code', { sandbox_id: id, code: 'n' });
    expect(r.body.results[0].data['text/plain']).toBe('12');
    expect(r.body.notice).toMatch(/was resumed/);
  });
});
