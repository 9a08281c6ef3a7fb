/**
 * A faithful fake of AgentCube's HTTP protocol (WorkloadManager + Router + PicoD in one server on
 * 127.0.0.1), built from shared/reference/agentcube.md §2 and §7. Commands are executed for real, each
 * session in its own temporary workspace, so the wrapper's agent runs for real too. Reproduced: implicit
 * create through the Router with the id in the x-agentcube-session-id response header, the exact 404
 * bodies, 200 with a non-zero exit code, exit code 124 on timeout, Go durations, the workspace path jail
 * (absolute paths are workspace-relative), the 32 MiB body limit, plain-text 404 for unknown routes.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import {
  mkdtempSync,
  mkdirSync,
  readdirSync,
  readlinkSync,
  realpathSync,
  rmSync,
  statSync,
  writeFileSync,
  readFileSync,
  existsSync,
  chmodSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, extname, join, normalize, relative } from 'node:path';
import type { AddressInfo } from 'node:net';

export interface FakeOptions {
  /** CodeInterpreters that exist, as "namespace/name". */
  readonly interpreters?: readonly string[];
  /** When false, the "image" has no python3: running it fails like a missing executable. */
  readonly python?: boolean;
  /** Bearer token WM and Router demand (as with --enable-auth / OIDC); none when unset. */
  readonly token?: string;
  /** Makes PicoD's file uploads fail with 500 (a pod whose disk broke), to test clean-up. */
  readonly brokenUploads?: boolean;
}

interface Session {
  id: string;
  ns: string;
  name: string;
  workspace: string;
  sandboxName: string;
}

const MAX_BODY = 32 * 1024 * 1024;
const MIME: Record<string, string> = {
  '.txt': 'text/plain; charset=utf-8',
  '.json': 'application/json',
  '.png': 'image/png',
  '.csv': 'text/csv; charset=utf-8',
  '.py': 'text/x-python',
};

function send(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain' : 'application/json; charset=utf-8', ...headers });
  res.end(text);
}

/** Go's time.ParseDuration for the forms PicoD sees: "30s", "1.5m", "500ms", "2h". */
function goDuration(s: string): number | null {
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h)$/.exec(s);
  if (!m) return null;
  return Number(m[1]) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[m[2] as 'ms']!;
}

async function readBody(req: IncomingMessage): Promise<Buffer | null> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY) return null;
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks);
}

function multipart(body: Buffer, contentType: string): Record<string, { data: Buffer; filename?: string }> {
  const boundary = /boundary=(?:"([^"]+)"|([^;]+))/.exec(contentType);
  const out: Record<string, { data: Buffer; filename?: string }> = {};
  if (!boundary) return out;
  const delimiter = Buffer.from(`--${boundary[1] ?? boundary[2]}`);
  let pos = body.indexOf(delimiter);
  while (pos >= 0) {
    const next = body.indexOf(delimiter, pos + delimiter.length);
    if (next < 0) break;
    const part = body.subarray(pos + delimiter.length + 2, next - 2);
    const split = part.indexOf('\r\n\r\n');
    const head = part.subarray(0, split).toString();
    const name = /name="([^"]*)"/.exec(head)?.[1];
    if (name) out[name] = { data: part.subarray(split + 4), filename: /filename="([^"]*)"/.exec(head)?.[1] };
    pos = next;
  }
  return out;
}

export class FakeAgentCube {
  private server!: Server;
  readonly sessions = new Map<string, Session>();
  /** Every request seen, for assertions: "METHOD path". */
  readonly log: string[] = [];
  url = '';

  constructor(private readonly opts: FakeOptions = {}) {}

  async start(): Promise<this> {
    this.server = createServer((req, res) => void this.handle(req, res).catch((err) => send(res, 500, { error: String(err) })));
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    this.url = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  async stop(): Promise<void> {
    for (const id of [...this.sessions.keys()]) this.deleteSession(id);
    this.server.closeAllConnections();
    await new Promise((r) => this.server.close(r));
  }

  /** Simulates AgentCube's idle GC taking a session away. */
  expire(id: string): void {
    this.deleteSession(id);
  }

  private interpreterExists(ns: string, name: string): boolean {
    return (this.opts.interpreters ?? ['default/my-interpreter']).includes(`${ns}/${name}`);
  }

  private createSession(ns: string, name: string): Session {
    const id = randomUUID();
    const workspace = mkdtempSync(join(tmpdir(), 'fake-agentcube-'));
    const s = { id, ns, name, workspace, sandboxName: `${name}-${id.replace(/-/g, '').slice(0, 8)}` };
    this.sessions.set(id, s);
    return s;
  }

  private deleteSession(id: string): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    this.sessions.delete(id);
    // The pod goes away: every process running in its workspace ends.
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        const cwd = readlinkSync(`/proc/${pid}/cwd`);
        if (cwd === s.workspace || cwd.startsWith(`${s.workspace}/`)) process.kill(Number(pid), 'SIGKILL');
      } catch {
        // gone, or not ours to read
      }
    }
    rmSync(s.workspace, { recursive: true, force: true });
    return true;
  }

  private authorized(req: IncomingMessage): boolean {
    return !this.opts.token || req.headers.authorization === `Bearer ${this.opts.token}`;
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    this.log.push(`${req.method} ${url.pathname}`);
    if (url.pathname === '/v1/code-interpreter' && req.method === 'POST') {
      if (!this.authorized(req)) return send(res, 401, { message: 'Missing authorization header' });
      let body: { name?: string; namespace?: string };
      try {
        body = JSON.parse(String(await readBody(req)));
      } catch {
        return send(res, 400, { message: 'Invalid request body' });
      }
      if (!body.namespace) return send(res, 400, { message: 'namespace is required' });
      if (!body.name) return send(res, 400, { message: 'name is required' });
      if (!this.interpreterExists(body.namespace, body.name)) return send(res, 404, { message: 'code interpreter not found' });
      const s = this.createSession(body.namespace, body.name);
      return send(res, 200, {
        kind: 'Sandbox',
        sessionId: s.id,
        sandboxId: randomUUID(),
        sandboxName: s.sandboxName,
        entryPoints: [{ path: '/', protocol: 'HTTP', endpoint: '10.244.0.12:8080' }],
      });
    }
    const del = /^\/v1\/code-interpreter\/sessions\/([^/]+)$/.exec(url.pathname);
    if (del && req.method === 'DELETE') {
      if (!this.authorized(req)) return send(res, 401, { message: 'Missing authorization header' });
      return this.deleteSession(del[1])
        ? send(res, 200, { message: 'Sandbox deleted successfully' })
        : send(res, 404, { message: `Session ID ${del[1]} not found, maybe already deleted` });
    }
    if (req.method === 'GET' && url.pathname === '/health') return send(res, 200, { status: 'healthy' });
    if (req.method === 'GET' && url.pathname === '/health/live') return send(res, 200, { status: 'alive' });
    const inv = /^\/v1\/namespaces\/([^/]+)\/code-interpreters\/([^/]+)\/invocations\/(.*)$/.exec(url.pathname);
    if (inv && (req.method === 'GET' || req.method === 'POST')) {
      if (!this.authorized(req)) return send(res, 401, { error: 'missing authorization header', code: 'UNAUTHORIZED' });
      const [, ns, name, path] = inv;
      const header = req.headers['x-agentcube-session-id'];
      let s: Session | undefined;
      if (typeof header === 'string' && header) {
        s = this.sessions.get(header);
        if (!s) return send(res, 404, { error: `sessions.agentcube.volcano.sh "${header}" not found` });
      } else {
        if (!this.interpreterExists(ns, name))
          return send(res, 404, { error: `codeinterpreters.agentcube.volcano.sh "${ns}/${name}" not found` });
        s = this.createSession(ns, name);
      }
      return this.picod(s, req.method, path, url, req, res, { 'x-agentcube-session-id': s.id });
    }
    send(res, 404, '404 page not found');
  }

  /** PicoD, reached through the Router. */
  private async picod(
    s: Session,
    method: string,
    path: string,
    url: URL,
    req: IncomingMessage,
    res: ServerResponse,
    h: Record<string, string>,
  ): Promise<void> {
    const jail = (p: string): string | null => {
      const full = normalize(join(s.workspace, p.replace(/^\/+/, '')));
      const rel = relative(s.workspace, full);
      if (rel.startsWith('..')) return null;
      let probe = full;
      while (!existsSync(probe)) probe = dirname(probe);
      const real = realpathSync(probe);
      return real === s.workspace || real.startsWith(`${s.workspace}/`) ? full : null;
    };
    const escapes = (p: string) =>
      send(res, 400, { error: `access denied: path '${p}' escapes workspace jail ${s.workspace}`, code: 400 }, h);
    if (method === 'POST' && path === 'api/execute') {
      const raw = await readBody(req);
      if (!raw) return send(res, 413, { error: 'request body too large', detail: 'limit is 33554432 bytes' }, h);
      let body: { command?: unknown; timeout?: string; working_dir?: string; env?: Record<string, string> };
      try {
        body = JSON.parse(String(raw));
      } catch (err) {
        return send(res, 400, { error: String(err), code: 400 }, h);
      }
      if (!Array.isArray(body.command) || !body.command.every((c) => typeof c === 'string')) {
        return send(
          res,
          400,
          { error: 'json: cannot unmarshal string into Go struct field ExecuteRequest.command of type []string', code: 400 },
          h,
        );
      }
      if (body.command.length === 0) return send(res, 400, { error: 'command cannot be empty', code: 400 }, h);
      const timeoutMs = body.timeout === undefined ? 60_000 : goDuration(body.timeout);
      if (timeoutMs === null) return send(res, 400, { error: `Invalid timeout format: ${body.timeout}`, code: 400 }, h);
      let cwd = s.workspace;
      if (body.working_dir) {
        const wd = jail(body.working_dir);
        if (!wd) return send(res, 400, { error: `Invalid working directory: access denied`, code: 400 }, h);
        mkdirSync(wd, { recursive: true });
        cwd = wd;
      }
      const start = new Date();
      const [cmd, ...args] = body.command as string[];
      const result = await new Promise<{ stdout: string; stderr: string; exit_code: number }>((resolve) => {
        if (this.opts.python === false && /python3?$/.test(cmd)) {
          return resolve({ stdout: '', stderr: `exec: "${cmd}": executable file not found in $PATH`, exit_code: 1 });
        }
        // A pod's PATH, not this machine's (which may start with version-manager shims).
        const child = spawn(cmd, args, {
          cwd,
          env: { PATH: '/usr/local/bin:/usr/bin:/bin', HOME: s.workspace, ...body.env },
          detached: true,
          stdio: ['ignore', 'pipe', 'pipe'],
        });
        let stdout = '';
        let stderr = '';
        let timedOut = false;
        child.stdout!.on('data', (d) => (stdout += d));
        child.stderr!.on('data', (d) => (stderr += d));
        const timer = setTimeout(() => {
          timedOut = true;
          try {
            process.kill(-child.pid!, 'SIGKILL');
          } catch {
            child.kill('SIGKILL');
          }
        }, timeoutMs);
        child.on('error', (err) => {
          clearTimeout(timer);
          resolve({
            stdout,
            stderr: `exec: "${cmd}": ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'executable file not found in $PATH' : err.message}`,
            exit_code: 1,
          });
        });
        child.on('close', (code) => {
          clearTimeout(timer);
          if (timedOut)
            resolve({ stdout, stderr: `${stderr}Command timed out after ${Math.round(timeoutMs / 1000)} seconds`, exit_code: 124 });
          else resolve({ stdout, stderr, exit_code: code ?? 1 });
        });
      });
      const end = new Date();
      return send(
        res,
        200,
        { ...result, duration: (end.getTime() - start.getTime()) / 1000, start_time: start.toISOString(), end_time: end.toISOString() },
        h,
      );
    }
    if (method === 'POST' && path === 'api/files') {
      if (this.opts.brokenUploads) return send(res, 500, { error: 'Failed to write file: input/output error', code: 500 }, h);
      const raw = await readBody(req);
      if (!raw) return send(res, 413, { error: 'request body too large', detail: 'limit is 33554432 bytes' }, h);
      let target: string;
      let data: Buffer;
      const type = String(req.headers['content-type'] ?? '');
      if (type.startsWith('multipart/form-data')) {
        const parts = multipart(raw, type);
        if (!parts.path) return send(res, 400, { error: "Missing 'path' field", code: 400 }, h);
        if (!parts.file) return send(res, 400, { error: 'Failed to get file: http: no such file', code: 400 }, h);
        target = parts.path.data.toString();
        data = parts.file.data;
      } else {
        let body: { path?: string; content?: string };
        try {
          body = JSON.parse(String(raw));
        } catch (err) {
          return send(res, 400, { error: String(err), code: 400 }, h);
        }
        if (!body.path || !body.content)
          return send(
            res,
            400,
            { error: "Key: 'UploadFileRequest.Content' Error:Field validation for 'Content' failed on the 'required' tag", code: 400 },
            h,
          );
        if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body.content))
          return send(res, 400, { error: 'Invalid base64 content: illegal base64 data', code: 400 }, h);
        target = body.path;
        data = Buffer.from(body.content, 'base64');
      }
      const full = jail(target);
      if (!full) return escapes(target);
      mkdirSync(dirname(full), { recursive: true });
      writeFileSync(full, data);
      chmodSync(full, 0o644);
      return send(
        res,
        200,
        { path: relative(s.workspace, full), size: data.length, mode: '-rw-r--r--', modified: new Date().toISOString() },
        h,
      );
    }
    if (method === 'GET' && path === 'api/files') {
      const dir = url.searchParams.get('path');
      if (!dir) return send(res, 400, { error: "Missing 'path' query parameter", code: 400 }, h);
      const full = jail(dir);
      if (!full) return escapes(dir);
      if (!existsSync(full)) return send(res, 404, { error: 'Directory not found', code: 404 }, h);
      if (!statSync(full).isDirectory())
        return send(res, 500, { error: `Failed to read directory: readdirent ${dir}: not a directory`, code: 500 }, h);
      const files = readdirSync(full).map((n) => {
        const st = statSync(join(full, n));
        return {
          name: n,
          size: st.size,
          modified: st.mtime.toISOString(),
          mode: st.isDirectory() ? 'drwxr-xr-x' : '-rw-r--r--',
          is_dir: st.isDirectory(),
        };
      });
      return send(res, 200, { files }, h);
    }
    if (method === 'GET' && path.startsWith('api/files/')) {
      const p = decodeURIComponent(path.slice('api/files/'.length));
      const full = jail(p);
      if (!full) return escapes(p);
      if (!existsSync(full)) return send(res, 404, { error: 'File not found', code: 404 }, h);
      if (statSync(full).isDirectory()) return send(res, 400, { error: 'Path is a directory, not a file', code: 400 }, h);
      const data = readFileSync(full);
      res.writeHead(200, {
        ...h,
        'content-type': MIME[extname(full)] ?? 'application/octet-stream',
        'content-disposition': `attachment; filename="${basename(full)}"`,
        'content-length': String(data.length),
      });
      res.end(data);
      return;
    }
    if (method === 'GET' && path === 'health') return send(res, 200, { status: 'ok', service: 'PicoD', version: '0.0.1', uptime: '1s' }, h);
    send(res, 404, '404 page not found', h);
  }
}
