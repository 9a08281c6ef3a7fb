/**
 * What a subverted supervisor can send the service on its channel: the service must hold it to the same
 * bounds as the kernel's channel. A real child process plays the supervisor gone bad.
 */
import { describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { AgentConnection } from '../../src/backends/local/agent-connection.js';
import { agentRequest } from '../../src/backends/agent/protocol.js';

const MiB = 1024 * 1024;
const limits = { maxHeaderBytes: 22 * MiB, maxBlobBytes: 100 * MiB, maxEventBytes: 2 * MiB + 64 * 1024 };

/** An "agent" that says it is ready, reads one request, then runs `evil` (Python, with `out` its stdout). */
function badAgent(evil: string) {
  const child = spawn(
    '/usr/bin/python3',
    [
      '-c',
      [
        'import sys, json',
        'out = sys.stdout.buffer',
        'out.write(b\'{"ready": true}\\n\'); out.flush()',
        'req = json.loads(sys.stdin.buffer.readline())',
        evil,
      ].join('\n'),
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  let fatal: string | null = null;
  let connection!: AgentConnection;
  const died = new Promise<string>((resolve) => {
    connection = new AgentConnection(
      child,
      (reason) => {
        fatal = reason;
        child.kill('SIGKILL');
        connection.close(reason);
        resolve(reason);
      },
      limits,
    );
  });
  return { child, connection, died, fatal: () => fatal };
}

describe("the supervisor channel is bounded like the kernel's", () => {
  it('stdout events past the output cap stop the sandbox instead of flowing into the service', async () => {
    const agent = badAgent(
      [
        'chunk = json.dumps({"id": req["id"], "event": "stdout", "data": "x" * 65536}).encode() + b"\\n"',
        'while True:',
        '    out.write(chunk)',
      ].join('\n'),
    );
    await agent.connection.ready(10_000);
    let received = 0;
    const call = agent.connection.request(agentRequest('shell', { command: 'yes', timeout_ms: 10_000 }), null, 60_000, (_event, data) => {
      received += data.length;
    });
    await expect(call).rejects.toMatchObject({ code: 'SANDBOX_LOST' });
    expect(await agent.died).toMatch(/more output than its limit/);
    expect(received).toBeLessThanOrEqual(limits.maxEventBytes);
  });

  it('a header that never ends is refused once it passes its limit, its pieces never joined over and over', async () => {
    const agent = badAgent(
      ['piece = b"a" * 65536', 'for _ in range(30 * 16):', '    out.write(piece)', 'out.flush()', 'sys.stdin.read()'].join('\n'),
    );
    await agent.connection.ready(10_000);
    const started = process.cpuUsage();
    const call = agent.connection.request(agentRequest('list', { path: '.', recursive: false, limit: 10 }), null, 60_000);
    await expect(call).rejects.toMatchObject({ code: 'SANDBOX_LOST' });
    expect(await agent.died).toMatch(/oversized frame header/);
    // Reported, not asserted: the CPU the service spent on 22 MiB of header (a quadratic join took seconds).
    const used = process.cpuUsage(started);
    console.log(`[security] agent channel: ${((used.user + used.system) / 1000).toFixed(0)} ms of CPU to refuse a 22 MiB header`);
  });

  it('a well-formed reply split into many small pieces still arrives whole', async () => {
    const agent = badAgent(
      [
        'import time',
        'line = json.dumps({"id": req["id"], "ok": True, "text": "y" * 300000}).encode() + b"\\n"',
        'for i in range(0, len(line), 4096):',
        '    out.write(line[i:i + 4096]); out.flush()',
        'sys.stdin.read()',
      ].join('\n'),
    );
    await agent.connection.ready(10_000);
    const reply = await agent.connection.request(agentRequest('stat', { path: '.' }), null, 60_000);
    expect((reply.header.text as string).length).toBe(300_000);
    agent.child.kill('SIGKILL');
  });
});
