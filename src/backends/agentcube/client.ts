/**
 * HTTP client of AgentCube (volcano-sh/agentcube), as its source defines the protocol
 * (shared/reference/agentcube.md): WorkloadManager creates and deletes sessions; every data-plane call goes
 * through the Router's invocation path with the x-agentcube-session-id header to PicoD in the pod
 * (`api/execute` with an argument array, `api/files` for files). Errors become ServiceErrors in one table.
 */
import { readFileSync } from 'node:fs';
import { Agent, FormData, request } from 'undici';
import { mapAgentCubeError, unreachable } from './errors.js';

export interface AgentCubeSettings {
  readonly workloadManagerUrl: string;
  readonly routerUrl: string;
  readonly namespace: string;
  /** The CodeInterpreter resource's name. */
  readonly name: string;
  /** Bearer token for WM and Router, or a file holding it (a Kubernetes service-account token, re-read as it rotates). */
  readonly token?: string;
  readonly tokenFile?: string;
  /** Session creation blocks until the pod is ready: ≥ 150 s. */
  readonly createTimeoutMs: number;
  /** Bound on file operations. */
  readonly requestTimeoutMs: number;
}

export interface ExecResult {
  readonly stdout: string;
  readonly stderr: string;
  readonly exitCode: number;
}

export interface RemoteEntry {
  readonly name: string;
  readonly size: number;
  readonly modified: string;
  readonly isDir: boolean;
}

/** Files up to this size go as JSON base64; larger ones as multipart (PicoD takes 32 MiB bodies). */
const JSON_UPLOAD_MAX = 1024 * 1024;
const TOKEN_FILE_TTL_MS = 60_000;

export class AgentCubeClient {
  private readonly dispatcher = new Agent({ keepAliveTimeout: 30_000, connections: 64 });
  private tokenCache: { value: string; at: number } | null = null;

  constructor(private readonly s: AgentCubeSettings) {}

  private token(): string | undefined {
    if (this.s.token) return this.s.token;
    if (!this.s.tokenFile) return undefined;
    const now = Date.now();
    if (!this.tokenCache || now - this.tokenCache.at > TOKEN_FILE_TTL_MS) {
      this.tokenCache = { value: readFileSync(this.s.tokenFile, 'utf8').trim(), at: now };
    }
    return this.tokenCache.value;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    const t = this.token();
    return { ...(t ? { authorization: `Bearer ${t}` } : {}), ...extra };
  }

  private invocation(path: string): string {
    return `${this.s.routerUrl}/v1/namespaces/${encodeURIComponent(this.s.namespace)}/code-interpreters/${encodeURIComponent(this.s.name)}/invocations/${path}`;
  }

  private async call(
    url: string,
    init: { method: string; headers?: Record<string, string>; body?: string | Buffer | FormData },
    timeoutMs: number,
    where: 'wm' | 'router',
  ) {
    try {
      const res = await request(url, {
        method: init.method as 'GET',
        headers: init.headers,
        body: init.body,
        dispatcher: this.dispatcher,
        headersTimeout: timeoutMs,
        bodyTimeout: timeoutMs,
      });
      const body = Buffer.from(await res.body.arrayBuffer());
      return { status: res.statusCode, body, headers: res.headers };
    } catch (err) {
      throw unreachable(where, err);
    }
  }

  /** Health of WM and Router; throws when either cannot be reached. */
  async check(): Promise<void> {
    await this.call(`${this.s.workloadManagerUrl}/health`, { method: 'GET' }, 10_000, 'wm');
    await this.call(`${this.s.routerUrl}/health/live`, { method: 'GET' }, 10_000, 'router');
  }

  async createSession(): Promise<string> {
    const res = await this.call(
      `${this.s.workloadManagerUrl}/v1/code-interpreter`,
      {
        method: 'POST',
        headers: this.headers({ 'content-type': 'application/json' }),
        body: JSON.stringify({ name: this.s.name, namespace: this.s.namespace }),
      },
      this.s.createTimeoutMs,
      'wm',
    );
    if (res.status !== 200) throw mapAgentCubeError('wm', res.status, res.body);
    const id = (JSON.parse(res.body.toString('utf8')) as { sessionId?: string }).sessionId;
    if (!id) throw mapAgentCubeError('wm', 500, Buffer.from('{"message":"no sessionId in the answer"}'));
    return id;
  }

  /** Deletes a session; one that is already gone (404) counts as deleted. */
  async deleteSession(id: string): Promise<void> {
    const res = await this.call(
      `${this.s.workloadManagerUrl}/v1/code-interpreter/sessions/${encodeURIComponent(id)}`,
      {
        method: 'DELETE',
        headers: this.headers(),
      },
      this.s.requestTimeoutMs,
      'wm',
    );
    if (res.status !== 200 && res.status !== 404) throw mapAgentCubeError('wm', res.status, res.body);
  }

  /** Runs an argument array in the pod (no shell). A non-zero exit is a result, not an error; 124 = timeout. */
  async execute(
    id: string,
    command: readonly string[],
    options: { timeoutMs: number; workingDir?: string; env?: Readonly<Record<string, string>> },
  ): Promise<ExecResult> {
    const body = {
      command,
      timeout: `${Math.max(1, Math.ceil(options.timeoutMs / 1000))}s`,
      ...(options.workingDir ? { working_dir: options.workingDir } : {}),
      ...(options.env ? { env: options.env } : {}),
    };
    const res = await this.call(
      this.invocation('api/execute'),
      {
        method: 'POST',
        headers: this.headers({ 'content-type': 'application/json', 'x-agentcube-session-id': id }),
        body: JSON.stringify(body),
      },
      options.timeoutMs + 30_000,
      'router',
    );
    if (res.status !== 200) throw mapAgentCubeError('router', res.status, res.body);
    const r = JSON.parse(res.body.toString('utf8')) as { stdout?: string; stderr?: string; exit_code?: number };
    return { stdout: r.stdout ?? '', stderr: r.stderr ?? '', exitCode: r.exit_code ?? 1 };
  }

  async writeFile(id: string, path: string, data: Uint8Array): Promise<{ path: string; size: number }> {
    let init: { method: string; headers: Record<string, string>; body: string | FormData };
    if (data.length > 0 && data.length <= JSON_UPLOAD_MAX) {
      init = {
        method: 'POST',
        headers: this.headers({ 'content-type': 'application/json', 'x-agentcube-session-id': id }),
        body: JSON.stringify({ path, content: Buffer.from(data).toString('base64'), mode: '0644' }),
      };
    } else {
      // Large files, and empty ones (PicoD's JSON form refuses an empty `content`), go as multipart.
      const form = new FormData();
      form.append('path', path);
      form.append('mode', '0644');
      form.append('file', new Blob([new Uint8Array(data)]), path.split('/').pop() || 'file');
      init = { method: 'POST', headers: this.headers({ 'x-agentcube-session-id': id }), body: form };
    }
    const res = await this.call(this.invocation('api/files'), init, this.s.requestTimeoutMs, 'router');
    if (res.status !== 200) throw mapAgentCubeError('router', res.status, res.body);
    const r = JSON.parse(res.body.toString('utf8')) as { path: string; size: number };
    return { path: r.path, size: r.size };
  }

  async listDir(id: string, path: string): Promise<RemoteEntry[]> {
    const res = await this.call(
      `${this.invocation('api/files')}?path=${encodeURIComponent(path)}`,
      {
        method: 'GET',
        headers: this.headers({ 'x-agentcube-session-id': id }),
      },
      this.s.requestTimeoutMs,
      'router',
    );
    if (res.status !== 200) throw mapAgentCubeError('router', res.status, res.body, path);
    const files =
      (JSON.parse(res.body.toString('utf8')) as { files: Array<{ name: string; size: number; modified: string; is_dir: boolean }> | null })
        .files ?? [];
    return files.map((f) => ({ name: f.name, size: f.size, modified: f.modified, isDir: f.is_dir }));
  }

  async download(id: string, path: string): Promise<Buffer> {
    const encoded = path.split('/').map(encodeURIComponent).join('/');
    const res = await this.call(
      this.invocation(`api/files/${encoded}`),
      {
        method: 'GET',
        headers: this.headers({ 'x-agentcube-session-id': id }),
      },
      this.s.requestTimeoutMs,
      'router',
    );
    if (res.status !== 200) throw mapAgentCubeError('router', res.status, res.body, path);
    return res.body;
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
