/**
 * The one schema of settings, and the only reader of process.env. Each field's description names the
 * environment variable that sets it; the README's configuration table is drawn from these.
 */
import { Type, type Static } from 'typebox';
import { Value } from 'typebox/value';
import { parsePolicy, type OutboundPolicy } from './core/network-policy.js';
import { sandboxLimitSettings } from './config-limits.js';

const MiB = 1024 * 1024;

export const ConfigSchema = Type.Object({
  PORT: Type.Integer({ default: 8000, minimum: 0, maximum: 65535, description: 'TCP port to listen on.' }),
  HOST: Type.String({
    default: '',
    description:
      'Address to bind. Default: 0.0.0.0 when an API key is set, else 127.0.0.1 (no unauthenticated access from the network by accident).',
  }),
  API_KEY: Type.String({ default: '', description: 'One API key; clients send `Authorization: Bearer <key>` or `X-API-Key: <key>`.' }),
  API_KEYS: Type.String({ default: '', description: 'Comma-separated API keys (each owns the sandboxes it creates).' }),
  ALLOW_UNAUTHENTICATED: Type.Boolean({
    default: false,
    description: 'Allow binding a non-loopback HOST without any API key. Off by default: anyone on the network could run code.',
  }),
  PUBLIC_BASE_URL: Type.String({
    default: '',
    description: "Absolute base URL for `download_url` (e.g. http://ciw:8000). Default: taken from the request's Host header.",
  }),
  TOOL_SERVER_URL: Type.String({
    default: '',
    description:
      "The server Dify's custom tool document (/dify/openapi.json) names, which Dify's api container calls: in Dify's docker compose the in-network address (http://code-interpreter:8000). Default: PUBLIC_BASE_URL, or the request's Host.",
  }),
  URL_SIGNING_KEY: Type.String({
    default: '',
    description: 'Secret for signing file URLs (download_url, artifact urls). Default: random at each start, so links die with a restart.',
  }),
  FILE_URL_TTL_S: Type.Number({ default: 3600, minimum: 1, description: 'How long signed file URLs stay valid, in seconds.' }),
  SANDBOX_BACKEND: Type.Union([Type.Literal('local'), Type.Literal('agentcube'), Type.Literal('memory')], {
    default: 'local',
    description:
      '`local` (bubblewrap sandboxes on this machine), `agentcube` (AgentCube sessions on Kubernetes) or `memory` (a test double that runs no real code).',
  }),
  AGENTCUBE_WORKLOAD_MANAGER_URL: Type.String({
    default: '',
    description: 'AgentCube WorkloadManager base URL, e.g. http://workloadmanager.agentcube-system.svc:8080 (agentcube backend).',
  }),
  AGENTCUBE_ROUTER_URL: Type.String({
    default: '',
    description: 'AgentCube Router base URL, e.g. http://agentcube-router.agentcube-system.svc:8080.',
  }),
  AGENTCUBE_NAMESPACE: Type.String({ default: 'default', description: 'Namespace of the CodeInterpreter resource.' }),
  AGENTCUBE_CODE_INTERPRETER: Type.String({
    default: 'my-interpreter',
    description: 'Name of the CodeInterpreter resource (its image needs python3 for stateful Python).',
  }),
  AGENTCUBE_TOKEN: Type.String({
    default: '',
    description: 'Bearer token for AgentCube (WorkloadManager with --enable-auth, Router with OIDC).',
  }),
  AGENTCUBE_TOKEN_FILE: Type.String({
    default: '',
    description: 'File holding that token, re-read as it rotates, e.g. /var/run/secrets/kubernetes.io/serviceaccount/token.',
  }),
  AGENTCUBE_CREATE_TIMEOUT_S: Type.Number({
    default: 180,
    minimum: 150,
    description: 'How long a session creation may take (the WorkloadManager blocks until the pod is ready: allow at least 150 s).',
  }),
  AGENTCUBE_REQUEST_TIMEOUT_S: Type.Number({ default: 60, minimum: 1, description: 'Time limit of AgentCube file operations.' }),
  LOG_LEVEL: Type.Union(
    ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'].map((l) => Type.Literal(l)),
    { default: 'info', description: 'pino log level.' },
  ),
  POOL_SIZE: Type.Integer({
    default: 2,
    minimum: 0,
    maximum: 1000,
    description: 'Sandboxes kept started ahead and handed out by create_sandbox (0 disables the warm pool).',
  }),
  POOL_NETWORK_SIZE: Type.Integer({
    default: 0,
    minimum: 0,
    maximum: 1000,
    description:
      "Sandboxes with network (SANDBOX_NETWORK_ALLOWED) kept started ahead: Dify's Code node always asks for network (enable_network), so a Dify deployment sets 2–4 to make those runs as fast as the others.",
  }),
  POOL_PRELOAD: Type.String({
    default: '',
    description:
      'Comma-separated modules the pooled sandboxes import ahead, e.g. `numpy,pandas,matplotlib.pyplot` (≈50 MB more per pooled sandbox, ready in milliseconds).',
  }),
  LOG_REQUESTS: Type.Boolean({
    default: false,
    description:
      'Log a line per request and per response (pino, at info level). Off: errors, sandbox lifecycle and start-up are still logged.',
  }),
  MCP_SSE: Type.Boolean({
    default: false,
    description:
      'Answer MCP requests at /mcp as SSE streams instead of JSON (either way works with Streamable HTTP clients; `?sse=1` chooses per request).',
  }),
  MAX_SANDBOXES: Type.Integer({ default: 100, minimum: 1, description: 'Live sandboxes at most; a create beyond it gets 429.' }),
  MAX_SANDBOXES_PER_KEY: Type.Integer({
    default: 0,
    minimum: 0,
    description:
      'Live sandboxes one API key may hold at once; a create beyond it gets 429. 0: MAX_SANDBOXES with one key (or none), half of what the Code node leaves with several, so that one tenant cannot take every sandbox.',
  }),
  DIFY_SANDBOX_RESERVED: Type.Integer({
    default: 4,
    minimum: 0,
    description:
      "Sandboxes out of MAX_SANDBOXES kept for Dify's Code node (/v1/sandbox/run), which other callers cannot take (at most MAX_SANDBOXES - 1): as many as DIFY_SANDBOX_WORKERS, so that conversations never crowd the Code node out.",
  }),
  DIFY_SANDBOX_WORKERS: Type.Integer({
    default: 4,
    minimum: 1,
    description:
      "Code-node runs (/v1/sandbox/run) at once, as dify-sandbox's MAX_WORKERS; more wait in a queue of DIFY_SANDBOX_MAX_QUEUED.",
  }),
  DIFY_SANDBOX_MAX_QUEUED: Type.Integer({
    default: 50,
    minimum: 0,
    description: "Code-node runs that may wait (dify-sandbox's MAX_REQUESTS); more: 503.",
  }),
  MAX_CONCURRENT_CREATES: Type.Integer({
    default: 4,
    minimum: 1,
    description:
      "Sandbox starts at once; further creates wait in a queue served in turn across API keys (one key's burst does not delay another key by more than one start).",
  }),
  MAX_QUEUED_CREATES_PER_KEY: Type.Integer({
    default: 16,
    minimum: 1,
    description: 'Creates one API key may have waiting for a start; more get 429.',
  }),
  MAX_CALLS_PER_KEY: Type.Integer({
    default: 32,
    minimum: 1,
    description: 'Calls into sandboxes (code, commands, files) one API key may have running or queued at once; more get 429.',
  }),
  MAX_BODY_BYTES_PER_KEY: Type.Integer({
    default: 512 * MiB,
    minimum: MiB,
    description:
      'Bytes of request bodies one API key may have in flight at once (declared sizes; at least the largest body allowed); more get 429.',
  }),
  MAX_QUEUED_CALLS_PER_SANDBOX: Type.Integer({
    default: 8,
    minimum: 1,
    description: 'Calls waiting behind the running one in a sandbox; more get 429 (each may hold a request body in memory).',
  }),
  SANDBOX_CPU_LIMIT_S: Type.Number({
    default: 3600,
    minimum: 0,
    description:
      'CPU seconds a sandbox may use over its whole life, background threads and processes included (cgroup accounting where available; per process RLIMIT_CPU hard limit always); past it the sandbox is stopped. 0 for no limit.',
  }),
  HTTP_HEADERS_TIMEOUT_S: Type.Number({
    default: 10,
    minimum: 1,
    description: "Time a client has to send a request's headers, from the connection or from the end of the previous answer.",
  }),
  HTTP_REQUEST_TIMEOUT_S: Type.Number({
    default: 120,
    minimum: 1,
    description: 'Time a client has to send a whole request, body included (a 100 MB upload needs ≈ 1 MB/s).',
  }),
  HTTP_KEEPALIVE_TIMEOUT_S: Type.Number({ default: 30, minimum: 1, description: 'How long an idle keep-alive connection is kept open.' }),
  MAX_CONNECTIONS: Type.Integer({
    default: 512,
    minimum: 16,
    description:
      "Open HTTP connections at most; further ones are refused at once (keep it under the process's file-descriptor limit, with room for sandboxes, which use ≈ 5 each).",
  }),
  FILE_SEND_IDLE_TIMEOUT_S: Type.Number({
    default: 30,
    minimum: 1,
    description:
      'A download whose client takes no bytes for this long is ended; meanwhile at most a few hundred KiB of it wait in memory (the sandbox is held back, not the service).',
  }),
  SANDBOX_IDLE_TIMEOUT_S: Type.Number({
    default: 1800,
    minimum: 1,
    description:
      'Idle seconds after which a sandbox is paused to STATE_DIR (files and variables kept, no process left; the next call resumes it), or stopped where pausing is off or unsupported (per-sandbox override up to SANDBOX_MAX_LIFETIME_S).',
  }),
  STATE_DIR: Type.String({
    default: '/var/lib/code-interpreter-wrapper/state',
    description:
      "Where paused sandboxes are kept (their files and saved variables) and what lets a restarted service find its sandboxes again; 0700, the service's own. `off` turns pausing off: idle sandboxes are stopped.",
  }),
  PAUSED_RETENTION_S: Type.Number({
    default: 604800,
    minimum: 1,
    description: 'Seconds a paused sandbox is kept; then it is deleted for good (SANDBOX_MAX_LIFETIME_S still ends any sandbox).',
  }),
  STATE_MAX_BYTES: Type.Integer({
    default: 10 * 1024 * 1024 * 1024,
    minimum: 1,
    description:
      'Bytes the paused sandboxes may hold in STATE_DIR together (with two or more API keys, one key at most half); a pause past it fails with STATE_STORAGE_FULL and the sandbox keeps running.',
  }),
  SANDBOX_ORPHAN_TIMEOUT_S: Type.Number({
    default: 600,
    minimum: 1,
    description:
      'Seconds a sandbox whose service process died (kill -9, a crash) keeps running for the next service process to take it over (with STATE_DIR set); past it, the sandbox ends. A restart within it loses nothing.',
  }),
  MAX_PAUSED_SANDBOXES_PER_KEY: Type.Integer({
    default: 1000,
    minimum: 1,
    description:
      'Paused sandboxes one API key may keep (they hold no process, only disk: STATE_MAX_BYTES bounds their bytes); a pause or fork beyond it gets 429.',
  }),
  SHUTDOWN_PAUSE_DEADLINE_S: Type.Number({
    default: 8,
    minimum: 0,
    description:
      "On SIGTERM, seconds to pause every live sandbox before the service exits (under docker stop's 10 s grace); sandboxes not paused by then are stopped and their next call says so.",
  }),
  SANDBOX_MAX_LIFETIME_S: Type.Number({ default: 86400, minimum: 1, description: 'Seconds a sandbox may live at most, used or not.' }),
  EXEC_TIMEOUT_S: Type.Number({
    default: 50,
    exclusiveMinimum: 0,
    description:
      "Default timeout of one run_code / execute_command call, in seconds: 50 answers (with the timeout error) before Dify's 60 s read timeout gives up and its retry runs the code again.",
  }),
  EXEC_MAX_TIMEOUT_S: Type.Number({ default: 600, exclusiveMinimum: 0, description: 'Largest timeout a request may ask for, in seconds.' }),
  SUPERVISOR_IDLE_MS: Type.Integer({
    default: 2000,
    minimum: 0,
    description:
      "Local backend: after this long without a shell command, file operation or JavaScript call, a sandbox's supervisor process gives way to a 0.7 MiB placeholder until the next one (which then waits ≈ 20 ms for it); Python calls never need it. 0 keeps it running.",
  }),
  INTERRUPT_GRACE_MS: Type.Integer({
    default: 2000,
    minimum: 100,
    description: 'After a timeout, how long Python has to stop on KeyboardInterrupt before it is restarted.',
  }),
  MAX_OUTPUT_BYTES: Type.Integer({
    default: MiB,
    minimum: 1024,
    description: 'stdout+stderr bytes kept per call; the rest is dropped and `output_truncated` set.',
  }),
  REPLY_MAX_BYTES: Type.Integer({
    default: 786432,
    minimum: 0,
    description:
      "Text (stdout, stderr, output, as JSON) one run_code / execute_command answer carries, so that it stays under Dify's 1 MiB cap on text answers; past it the whole output is saved to outputs/ in the workspace (in `files`, with its signed URL) and the texts are cut. 0 for no budget.",
  }),
  ...sandboxLimitSettings,
  UPLOAD_TIMEOUT_S: Type.Number({ default: 60, exclusiveMinimum: 0, description: 'Time limit for fetching a `file_url` in /upload_file.' }),
  SANDBOX_NETWORK_ALLOWED: Type.Boolean({
    default: true,
    description:
      'Whether create_sandbox may ask for `network: true` (HTTP(S) through the filtering egress proxy). Sandboxes have no network unless they ask.',
  }),
  OUTBOUND_ALLOW_CIDRS: Type.String({
    default: '',
    description:
      'Comma-separated IPs/CIDRs that /upload_file and sandbox network may reach although not public (e.g. 10.0.0.0/8). Default: public addresses only.',
  }),
  OUTBOUND_ALLOW_HOSTS: Type.String({
    default: '',
    description:
      "Comma-separated host names reachable whatever they resolve to (`*.example.com` for subdomains), e.g. Dify's internal file host `api`.",
  }),
  IDEMPOTENCY_TTL_S: Type.Number({ default: 3600, minimum: 1, description: 'How long an Idempotency-Key is remembered, in seconds.' }),
  IDEMPOTENCY_MAX_ENTRIES_PER_KEY: Type.Integer({
    default: 1000,
    minimum: 1,
    description: "Idempotency-Keys remembered per API key (the oldest are forgotten first; one API key never pushes out another's).",
  }),
  IDEMPOTENCY_MAX_BYTES_PER_KEY: Type.Integer({
    default: 32 * MiB,
    minimum: MiB,
    description: 'Bytes of kept answers per API key (the oldest are forgotten first).',
  }),
  IDEMPOTENCY_MAX_ANSWER_BYTES: Type.Integer({
    default: 4 * MiB,
    minimum: 1024,
    description:
      'Largest answer kept for replay; a retry of a call whose answer was larger gets 409 IDEMPOTENT_ANSWER_NOT_KEPT instead of running the code again.',
  }),
  DIFY_SANDBOX_TIMEOUT_S: Type.Number({
    default: 55,
    minimum: 1,
    description:
      "Time limit of one /v1/sandbox/run (dify-sandbox compatible) call; keep it under Dify's CODE_EXECUTION_READ_TIMEOUT (60 s).",
  }),
  DIFY_FILES_URL_REWRITE: Type.String({
    default: '',
    description:
      'Rewrites file URLs before fetching them, as `public-prefix=internal-prefix` pairs separated by commas (e.g. `https://dify.example.com=http://api:5001`): Dify signs URLs with its public FILES_URL, which the service may not reach.',
  }),
  SANDBOX_EXTRA_PYTHONPATH: Type.String({
    default: '',
    description:
      'Colon-separated host directories of extra Python packages (e.g. made with `pip install --target`), mounted read-only in every sandbox and put on its PYTHONPATH.',
  }),
  SANDBOX_PYTHON: Type.String({
    default: '/usr/bin/python3',
    description: 'Python interpreter used inside sandboxes (must live under /usr).',
  }),
  SANDBOX_ROOT: Type.String({
    default: '/tmp/code-interpreter-wrapper',
    description: 'Host directory for the agent copy and per-sandbox runtime files.',
  }),
  SANDBOX_UID_BASE: Type.Integer({
    default: 1_500_000_000,
    minimum: 1000,
    maximum: 4_000_000_000,
    description:
      'First host uid given to sandboxes when running as root (each sandbox gets its own). No other user or service may use the range.',
  }),
  SANDBOX_UID_COUNT: Type.Integer({
    default: 65536,
    minimum: 16,
    maximum: 16_777_216,
    description: 'Size of the sandbox uid range; at start, processes left in it by an earlier run are killed.',
  }),
  ALLOW_UNSANDBOXED: Type.Boolean({
    default: false,
    description: 'If bubblewrap cannot run, run code WITHOUT isolation instead of refusing. Never in production.',
  }),
});

export type Config = Readonly<Static<typeof ConfigSchema>> & {
  readonly apiKeys: readonly string[];
  /** OUTBOUND_ALLOW_CIDRS and OUTBOUND_ALLOW_HOSTS, parsed. */
  readonly outbound: OutboundPolicy;
};

/** Reads settings from an environment (process.env in production, a literal object in tests). */
export function loadConfig(env: Record<string, string | undefined>): Config {
  const picked: Record<string, unknown> = {};
  for (const key of Object.keys(ConfigSchema.properties)) {
    const raw = env[key];
    if (raw !== undefined && raw !== '') picked[key] = raw;
  }
  const withDefaults = Value.Default(ConfigSchema, picked);
  const converted = Value.Convert(ConfigSchema, withDefaults);
  const cleaned = Value.Clean(ConfigSchema, converted);
  if (!Value.Check(ConfigSchema, cleaned)) {
    const problems = [...Value.Errors(ConfigSchema, cleaned)].map((e) => `${e.instancePath.slice(1) || '(root)'}: ${e.message}`).join('; ');
    throw new Error(`invalid configuration: ${problems}`);
  }
  const cfg = cleaned as Static<typeof ConfigSchema>;
  const apiKeys = [cfg.API_KEY, ...cfg.API_KEYS.split(',')].map((k) => k.trim()).filter(Boolean);
  const host = cfg.HOST || (apiKeys.length > 0 ? '0.0.0.0' : '127.0.0.1');
  if (cfg.IDEMPOTENCY_MAX_ANSWER_BYTES > cfg.IDEMPOTENCY_MAX_BYTES_PER_KEY) {
    throw new Error('invalid configuration: IDEMPOTENCY_MAX_ANSWER_BYTES must not exceed IDEMPOTENCY_MAX_BYTES_PER_KEY');
  }
  if (cfg.EXEC_TIMEOUT_S > cfg.EXEC_MAX_TIMEOUT_S) {
    throw new Error('invalid configuration: EXEC_TIMEOUT_S must not exceed EXEC_MAX_TIMEOUT_S');
  }
  return Object.freeze({
    ...cfg,
    HOST: host,
    PUBLIC_BASE_URL: cfg.PUBLIC_BASE_URL.replace(/\/+$/, ''),
    TOOL_SERVER_URL: cfg.TOOL_SERVER_URL.replace(/\/+$/, ''),
    apiKeys: Object.freeze(apiKeys),
    outbound: parsePolicy(cfg.OUTBOUND_ALLOW_CIDRS, cfg.OUTBOUND_ALLOW_HOSTS),
  });
}

/** True when `host` only accepts connections from this machine. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\./.test(host);
}
