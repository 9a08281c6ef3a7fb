import { describe, expect, it } from 'vitest';
import { deniedReason, guardedLookup, literalDenied, parsePolicy } from '../../src/core/network-policy.js';

const none = parsePolicy('', '');

describe('outbound address policy', () => {
  it('allows only global unicast by default', () => {
    expect(deniedReason(none, '93.184.216.34')).toBeNull();
    expect(deniedReason(none, '2606:2800:220:1:248:1893:25c8:1946')).toBeNull();
    for (const a of [
      '127.0.0.1',
      '127.1.2.3',
      '10.1.2.3',
      '172.16.0.1',
      '192.168.1.1',
      '100.64.0.1',
      '169.254.169.254',
      '0.0.0.0',
      '224.0.0.1',
      '255.255.255.255',
      '::1',
      '::',
      'fe80::1',
      'fd00::1',
      'fc00::1',
      '::ffff:127.0.0.1',
      '::ffff:169.254.169.254',
      '::ffff:10.0.0.1',
      '64:ff9b::a9fe:a9fe',
      '2002:a9fe:a9fe::1',
    ]) {
      expect(deniedReason(none, a), a).not.toBeNull();
    }
  });

  it('says which name resolved to what and how to allow it', () => {
    expect(deniedReason(none, '10.0.0.5', 'files.internal')).toMatch(
      /files\.internal resolves to 10\.0\.0\.5, a private address.*OUTBOUND_ALLOW_CIDRS/,
    );
  });

  it('opens exceptions by CIDR and by host name, never for multicast or unspecified', () => {
    const p = parsePolicy('10.0.0.0/8, 127.0.0.1', 'api, *.svc.cluster.local');
    expect(deniedReason(p, '10.9.8.7')).toBeNull();
    expect(deniedReason(p, '::ffff:10.9.8.7')).toBeNull();
    expect(deniedReason(p, '127.0.0.1')).toBeNull();
    expect(deniedReason(p, '127.0.0.2')).not.toBeNull();
    expect(deniedReason(p, '172.18.0.3', 'api')).toBeNull();
    expect(deniedReason(p, '172.18.0.3', 'files.default.svc.cluster.local')).toBeNull();
    expect(deniedReason(p, '172.18.0.3', 'apiX')).not.toBeNull();
    expect(deniedReason(p, '0.0.0.0', 'api')).not.toBeNull();
    expect(deniedReason(p, '224.0.0.1', 'api')).not.toBeNull();
  });

  it('rejects a malformed allow-list entry', () => {
    expect(() => parsePolicy('10.0.0.0/33', '')).toThrow(/OUTBOUND_ALLOW_CIDRS/);
  });
});

describe('checks before connecting', () => {
  it('judges IP literals, which net.connect never looks up', () => {
    for (const host of ['169.254.169.254', '10.0.0.1', '[::ffff:169.254.169.254]', '[fd00::1]', '127.0.0.1']) {
      expect(literalDenied(none, host), host).not.toBeNull();
    }
    expect(literalDenied(none, '93.184.216.34')).toBeNull();
    expect(literalDenied(none, 'example.com')).toBeNull();
  });

  it('refuses a name that resolves to a forbidden address', async () => {
    const lookup = guardedLookup(none);
    const err = await new Promise<Error | null>((resolve) => lookup('localhost', {}, (e) => resolve(e)));
    expect(err?.message).toMatch(/localhost resolves to .*loopback/);
    const ok = await new Promise<string>((resolve) =>
      guardedLookup(parsePolicy('127.0.0.0/8,::1', ''))('localhost', {}, (_e, a) => resolve(String(a))),
    );
    expect(ok).toMatch(/127\.0\.0\.1|::1/);
  });
});
