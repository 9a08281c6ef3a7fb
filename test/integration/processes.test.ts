/**
 * Background processes, stdin, a terminal, file watching, code contexts and file moves through our own API
 * (HTTP and MCP), on real sandboxes.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestApp, type TestApp } from '../helpers/app.js';
import { localEnv } from '../helpers/local.js';
import { callTool } from '../../src/mcp/tools.js';

let t: TestApp;
const ONE = { authorization: 'Bearer key-one' };
const TWO = { authorization: 'Bearer key-two' };
const post = (path: string, body: Record<string, unknown>, headers = ONE) => t.post(path, body, headers);

beforeAll(async () => {
  t = await startTestApp(localEnv({ API_KEYS: 'key-one,key-two', MAX_OUTPUT_BYTES: '100000' }));
});
afterAll(async () => {
  await t?.close();
});

async function sandbox(): Promise<string> {
  return (await post('/create_sandbox', {})).body.sandbox_id;
}

/** Reads a process's output until it ends (the end is answered once). */
async function untilEnd(id: string, pid: number): Promise<{ output: string; exit_code: number; status: string; error: string | null }> {
  let since = 0;
  let output = '';
  for (let i = 0; i < 100; i++) {
    const r = await post('/process_output', { sandbox_id: id, pid, since, wait_ms: 2000 });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    output += r.body.output;
    since = r.body.next;
    if (!r.body.running) return { ...r.body, output };
  }
  throw new Error('the process did not end');
}

describe('background processes', () => {
  it('runs on its own, takes stdin, keeps its exit status until read, and is not another key’s', async () => {
    const id = await sandbox();
    const started = await post('/start_process', {
      sandbox_id: id,
      command: 'echo ready; read line; echo "got $line"; echo oops >&2; exit 2',
      stdin: true,
    });
    expect(started.status).toBe(200);
    const pid = started.body.pid;
    const first = await post('/process_output', { sandbox_id: id, pid, wait_ms: 5000 });
    expect(first.body).toMatchObject({ running: true, stdout: 'ready\n' });
    expect((await post('/process_output', { sandbox_id: id, pid }, TWO)).status).toBe(404);
    expect((await post('/send_input', { sandbox_id: id, pid, data: 'x' }, TWO)).status).toBe(404);
    expect((await post('/send_input', { sandbox_id: id, pid, data: 'hello\n' })).status).toBe(200);
    const end = await untilEnd(id, pid);
    expect(end.output).toBe('ready\ngot hello\noops\n');
    expect(end).toMatchObject({ exit_code: 2, status: 'exit status 2' });
    const again = await post('/process_output', { sandbox_id: id, pid });
    expect(again.status).toBe(404);
    expect(again.body.error.code).toBe('PROCESS_NOT_FOUND');
  });

  it('lists running processes and stops them by signal; a sandbox call meanwhile is not held up', async () => {
    const id = await sandbox();
    const { pid } = (await post('/start_process', { sandbox_id: id, cmd: 'sleep', args: ['300'], tag: 'sleeper' })).body;
    const listed = await post('/list_processes', { sandbox_id: id });
    expect(listed.body.processes).toEqual([expect.objectContaining({ pid, tag: 'sleeper', cmd: 'sleep', args: ['300'] })]);
    expect((await post('/run_code', { sandbox_id: id, code: 'print(1 + 1)' })).body.stdout).toBe('2\n');
    expect((await post('/signal_process', { sandbox_id: id, pid, signal: 'SIGKILL' })).status).toBe(200);
    expect(await untilEnd(id, pid)).toMatchObject({ exit_code: 137, status: 'signal: SIGKILL' });
    expect((await post('/list_processes', { sandbox_id: id })).body.processes).toEqual([]);
    expect((await post('/signal_process', { sandbox_id: id, pid: 999999 })).status).toBe(404);
    expect((await post('/signal_process', { sandbox_id: id, pid, signal: 'SIGBOGUS' })).status).toBe(400);
  });

  it('holds a process to the output limit: the rest is dropped and the end says so', async () => {
    const id = await sandbox();
    const { pid } = (await post('/start_process', { sandbox_id: id, command: 'head -c 5000000 /dev/zero | tr "\\0" x; echo' })).body;
    const end = await untilEnd(id, pid);
    expect(end.exit_code).toBe(0);
    expect(end.error).toMatch(/100000-byte limit/);
    expect(end.output.length).toBeLessThanOrEqual(100000);
  });

  it('runs a process in a terminal', async () => {
    const id = await sandbox();
    const { pid } = (await post('/start_process', { sandbox_id: id, cmd: '/bin/bash', pty: { cols: 100, rows: 30 } })).body;
    await post('/send_input', { sandbox_id: id, pid, data: 'tty; stty size; exit 3\n' });
    const end = await untilEnd(id, pid);
    expect(end.output).toMatch(/\/dev\/pts\/\d+/);
    expect(end.output).toContain('30 100');
    expect(end.exit_code).toBe(3);
  });

  it('refuses bad input with a 400 naming it', async () => {
    const id = await sandbox();
    for (const body of [
      { command: 'x', cmd: 'y' },
      {},
      { cmd: 'a\u0000b' },
      { command: 'echo \ud800' },
      { cmd: 'ls', env: { 'BAD NAME': 'x' } },
    ]) {
      const r = await post('/start_process', { sandbox_id: id, ...body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    expect((await post('/start_process', { sandbox_id: id, cmd: '/no/such/program' })).body.error.code).toBe('BAD_COMMAND');
    const { pid } = (await post('/start_process', { sandbox_id: id, command: 'cat', stdin: true })).body;
    for (const body of [{ data: 'x', data_base64: 'eA==' }, { data_base64: 'not base64!' }]) {
      const r = await post('/send_input', { sandbox_id: id, pid, ...body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
    await post('/signal_process', { sandbox_id: id, pid, signal: 'SIGKILL' });
  });

  it('ends with a pause, and followers hear it', async () => {
    const id = await sandbox();
    const { pid } = (await post('/start_process', { sandbox_id: id, cmd: 'sleep', args: ['300'] })).body;
    const waiting = post('/process_output', { sandbox_id: id, pid, wait_ms: 20000 });
    await new Promise((r) => setTimeout(r, 200));
    expect((await post('/pause_sandbox', { sandbox_id: id })).body.status).toBe('paused');
    const r = await waiting;
    expect(r.body.running).toBe(false);
    expect(r.body.error).toMatch(/paused/);
    // A paused sandbox runs nothing, and is not woken to say so.
    expect((await post('/list_processes', { sandbox_id: id })).body.processes).toEqual([]);
    expect((await post('/get_sandbox_info', { sandbox_id: id })).body.status).toBe('paused');
  });
});

describe('files, watches and contexts', () => {
  it('makes, moves, describes and removes, never following a symlink, never outside the workspace', async () => {
    const id = await sandbox();
    expect((await post('/make_dir', { sandbox_id: id, path: 'a/b' })).body).toMatchObject({ created: true, entry: { type: 'directory' } });
    expect((await post('/make_dir', { sandbox_id: id, path: 'a/b' })).body.created).toBe(false);
    await post('/run_code', { sandbox_id: id, code: 'import os\nopen("a/f.txt","w").write("hi")\nos.symlink("/etc/passwd", "link")' });
    const link = await post('/file_info', { sandbox_id: id, path: 'link' });
    expect(link.body.entry).toMatchObject({ type: 'symlink', symlink_target: '/etc/passwd' });
    expect((await post('/move_file', { sandbox_id: id, source: 'link', destination: 'a/moved-link' })).body.entry.type).toBe('symlink');
    expect((await post('/remove_file', { sandbox_id: id, path: 'a/moved-link' })).status).toBe(200);
    const f = await post('/move_file', { sandbox_id: id, source: 'a/f.txt', destination: 'c/g.txt' });
    expect(f.body.entry).toMatchObject({ path: '/workspace/c/g.txt', size: 2, permissions: '-rw-r--r--' });
    for (const [path, body] of [
      ['/make_dir', { path: '/etc/x' }],
      ['/move_file', { source: 'c/g.txt', destination: '../../etc/g' }],
      ['/remove_file', { path: '/etc/passwd' }],
      ['/remove_file', { path: '.' }],
      ['/file_info', { path: 'a\u0000' }],
    ] as const) {
      const r = await post(path, { sandbox_id: id, ...body });
      expect(r.status, `${path} ${JSON.stringify(body)}`).toBe(400);
    }
    expect((await post('/remove_file', { sandbox_id: id, path: 'a' })).status).toBe(200);
    const left = await post('/list_files', { sandbox_id: id, path: '.' });
    expect(left.body.entries.map((e: { name: string }) => e.name)).toEqual(['c']);
    expect((await post('/remove_file', { sandbox_id: id, path: 'c' }, TWO)).status).toBe(404);
  });

  it('records what changes in a watched directory', async () => {
    const id = await sandbox();
    await post('/make_dir', { sandbox_id: id, path: 'w' });
    const w = (await post('/watch_dir', { sandbox_id: id, path: 'w', recursive: true })).body;
    let events: Array<{ name: string; type: string }> = [];
    const until = async (seen: () => boolean) => {
      for (let i = 0; i < 100 && !seen(); i++) {
        events = events.concat((await post('/watch_events', { sandbox_id: id, watch_id: w.watch_id })).body.events);
        if (!seen()) await new Promise((r) => setTimeout(r, 50));
      }
    };
    await post('/run_code', { sandbox_id: id, code: 'import os\nos.makedirs("w/d/e")' });
    // A new directory is watched once its creation was seen (the watch is added as its event is handled).
    await until(() => events.some((e) => e.name === 'd/e' && e.type === 'create'));
    await post('/run_code', { sandbox_id: id, code: 'import os\nopen("w/d/e/f","w").write("1")\nos.remove("w/d/e/f")' });
    await until(() => events.some((e) => e.type === 'remove'));
    expect(events).toEqual(expect.arrayContaining([{ name: 'd', path: '/workspace/w/d', type: 'create' }]));
    expect(events.filter((e) => e.name === 'd/e/f').map((e) => e.type)).toContain('remove');
    expect((await post('/unwatch_dir', { sandbox_id: id, watch_id: w.watch_id })).status).toBe(200);
    expect((await post('/watch_events', { sandbox_id: id, watch_id: w.watch_id })).status).toBe(404);
  });

  it('runs code in separate contexts with env vars per call, and says on resume that contexts were not kept', async () => {
    const id = await sandbox();
    await post('/run_code', { sandbox_id: id, code: 'x = "main"' });
    const c = (await post('/create_context', { sandbox_id: id, language: 'python', cwd: 'sub' })).body;
    expect(c.status).toBeUndefined();
    const made = await post('/make_dir', { sandbox_id: id, path: 'sub' });
    expect(made.status).toBe(200);
    const c2 = (await post('/create_context', { sandbox_id: id, cwd: 'sub' })).body;
    const r = await post('/run_code', {
      sandbox_id: id,
      context_id: c2.context_id,
      code: 'import os\nx = "ctx"\nprint(os.getcwd(), os.environ["V"])',
      env: { V: 'per-call' },
    });
    expect(r.body.stdout).toBe('/workspace/sub per-call\n');
    expect((await post('/run_code', { sandbox_id: id, code: 'import os; print(x, os.environ.get("V"))' })).body.stdout).toBe('main None\n');
    expect((await post('/list_contexts', { sandbox_id: id })).body.contexts).toEqual([
      { context_id: c2.context_id, language: 'python', cwd: '/workspace/sub' },
    ]);
    expect((await post('/run_code', { sandbox_id: id, context_id: 'ctx_nope', code: '1' })).status).toBe(404);
    expect((await post('/run_code', { sandbox_id: id, context_id: c2.context_id, code: '1' }, TWO)).status).toBe(404);
    await post('/pause_sandbox', { sandbox_id: id });
    const resumed = await post('/run_code', { sandbox_id: id, code: 'print(x)' });
    expect(resumed.body.stdout).toBe('main\n');
    expect(resumed.body.notice).toMatch(/1 code context/);
    expect(resumed.body.state_preserved).toBe(false);
  });
});

describe('MCP tools', () => {
  it('start a process, read its output, type into it and stop it', async () => {
    const id = await sandbox();
    const owner = t.service.ownerOf(id)!;
    const ctx = { service: t.service, owner, baseUrl: 'http://127.0.0.1', config: t.config };
    const started = await callTool('start_process', { sandbox_id: id, command: 'read a; echo "you said $a"', stdin: true }, ctx);
    const pid = (started.structuredContent as { pid: number }).pid;
    await callTool('send_input', { sandbox_id: id, pid, data: 'hi\n' }, ctx);
    let text = '';
    let since = 0;
    for (let i = 0; i < 20 && !text.includes('ended'); i++) {
      const out = await callTool('process_output', { sandbox_id: id, pid, since, wait_ms: 1000 }, ctx);
      text += out.content.map((c) => ('text' in c ? c.text : '')).join('');
      since = (out.structuredContent as { next: number }).next;
    }
    expect(text).toContain('you said hi');
    expect(text).toContain('ended: exit status 0');
    const sleeper = await callTool('start_process', { sandbox_id: id, command: 'sleep 100' }, ctx);
    const spid = (sleeper.structuredContent as { pid: number }).pid;
    expect((await callTool('list_processes', { sandbox_id: id }, ctx)).content[0]).toMatchObject({
      text: `${spid}: /bin/bash -c sleep 100`,
    });
    expect((await callTool('signal_process', { sandbox_id: id, pid: spid, signal: 'SIGKILL' }, ctx)).isError).toBeUndefined();
    const other = await callTool('process_output', { sandbox_id: id, pid: spid }, { ...ctx, owner: 'key:someone-else' });
    expect(other.isError).toBe(true);
    // The same input rules as over HTTP: text or base64, not both.
    const both = await callTool('send_input', { sandbox_id: id, pid: spid, data: 'x', data_base64: 'eA==' }, ctx);
    expect(both.isError).toBe(true);
  });
});
