import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { ConfigSchema } from '../../src/config.js';

describe('README configuration table', () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');

  it('documents every setting with its default', () => {
    for (const [key, schema] of Object.entries(ConfigSchema.properties)) {
      const def = (schema as unknown as { default: unknown }).default;
      const shown = def === '' ? '(empty)' : String(def);
      expect(readme, key).toContain(`| \`${key}\` | \`${shown}\` |`);
    }
  });
});
