// The 400-line bound of ESLint's max-lines (eslint.config.js) for the source files ESLint does not read:
// the in-sandbox agent (Python, the JavaScript kernel, C). Exits 1 naming every file over it.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const MAX = 400;
const dir = new URL('../src/agent/', import.meta.url).pathname;
const over = readdirSync(dir)
  .filter((name) => /\.(py|mjs|c)$/.test(name))
  .map((name) => ({ name, lines: readFileSync(join(dir, name), 'utf8').split('\n').length - 1 }))
  .filter((f) => f.lines > MAX);
for (const f of over) console.error(`src/agent/${f.name}: ${f.lines} lines, more than ${MAX}; split it`);
process.exit(over.length > 0 ? 1 : 0);
