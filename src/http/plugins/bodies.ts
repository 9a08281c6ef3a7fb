/**
 * Request bodies Dify can send without breaking. Dify pastes variables into a JSON body unescaped, so quotes
 * and backslashes in LLM-written code break it; every RPC route therefore also accepts:
 *   - text/plain: the raw code / command / content, other fields in the query string;
 *   - application/x-www-form-urlencoded and multipart/form-data (Dify's form-data, its empty
 *     `__multipart_placeholder__` part ignored; file parts kept for /upload_file and /write_file);
 *   - application/octet-stream, or no or any other Content-Type: raw bytes of a file (Dify's "binary" body,
 *     which it sends without a Content-Type), other fields in the query;
 *   - `code_base64` / `command_base64` / `content_base64` fields, decoded here.
 * Query-string fields fill in what the body leaves out, whatever its type. After this, routes see one plain
 * object, validated by their schemas like JSON.
 */
import { errorCodes, type FastifyInstance, type FastifyRequest } from 'fastify';
import fp from 'fastify-plugin';
import multipart, { type MultipartFile } from '@fastify/multipart';
import { ServiceError, ErrorCode } from '../../core/errors.js';
import { syncHook } from './sync-hook.js';
import { isBase64 } from '../../api/file-input.js';
import { JsonShapeGuard } from './json-shape.js';
import { FormDecoder } from './form-decoder.js';

/** Looks at each chunk of a body as it arrives; answers why the body is refused, or null. */
interface BodyGuard {
  push(chunk: Buffer): string | null;
}

/** A file that came in the request itself (a multipart file part, or a binary body). */
export interface UploadedFile {
  readonly field: string;
  readonly filename: string;
  readonly mimetype: string;
  readonly data: Buffer;
}

declare module 'fastify' {
  interface FastifyContextConfig {
    /** The route reads its body as it came (a protocol of its own: E2B's): no fields merged or decoded. */
    rawBody?: boolean;
  }
  interface FastifyRequest {
    /** Files sent in the request (multipart parts, binary body), in order. */
    uploadedFiles: UploadedFile[];
  }
}

const PLACEHOLDER = '__multipart_placeholder__';
const MAX_FORM_FIELDS = 1000;

/** The field a raw text/plain body fills, by route. */
const RAW_FIELD: Record<string, string> = {
  '/run_code': 'code',
  '/execute_command': 'command',
  '/write_file': 'content',
  '/upload_file': 'file_url',
};

const BASE64_FIELDS = ['code', 'command', 'content'] as const;

type Fields = Record<string, unknown>;

function decodeBase64Fields(body: Fields): void {
  for (const name of BASE64_FIELDS) {
    const encoded = body[`${name}_base64`];
    if (encoded === undefined) continue;
    if (typeof encoded !== 'string' || !isBase64(encoded, true)) {
      throw new ServiceError(ErrorCode.VALIDATION_FAILED, `${name}_base64 is not valid base64`);
    }
    body[name] = Buffer.from(encoded, 'base64').toString('utf8');
    delete body[`${name}_base64`];
  }
}

/** Multipart fields as plain values; file parts were collected by onFile. */
function multipartFields(body: Record<string, unknown>): Fields {
  const out: Fields = {};
  for (const [key, raw] of Object.entries(body)) {
    const parts = Array.isArray(raw) ? raw : [raw];
    const values = parts
      .filter(
        (p): p is { type: string; value: unknown } => typeof p === 'object' && p !== null && (p as { type?: string }).type === 'field',
      )
      .map((p) => p.value);
    if (values.length === 1) out[key] = values[0];
    else if (values.length > 1) out[key] = values;
  }
  return out;
}

export const bodiesPlugin = fp(
  async (app: FastifyInstance, opts: { maxFileBytes: number }) => {
    app.decorateRequest('uploadedFiles', null as unknown as UploadedFile[]);
    // Hooks here and in auth/idempotency take callbacks, not promises: they run on every call of the hot path.
    app.addHook(
      'onRequest',
      syncHook((req) => {
        req.uploadedFiles = [];
        // The multipart reader throws a plain error (a 500) on a multipart body without a boundary: refuse it here.
        const type = req.headers['content-type'];
        if (typeof type === 'string' && /^\s*multipart\//i.test(type) && !/;\s*boundary=(?:"[^"]+"|[^\s;"]+)/i.test(type)) {
          throw new ServiceError(
            ErrorCode.VALIDATION_FAILED,
            'a multipart body needs a boundary in its Content-Type (multipart/form-data; boundary=...); let the HTTP client set the header',
          );
        }
      }),
    );

    await app.register(multipart, {
      attachFieldsToBody: true,
      limits: { fileSize: opts.maxFileBytes, files: 20, fields: 100, fieldSize: opts.maxFileBytes },
      throwFileSizeLimit: true,
      async onFile(this: FastifyRequest, part: MultipartFile) {
        const data = await part.toBuffer();
        if (part.fieldname === PLACEHOLDER || (part.filename === '' && data.length === 0)) return;
        this.uploadedFiles.push({ field: part.fieldname, filename: part.filename, mimetype: part.mimetype, data });
      },
    });

    // Forms are decoded as they arrive (form-decoder.ts), at most MAX_FORM_FIELDS fields.
    app.addContentTypeParser('application/x-www-form-urlencoded', (req, payload, done) => {
      const form = new FormDecoder(MAX_FORM_FIELDS);
      readBody(req, payload, form, (err) => (err ? done(err) : done(null, form.finish())));
    });
    app.addContentTypeParser('application/octet-stream', (req, payload, done) => readBody(req, payload, null, done));
    // Dify's HTTP node sends a "binary" body with no Content-Type at all (binary is not in its body-type →
    // content-type map), and users pick other types for files: any other type is raw bytes, as octet-stream.
    app.addContentTypeParser('*', (req, payload, done) => readBody(req, payload, null, done));
    // JSON is read like a binary body, its shape bounded as it arrives (json-shape.ts); an empty POST (Dify's
    // "none" body, curl -X POST) means "no fields", not a malformed request.
    const parseJson = app.getDefaultJsonParser('error', 'error');
    app.removeContentTypeParser('application/json');
    app.addContentTypeParser('application/json', (req, payload, done) => {
      readBody(req, payload, new JsonShapeGuard(), (err, body) => {
        if (err) return done(err);
        const text = body!.toString('utf8');
        if (text.trim() === '') return done(null, {});
        parseJson(req, text, done);
      });
    });

    app.addHook('preValidation', syncHook(normalizeBody));
  },
  { name: 'ciw-bodies' },
);

/**
 * A body with its Content-Length is copied into one buffer of that size as it arrives: Fastify's own reader
 * keeps the chunks and joins them at the end, which for a 50 MB upload copies it once more, holds it twice
 * and stalls the event loop while it does. Same limits and errors as Fastify's. A JSON body's shape is
 * checked chunk by chunk by `guard`, and the body refused at the first chunk that breaks it.
 */
function readBody(
  req: FastifyRequest,
  payload: NodeJS.ReadableStream,
  guard: BodyGuard | null,
  done: (err: Error | null, body?: Buffer) => void,
): void {
  const limit = req.routeOptions.bodyLimit ?? Infinity;
  const header = req.headers['content-length'];
  const declared = header === undefined ? NaN : Number(header);
  if (declared > limit) {
    done(new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE());
    return;
  }
  const whole = Number.isSafeInteger(declared) && declared >= 0 ? Buffer.allocUnsafe(declared) : null;
  const chunks: Buffer[] = [];
  let received = 0;
  const stop = () => {
    payload.removeListener('data', onData);
    payload.removeListener('end', onEnd);
    payload.removeListener('error', onEnd);
  };
  const onData = (chunk: Buffer) => {
    received += chunk.length;
    if (received > limit || (whole !== null && received > whole.length)) {
      stop();
      done(received > limit ? new errorCodes.FST_ERR_CTP_BODY_TOO_LARGE() : new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
      return;
    }
    const refused = guard?.push(chunk);
    if (refused) {
      stop();
      done(new ServiceError(ErrorCode.VALIDATION_FAILED, refused));
      return;
    }
    if (whole !== null) chunk.copy(whole, received - chunk.length);
    else chunks.push(chunk);
  };
  const onEnd = (err?: Error & { statusCode?: number }) => {
    stop();
    if (err) {
      if (!(typeof err.statusCode === 'number' && err.statusCode >= 400)) err.statusCode = 400;
      done(err);
    } else if (whole !== null && received !== whole.length) {
      done(new errorCodes.FST_ERR_CTP_INVALID_CONTENT_LENGTH());
    } else {
      done(null, whole ?? Buffer.concat(chunks, received));
    }
  };
  payload.on('data', onData);
  payload.on('end', onEnd);
  payload.on('error', onEnd);
  payload.resume();
}

/** Turns whatever body came into one plain object of fields (see the top of this file). */
function normalizeBody(req: FastifyRequest): void {
  // Routes with a protocol of their own (MCP's JSON-RPC, E2B's) take their body as it came: config rawBody.
  if (req.method !== 'POST' || req.routeOptions.config?.rawBody) return;
  const query = (req.query ?? {}) as Fields;
  let body: Fields;
  if (req.body === undefined || req.body === null) {
    body = {};
  } else if (typeof req.body === 'string') {
    const field = RAW_FIELD[req.routeOptions.url ?? ''];
    body = field ? { [field]: req.body } : {};
  } else if (Buffer.isBuffer(req.body)) {
    const filename =
      typeof query.remote_filename === 'string'
        ? query.remote_filename
        : typeof query.remote_path === 'string'
          ? query.remote_path
          : 'upload.bin';
    req.uploadedFiles.push({ field: 'file', filename, mimetype: String(req.headers['content-type']), data: req.body });
    body = {};
  } else if (req.isMultipart()) {
    body = multipartFields((req.body ?? {}) as Record<string, unknown>);
  } else if (req.body !== null && typeof req.body === 'object' && !Array.isArray(req.body)) {
    body = { ...(req.body as Fields) };
  } else {
    // A JSON array or scalar: leave it for the schema to refuse.
    return;
  }
  for (const [k, v] of Object.entries(query)) if (body[k] === undefined) body[k] = v;
  decodeBase64Fields(body);
  req.body = body;
}
