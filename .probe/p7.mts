import { startTestApp } from '../test/helpers/app.js';
import { localEnv } from '../test/helpers/local.js';
const t = await startTestApp(localEnv({}));
const id = (await t.post('/create_sandbox', { env: { PYTHONPATH: '/workspace/.evil' } })).body.sandbox_id;
console.log((await t.post('/run_code', { sandbox_id: id, code: 'import sys, os; print(sys.path); print(os.environ.get("PYTHONPATH")); print(sys.flags)' })).body.output);
await t.close();
