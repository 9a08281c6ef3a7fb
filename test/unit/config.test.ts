import { describe, expect, it } from 'vitest';
import { loadConfig, isLoopbackHost } from '../../src/config.js';

describe('loadConfig', () => {
  it('applies defaults from the schema', () => {
    const c = loadConfig({});
    expect(c.PORT).toBe(8000);
    expect(c.SANDBOX_BACKEND).toBe('local');
    expect(c.EXEC_TIMEOUT_S).toBe(50);
    expect(c.apiKeys).toEqual([]);
  });

  it('binds to loopback without a key and to all interfaces with one', () => {
    expect(loadConfig({}).HOST).toBe('127.0.0.1');
    expect(loadConfig({ API_KEY: 'k' }).HOST).toBe('0.0.0.0');
    expect(loadConfig({ API_KEY: 'k', HOST: '10.1.2.3' }).HOST).toBe('10.1.2.3');
  });

  it('converts strings from the environment and merges API_KEY with API_KEYS', () => {
    const c = loadConfig({ PORT: '9001', API_KEY: 'a', API_KEYS: 'b, c,,', SANDBOX_CGROUPS: 'false' });
    expect(c.PORT).toBe(9001);
    expect(c.apiKeys).toEqual(['a', 'b', 'c']);
    expect(c.SANDBOX_CGROUPS).toBe(false);
  });

  it('names the setting that is wrong', () => {
    expect(() => loadConfig({ PORT: 'eighty' })).toThrow(/PORT/);
    expect(() => loadConfig({ SANDBOX_BACKEND: 'docker' })).toThrow(/SANDBOX_BACKEND/);
    expect(() => loadConfig({ EXEC_TIMEOUT_S: '900' })).toThrow(/EXEC_TIMEOUT_S/);
    expect(() => loadConfig({ OUTBOUND_ALLOW_CIDRS: '10.0.0.0/8, not-an-ip' })).toThrow(/OUTBOUND_ALLOW_CIDRS: 'not-an-ip'/);
  });

  it('strips a trailing slash from PUBLIC_BASE_URL', () => {
    expect(loadConfig({ PUBLIC_BASE_URL: 'http://ciw:8000/' }).PUBLIC_BASE_URL).toBe('http://ciw:8000');
  });

  it('knows loopback hosts', () => {
    expect(isLoopbackHost('127.0.0.1')).toBe(true);
    expect(isLoopbackHost('localhost')).toBe(true);
    expect(isLoopbackHost('0.0.0.0')).toBe(false);
  });
});
