/** E2B access tokens: stable across restarts, replaced secret when the stored one is not 32 random bytes. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.js';
import { AccessTokens } from '../../src/e2b/common.js';

describe('AccessTokens', () => {
  it('gives the same token after a restart (the secret is kept in STATE_DIR), and another for another owner', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciw-tokens-'));
    const config = loadConfig({ STATE_DIR: dir });
    const first = new AccessTokens(config).token('sbx_1', 'key:a');
    expect(new AccessTokens(config).token('sbx_1', 'key:a')).toBe(first);
    expect(new AccessTokens(config).token('sbx_1', 'key:b')).not.toBe(first);
    expect(new AccessTokens(config).matches(first, 'sbx_1', 'key:a')).toBe(true);
    expect(new AccessTokens(config).matches(first.slice(0, -1), 'sbx_1', 'key:a')).toBe(false);
  });

  it('never keys tokens on an empty or damaged secret file: it makes a new secret', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ciw-tokens-'));
    writeFileSync(join(dir, 'e2b-token-secret'), '');
    const config = loadConfig({ STATE_DIR: dir });
    new AccessTokens(config).token('sbx_1', 'key:a');
    expect(readFileSync(join(dir, 'e2b-token-secret'), 'utf8')).toMatch(/^[0-9a-f]{64}$/);
  });
});
