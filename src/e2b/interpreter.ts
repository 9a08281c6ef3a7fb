/**
 * E2B's code interpreter (port 49999, e2b-dev/code-interpreter's server): /execute streams NDJSON from our
 * kernels — output as it comes, results from the MIME bundles, the error, the execution count, keepalives —
 * and /contexts makes more interpreters in the sandbox. Errors are plain text with the status, as the SDK
 * reads them (404 → NotFoundError, others by status).
 */
import type { FastifyInstance, FastifyReply } from 'fastify';
import { describeError, ServiceError, ErrorCode } from '../core/errors.js';
import type { RichResult, SandboxService } from '../service/sandbox-service.js';
import { type AccessTokens, authenticator, bad, fromSandboxPath, objectBody, stringMap, targetOf, toSandboxPath } from './common.js';

const KEEPALIVE_MS = 5_000;
/** Code and its variables: as much as /run_code takes. */
const INTERPRETER_BODY_LIMIT = 4 * 1024 * 1024;
/** MIME type → the field of E2B's result line. */
const RESULT_FIELDS: ReadonlyArray<readonly [string, string]> = [
  ['text/plain', 'text'],
  ['text/html', 'html'],
  ['text/markdown', 'markdown'],
  ['image/svg+xml', 'svg'],
  ['image/png', 'png'],
  ['image/jpeg', 'jpeg'],
  ['application/pdf', 'pdf'],
  ['text/latex', 'latex'],
  ['application/json', 'json'],
  ['application/javascript', 'javascript'],
];
const LANGUAGES: Readonly<Record<string, string>> = {
  python: 'python',
  javascript: 'javascript',
  js: 'javascript',
  bash: 'bash',
  sh: 'bash',
};

export interface InterpreterDeps {
  readonly service: SandboxService;
  readonly tokens: AccessTokens;
}

export async function interpreterRoutes(app: FastifyInstance, { service, tokens }: InterpreterDeps): Promise<void> {
  const auth = authenticator(service, tokens);
  app.addHook('onRoute', (route) => {
    route.bodyLimit ??= INTERPRETER_BODY_LIMIT;
  });
  app.setErrorHandler((err, req, reply) => {
    const e = describeError(err);
    if (!req.raw.complete) reply.header('connection', 'close');
    return reply.status(e.status).type('text/plain').send(e.message);
  });

  app.post('/execute', { config: { authenticate: auth, rawBody: true } }, async (req, reply) => {
    const target = targetOf(req);
    const body = objectBody(req.body);
    if (typeof body.code !== 'string') throw bad('code must be a string');
    if (body.context_id !== undefined && body.context_id !== null && body.language !== undefined && body.language !== null) {
      throw bad('give either context_id or language, not both');
    }
    const env = stringMap(body.env_vars, 'env_vars');
    const ref = { sandboxId: target.id };
    let language = 'python';
    let context: string | undefined;
    if (typeof body.context_id === 'string') {
      context = (await service.processes.context(target.owner, ref, body.context_id)).id;
    } else if (body.language !== undefined && body.language !== null) {
      const l = LANGUAGES[String(body.language).toLowerCase()];
      if (!l || !Object.hasOwn(LANGUAGES, String(body.language).toLowerCase())) {
        throw new ServiceError(
          ErrorCode.UNSUPPORTED_LANGUAGE,
          `language '${String(body.language).slice(0, 50)}' is not supported here; use python, javascript or bash`,
        );
      }
      language = l;
    }
    await stream(reply, async (send) => {
      const outcome = await service.runCode(target.owner, ref, {
        code: body.code as string,
        language,
        inlineImages: true,
        ...(context ? { context } : {}),
        ...(env ? { env } : {}),
        onOutput: (streamName, text) => send({ type: streamName, text, timestamp: Date.now() * 1000 }),
      });
      if (outcome.runtime !== 'shell') {
        for (const r of outcome.result.results) send(resultLine(r));
      }
      const error = outcome.result.error;
      if (error) send({ type: 'error', name: error.name, value: error.value, traceback: error.traceback });
      const count = outcome.runtime !== 'shell' ? outcome.result.executionCount : undefined;
      if (count !== undefined) send({ type: 'number_of_executions', execution_count: count });
    });
  });

  app.post('/contexts', { config: { authenticate: auth, rawBody: true } }, async (req) => {
    const target = targetOf(req);
    const body = objectBody(req.body);
    const language = LANGUAGES[String(body.language ?? 'python').toLowerCase()];
    if (language !== 'python' && language !== 'javascript') {
      throw new ServiceError(ErrorCode.UNSUPPORTED_LANGUAGE, 'contexts run python or javascript here');
    }
    if (body.cwd !== undefined && body.cwd !== null && typeof body.cwd !== 'string') throw bad('cwd must be a string');
    const cwd = typeof body.cwd === 'string' ? toSandboxPath(body.cwd) : undefined;
    const info = await service.processes.createContext(target.owner, { sandboxId: target.id }, language, cwd);
    return { id: info.id, language: info.language, cwd: fromSandboxPath(info.cwd) };
  });

  app.get('/contexts', { config: { authenticate: auth } }, async (req) => {
    const target = targetOf(req);
    return (await service.processes.contexts(target.owner, { sandboxId: target.id })).map((c) => ({
      id: c.id,
      language: c.language,
      cwd: fromSandboxPath(c.cwd),
    }));
  });

  app.post<{ Params: { id: string } }>('/contexts/:id/restart', { config: { authenticate: auth, rawBody: true } }, async (req, reply) => {
    const target = targetOf(req);
    await service.processes.restartContext(target.owner, { sandboxId: target.id }, req.params.id);
    return reply.status(204).send();
  });

  app.delete<{ Params: { id: string } }>('/contexts/:id', { config: { authenticate: auth, rawBody: true } }, async (req, reply) => {
    const target = targetOf(req);
    await service.processes.removeContext(target.owner, { sandboxId: target.id }, req.params.id);
    return reply.status(204).send();
  });
}

/**
 * Answers 200 with NDJSON lines written as `run` sends them, a keepalive line while it is quiet, and
 * end_of_execution last. A failure after the answer started becomes an error line; one before, the usual
 * status (the caller's route error handler).
 */
async function stream(reply: FastifyReply, run: (send: (line: Record<string, unknown>) => void) => Promise<void>): Promise<void> {
  const res = reply.raw;
  let started = false;
  const pending: string[] = [];
  const send = (line: Record<string, unknown>) => {
    const text = JSON.stringify(line) + '\n';
    if (!started) {
      pending.push(text);
      return;
    }
    if (!res.destroyed) res.write(text);
  };
  // The answer starts at the first output or after a second of quiet: errors found before (an unknown
  // sandbox, a full queue) still get their status.
  const begin = () => {
    if (started) return;
    started = true;
    reply.hijack();
    res.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    for (const t of pending.splice(0)) res.write(t);
  };
  const early = setTimeout(begin, 1000);
  const keepalive = setInterval(() => {
    begin();
    send({ type: 'keepalive' });
  }, KEEPALIVE_MS);
  try {
    const running = run((line) => {
      begin();
      send(line);
    });
    await running;
  } catch (err) {
    if (!started) throw err;
    const e = describeError(err);
    send({ type: 'error', name: e.code, value: e.message, traceback: '' });
  } finally {
    clearTimeout(early);
    clearInterval(keepalive);
  }
  begin();
  send({ type: 'end_of_execution' });
  res.end();
}

function resultLine(r: RichResult): Record<string, unknown> {
  const line: Record<string, unknown> = { type: 'result', is_main_result: r.type === 'execute_result' };
  const extra: Record<string, string> = {};
  for (const [mime, value] of Object.entries(r.data)) {
    const field = RESULT_FIELDS.find(([m]) => m === mime)?.[1];
    if (field === 'json') line.json = parseJson(value);
    else if (field) line[field] = value;
    else extra[mime] = value;
  }
  if (Object.keys(extra).length > 0) line.extra = extra;
  return line;
}

function parseJson(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return value;
  }
}
