/**
 * A dify-sandbox compatible API, so Dify's Code node and Template Transform node can run here: point Dify's
 * CODE_EXECUTION_ENDPOINT at this service and CODE_EXECUTION_API_KEY at one of its API keys. Each call runs
 * as a fresh process in a clean, short-lived sandbox with the usual isolation and limits, then the sandbox
 * is destroyed: nothing carries over from one call to the next. Answers use dify-sandbox's envelope
 * {code, message, data}; `data.error` is set only on a real failure (non-zero exit, timeout, limit), never
 * for mere stderr output. Like dify-sandbox, DIFY_SANDBOX_WORKERS runs go at once and up to
 * DIFY_SANDBOX_MAX_QUEUED wait for a worker; past that the answer is 503, which Dify reports as "unavailable".
 * A body dify-sandbox could not bind is its 200 {code: -400}, not an HTTP error.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { Type } from 'typebox';
import type { Config } from '../config.js';
import { ServiceError, ErrorCode, describeError } from '../core/errors.js';
import { CODE_NODE_OWNER, type SandboxService } from '../service/sandbox-service.js';
import { FairQueue } from '../service/fair-queue.js';
import type { Caller } from '../api/caller.js';
import { createSandbox, runCode, runCommand, stopSandbox, type RunCodeResult, type RunCommandResult } from '../api/sandbox-operations.js';
import { writeFile } from '../api/file-operations.js';
import { baseUrl } from '../api/wire.js';
import { outcomeOf } from '../api/outcome.js';

const RUNNERS: Record<string, { file: string; command: string }> = {
  python3: { file: 'main.py', command: 'python3 main.py' },
  nodejs: { file: 'main.js', command: 'node main.js' },
};

const Envelope = Type.Object({
  code: Type.Integer({ description: '0 on success; negative on failure, as dify-sandbox.' }),
  message: Type.String(),
  data: Type.Optional(Type.Unknown()),
});

const RunBody = Type.Object({
  language: Type.String({ description: 'python3 or nodejs (Jinja2 templates arrive as python3).' }),
  code: Type.String({ description: "The runner script Dify built around the node's code." }),
  preload: Type.Optional(Type.String({ description: 'Ignored, as dify-sandbox does by default.' })),
  enable_network: Type.Optional(Type.Boolean({ description: 'Filtered HTTP(S) for this run, when SANDBOX_NETWORK_ALLOWED.' })),
});

const digest = (s: string) => createHash('sha256').update(s).digest();

/** Errors that are a limit or the sandbox's doing, not the script's own exit. */
const LIMITS = new Set([
  'MemoryLimitExceeded',
  'ProcessLimitExceeded',
  'CpuTimeLimitExceeded',
  'DiskQuotaExceeded',
  'OutputLimitExceeded',
  'KernelDied',
]);

/** The exit status a Python script's error stands for: SystemExit's code (0 for none), else 1. */
function exitOf(error: { name: string; value: string } | null): number {
  if (!error) return 0;
  if (error.name !== 'SystemExit') return 1;
  const code = error.value.trim();
  if (code === '' || code === 'None' || code === '0') return 0;
  return /^-?\d+$/.test(code) ? Number(code) & 0xff : 1;
}

/** dify-sandbox's failure text: timeout, limit, or "process exited with code N" plus stderr. */
function failureOf(r: RunCommandResult): string {
  if (r.timedOut) return 'error: timeout';
  if (r.error && r.error.name !== 'CommandFailed') return `error: ${r.error.name}: ${r.error.value}`;
  if (r.exitCode !== 0) return `process exited with code ${r.exitCode}\n${r.stderr}`;
  return '';
}

export const difySandboxRoutes: FastifyPluginAsyncTypebox<{ service: SandboxService; config: Config }> = async (
  app,
  { service, config },
) => {
  const keys = config.apiKeys.map(digest);
  /** dify-sandbox answers a bad X-Api-Key with 401 and an empty body. */
  const authorized = (req: FastifyRequest, reply: FastifyReply): boolean => {
    if (keys.length === 0) return true;
    const given = digest(String(req.headers['x-api-key'] ?? ''));
    if (keys.some((k) => timingSafeEqual(k, given))) return true;
    void reply.status(401).send('');
    return false;
  };
  // dify-sandbox's worker pool: DIFY_SANDBOX_WORKERS runs at once, DIFY_SANDBOX_MAX_QUEUED waiting (all runs have
  // one owner, the Code node); past that the queue refuses (429), answered as dify-sandbox's 503 below.
  const workers = new FairQueue(config.DIFY_SANDBOX_WORKERS, config.DIFY_SANDBOX_MAX_QUEUED);
  // dify-sandbox answers a body it cannot bind with 200 {code: -400, message}: so does this route.
  app.setErrorHandler((err, req, reply) => {
    const e = describeError(err);
    if (e.internal) req.log.error({ err, reqId: req.id }, 'request failed');
    if (e.status === 400 || e.status === 413 || e.status === 415) return reply.status(200).send({ code: -400, message: e.message });
    if (e.status === 503 || e.status === 429) return reply.status(503).send({ code: -503, message: 'Too many requests' });
    return reply.status(e.status).send({ code: -e.status, message: e.message });
  });
  const common = {
    config: { public: true },
    schema: { tags: ['dify-sandbox'], response: { 200: Envelope, 400: Envelope, 503: Envelope } },
  };

  app.post(
    '/v1/sandbox/run',
    {
      ...common,
      schema: {
        ...common.schema,
        operationId: 'difySandboxRun',
        summary: "Run code as dify-sandbox does (for Dify's Code node)",
        description:
          'Runs a python3 or nodejs script in a fresh sandbox and returns {code: 0, data: {stdout, stderr, error, exit_code}}. ' +
          'error is empty unless the script failed: non-zero exit, timeout (DIFY_SANDBOX_TIMEOUT_S) or a limit.',
        body: RunBody,
      },
    },
    async (req, reply) => {
      if (!authorized(req, reply)) return reply;
      const runner = Object.hasOwn(RUNNERS, req.body.language) ? RUNNERS[req.body.language] : undefined;
      if (!runner)
        return reply.status(400).send({ code: -400, message: `unsupported language '${req.body.language}'; use python3 or nodejs` });
      // Every run is the Code node's, whoever's key it came with: its own owner, its own share of sandboxes.
      const caller: Caller = { service, config, owner: DIFY_OWNER, baseUrl: baseUrl(config, req) };
      return workers.run(DIFY_OWNER, () => run(caller, runner, req.body.code, req.body.enable_network === true, reply, req));
    },
  );

  const run = async (
    caller: Caller,
    runner: { file: string; command: string },
    code: string,
    wantsNetwork: boolean,
    reply: FastifyReply,
    req: FastifyRequest,
  ) => {
    let sandboxId: string;
    try {
      const network = wantsNetwork && config.SANDBOX_NETWORK_ALLOWED;
      ({
        info: { id: sandboxId },
      } = await createSandbox(caller, { network, idleTimeoutS: config.DIFY_SANDBOX_TIMEOUT_S + 60 }));
    } catch (err) {
      if (err instanceof ServiceError && (err.code === ErrorCode.SANDBOX_LIMIT_REACHED || err.code === ErrorCode.BACKEND_UNAVAILABLE)) {
        return reply.status(503).send({ code: -503, message: 'Too many requests' });
      }
      throw err;
    }
    try {
      const ref = { sandboxId };
      const timeoutS = config.DIFY_SANDBOX_TIMEOUT_S;
      let data: { stdout: string; stderr: string; error: string; exit_code: number };
      if (runner.file === 'main.py') {
        // Python runs in the fresh sandbox's own interpreter, already started (from the pool): the script as
        // __main__, as `python3 main.py` would, without a new Python process (15–20 ms) per run.
        const { outcome } = await runCode(caller, ref, { code, language: 'python', timeoutS });
        const r = outcome.result as RunCodeResult;
        const exit = exitOf(r.error);
        req.outcome = outcomeOf(exit === 0 ? null : r.error, r.timedOut);
        const failure = r.timedOut
          ? 'error: timeout'
          : exit === 0
            ? ''
            : r.error && LIMITS.has(r.error.name)
              ? `error: ${r.error.name}: ${r.error.value}`
              : `process exited with code ${exit}\n${r.stderr}${r.error?.traceback || (r.error ? `${r.error.name}: ${r.error.value}\n` : '')}`;
        data = { stdout: r.stdout, stderr: r.stderr, error: failure, exit_code: exit };
      } else {
        await writeFile(caller, ref, { path: runner.file, data: Buffer.from(code, 'utf8') });
        const { result } = await runCommand(caller, ref, { command: runner.command, timeoutS });
        req.outcome = result.exitCode !== 0 && !result.error ? 'error' : outcomeOf(result.error, result.timedOut);
        data = { stdout: result.stdout, stderr: result.stderr, error: failureOf(result), exit_code: result.exitCode };
      }
      return { code: 0, message: 'success', data };
    } finally {
      // Ended after the answer is sent: a sandbox's end (its processes killed, its files removed) is not the caller's wait.
      reply.raw.once('finish', () => void stopSandbox(caller, { sandboxId }).catch(() => undefined));
      setTimeout(() => void stopSandbox(caller, { sandboxId }).catch(() => undefined), 60_000).unref();
    }
  };

  const dependencies = async (req: FastifyRequest, reply: FastifyReply) => {
    if (!authorized(req, reply)) return reply;
    return { code: 0, message: 'success', data: { dependencies: [] } };
  };
  const depsSchema = (operationId: string, summary: string) => ({
    ...common,
    schema: {
      ...common.schema,
      operationId,
      summary,
      description: `${summary}. Packages come from the host (see the README); the list is empty, as dify-sandbox returns when none are configured.`,
    },
  });
  app.get('/v1/sandbox/dependencies', depsSchema('difySandboxDependencies', 'Python dependencies (dify-sandbox compatible)'), dependencies);
  app.post(
    '/v1/sandbox/dependencies/update',
    depsSchema('difySandboxDependenciesUpdate', 'Update dependencies (dify-sandbox compatible; nothing to do)'),
    dependencies,
  );
  app.get(
    '/v1/sandbox/dependencies/refresh',
    depsSchema('difySandboxDependenciesRefresh', 'Refresh dependencies (dify-sandbox compatible; nothing to do)'),
    dependencies,
  );
};

/** Owner of the short-lived sandboxes of this API: no API key's listing ever shows them. */
const DIFY_OWNER = CODE_NODE_OWNER;
