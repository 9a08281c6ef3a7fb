import { startTestApp } from '../test/helpers/app.js';
const b = await startTestApp({ IDEMPOTENCY_MAX_BYTES_PER_KEY: String(1024 * 1024), IDEMPOTENCY_MAX_ANSWER_BYTES: String(512 * 1024) });
const id = (await b.post('/create_sandbox', {})).body.sandbox_id;
const r = await b.app.inject({ method: 'POST', url: '/run_code', payload: { sandbox_id: id, code: `print("${'x'.repeat(200000)}")` }, headers: { 'idempotency-key': 'huge' } });
console.log(r.statusCode, r.body.length, r.body.slice(0, 300));
console.log(b.config.IDEMPOTENCY_MAX_ANSWER_BYTES);
await b.close();
