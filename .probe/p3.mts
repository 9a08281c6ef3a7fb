import { startTestApp } from '../test/helpers/app.js';
import { monitorEventLoopDelay } from 'node:perf_hooks';
const t = await startTestApp({});
const text = ' '.repeat(1_000_000) + '!';
const bodies: Record<string, [string, string, string]> = {
  write64: ['/write_file', JSON.stringify({ sandbox_id: 'x', remote_path: 'a', encoding: 'base64', content: text }), 'application/json'],
  code64: ['/run_code', JSON.stringify({ sandbox_id: 'x', code_base64: text }), 'application/json'],
  form: ['/run_code', new URLSearchParams({ sandbox_id: 'x', code_base64: text }).toString(), 'application/x-www-form-urlencoded'],
  many: ['/run_code', `{"code": "1", "x": [${Array(1_500_000).fill('{}').join(',')}]}`, 'application/json'],
  nums: ['/run_code', `{"code": "1", "x": [${Array(2_000_000).fill('1').join(',')}]}`, 'application/json'],
};
for (const [name, [url, payload, type]] of Object.entries(bodies)) {
  const h = monitorEventLoopDelay({ resolution: 1 }); h.enable();
  const t0 = performance.now();
  const r = await t.app.inject({ method: 'POST', url, payload, headers: { 'content-type': type } });
  h.disable();
  console.log(name, r.statusCode, (performance.now() - t0).toFixed(1), 'ms total; worst stall', (h.max / 1e6).toFixed(1));
}
await t.close();
