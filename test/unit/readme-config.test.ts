import { describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { ConfigSchema } from '../../src/config.js';

/** The table rows as the README shows them (`UPDATE_README=1` rewrites the table from the schema). */
function rows(): string {
  return Object.entries(ConfigSchema.properties)
    .map(([key, schema]) => {
      const { default: def, description } = schema as unknown as { default: unknown; description: string };
      return `| \`${key}\` | \`${def === '' ? '(empty)' : String(def)}\` | ${description.replace(/\|/g, '\\|')} |`;
    })
    .join('\n');
}

describe('README configuration table', () => {
  const url = new URL('../../README.md', import.meta.url);
  if (process.env.UPDATE_README) {
    const text = readFileSync(url, 'utf8');
    writeFileSync(url, text.replace(/(\| variable \| default \| meaning \|\n\|---\|---\|---\|\n)(?:\|.*\n)+/, `$1${rows()}\n`));
  }
  const readme = readFileSync(url, 'utf8');

  it('documents every setting with its default', () => {
    for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
      const def = (schema as unknown as { default: unknown }).default;
      const shown = def === '' ? '(empty)' : String(def);
      expect(readme, key).toContain(`| \`${key}\` | \`${shown}\` |`);
    }
  });
});
