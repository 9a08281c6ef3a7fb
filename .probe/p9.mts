import { localOptions } from '../test/helpers/local.js';
import { createLocalBackend } from '../src/backends/local/local-backend.js';
const options = localOptions({ uidCount: 16 });
const backend = createLocalBackend(options);
console.log((await backend.init()).ready);
for (let i = 0; i < 40; i++) {
  const bad = i % 4 < 2 ? { id: `bad-\u0000-${i}`, env: {} } : { id: `bad-${i}`, env: { X: 'y'.repeat(200_000) } };
  const t0 = Date.now();
  const p = backend.create({ ...bad, network: i % 2 === 0 } as any).then(() => 'created?!', (e) => `rejected ${(e as any).code}`);
  const r = await Promise.race([p, new Promise((r) => setTimeout(() => r('HUNG'), 5000))]);
  console.log(i, r, Date.now() - t0);
  if (r === 'HUNG') break;
}
process.exit(0);
