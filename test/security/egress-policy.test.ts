/**
 * The egress policy, judged through the policy function only (no traffic leaves this machine): addresses
 * written so that a naive check takes them for public ones, and this host's own global addresses.
 */
import { describe, expect, it } from 'vitest';
import { deniedReason, literalDenied, parsePolicy } from '../../src/core/network-policy.js';

// Public addresses standing in for this host's own (only judged here: nothing is sent anywhere).
const OWN = '93.184.216.34';
const OWN6 = '2606:2800:220:1:248:1893:25c8:1946';
const policy = parsePolicy('', '', () => new Set([OWN, OWN6]));

describe('addresses that hide a forbidden IPv4 address inside IPv6', () => {
  it.each([
    '::127.0.0.1',
    '::7f00:1',
    '0:0:0:0:0:0:7f00:1',
    '::169.254.169.254',
    '::a9fe:a9fe',
    '::10.0.0.1',
    '::192.168.1.1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:169.254.169.254',
    '64:ff9b::7f00:1',
    '2002:7f00:1::',
    '::',
    '::1',
  ])('%s is refused', (address) => {
    expect(deniedReason(policy, address)).not.toBeNull();
    expect(literalDenied(policy, `[${address}]`)).not.toBeNull();
  });

  it('an IPv4-compatible address is judged as the IPv4 address it holds', () => {
    expect(deniedReason(policy, '::7f00:1')).toMatch(/loopback/);
    expect(deniedReason(policy, '::8.8.8.8')).toBeNull();
  });
});

describe("this host's own addresses", () => {
  it('are refused even when globally routable, in every spelling', () => {
    for (const a of [OWN, `::ffff:${OWN}`, `::${OWN}`, OWN6, '2606:2800:0220:0001:0248:1893:25c8:1946']) {
      expect(deniedReason(policy, a), a).toMatch(/this host's own addresses/);
    }
    expect(deniedReason(policy, '93.184.216.35')).toBeNull();
  });

  it('stay reachable when the operator allows them by name or range', () => {
    expect(
      deniedReason(
        parsePolicy(`${OWN}/32`, '', () => new Set([OWN])),
        OWN,
      ),
    ).toBeNull();
    expect(
      deniedReason(
        parsePolicy('', 'self.example', () => new Set([OWN])),
        OWN,
        'self.example',
      ),
    ).toBeNull();
  });

  it('are read from the network interfaces by default (loopback among them, refused as loopback)', () => {
    expect(deniedReason(parsePolicy('', ''), '127.0.0.1')).toMatch(/loopback/);
  });
});
