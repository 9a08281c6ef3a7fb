/**
 * The one policy for connections the service makes on behalf of users — /upload_file fetches and the
 * egress proxy of sandboxes that have network. Only global unicast addresses are reachable, checked after
 * DNS resolution (so a name that resolves to 10.x or 169.254.169.254 is refused) and on every connection
 * (so redirects and DNS rebinding do not help). Operators open exceptions by CIDR or by host name, e.g. for
 * Dify's internal file host.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { networkInterfaces } from 'node:os';
import ipaddr from 'ipaddr.js';

export interface OutboundPolicy {
  /** Address ranges reachable even though they are not global unicast (OUTBOUND_ALLOW_CIDRS). */
  readonly allowCidrs: ReadonlyArray<[ipaddr.IPv4 | ipaddr.IPv6, number]>;
  /** Host names whose addresses are reachable whatever they are (OUTBOUND_ALLOW_HOSTS); `*.x` matches subdomains. */
  readonly allowHosts: readonly string[];
  /**
   * This host's own addresses (normalized), which are never "public" even when globally routable: through
   * them a sandbox would reach the service itself and whatever else listens here. Read from the network
   * interfaces, again at most every few seconds.
   */
  readonly ownAddresses: () => ReadonlySet<string>;
}

const OWN_ADDRESSES_TTL_MS = 5_000;

/** This machine's interface addresses, cached briefly (they can change: DHCP, a new container network). */
export function localAddresses(): () => ReadonlySet<string> {
  let cached: ReadonlySet<string> = new Set();
  let readAt = -Infinity;
  return () => {
    if (Date.now() - readAt > OWN_ADDRESSES_TTL_MS) {
      const found = new Set<string>();
      for (const list of Object.values(networkInterfaces())) {
        for (const a of list ?? []) {
          try {
            found.add(normalized(ipaddr.process(a.address.split('%')[0])));
          } catch {
            // not an address ipaddr knows
          }
        }
      }
      cached = found;
      readAt = Date.now();
    }
    return cached;
  };
}

function normalized(ip: ipaddr.IPv4 | ipaddr.IPv6): string {
  return ip.kind() === 'ipv6' ? (ip as ipaddr.IPv6).toNormalizedString() : ip.toString();
}

/**
 * IPv4-compatible IPv6 (::a.b.c.d, deprecated by RFC 4291) carries an IPv4 address that ipaddr.js judges as
 * IPv6 "unicast": ::7f00:1 is 127.0.0.1. Judge such an address as the IPv4 address it holds.
 */
function embeddedIpv4(ip: ipaddr.IPv4 | ipaddr.IPv6): ipaddr.IPv4 | ipaddr.IPv6 {
  if (ip.kind() !== 'ipv6') return ip;
  const parts = (ip as ipaddr.IPv6).parts;
  if (parts.slice(0, 6).some((p) => p !== 0) || (parts[6] === 0 && parts[7] <= 1)) return ip; // ::, ::1 are their own
  return ipaddr.IPv4.parse(`${parts[6] >> 8}.${parts[6] & 0xff}.${parts[7] >> 8}.${parts[7] & 0xff}`);
}

/** Never reachable, allow-listed or not. */
const NEVER = new Set(['unspecified', 'multicast', 'broadcast']);

export function parsePolicy(cidrs: string, hosts: string, ownAddresses: () => ReadonlySet<string> = localAddresses()): OutboundPolicy {
  const allowCidrs = cidrs
    .split(',')
    .map((c) => c.trim())
    .filter(Boolean)
    .map((c) => {
      try {
        return c.includes('/')
          ? ipaddr.parseCIDR(c)
          : ([ipaddr.parse(c), ipaddr.parse(c).kind() === 'ipv4' ? 32 : 128] as [ipaddr.IPv4 | ipaddr.IPv6, number]);
      } catch {
        throw new Error(`invalid configuration: OUTBOUND_ALLOW_CIDRS: '${c}' is not an IP address or CIDR range`);
      }
    });
  const allowHosts = hosts
    .split(',')
    .map((h) => h.trim().toLowerCase())
    .filter(Boolean);
  return { allowCidrs, allowHosts, ownAddresses };
}

export function hostAllowed(policy: OutboundPolicy, hostname: string): boolean {
  const h = hostname.toLowerCase().replace(/\.$/, '');
  return policy.allowHosts.some((a) => (a.startsWith('*.') ? h.endsWith(a.slice(1)) : h === a));
}

/** Why `address` (reached as `hostname`) may not be connected to, or null when it may. */
export function deniedReason(policy: OutboundPolicy, address: string, hostname = address): string | null {
  let ip: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    ip = embeddedIpv4(ipaddr.process(address)); // IPv4-mapped and IPv4-compatible IPv6 become plain IPv4
  } catch {
    return `'${address}' is not an IP address`;
  }
  // Only a global address needs this check: the host's private and loopback ones are refused as such.
  const own = ip.range() === 'unicast' && policy.ownAddresses().has(normalized(ip));
  const range = own ? "this host's own" : ip.range();
  if (NEVER.has(range)) return `${address} is a ${range} address`;
  if (range === 'unicast') return null;
  if (hostAllowed(policy, hostname)) return null;
  if (policy.allowCidrs.some(([net, bits]) => net.kind() === ip.kind() && ip.match(net, bits))) return null;
  return (
    `${hostname === address ? '' : `${hostname} resolves to `}${address}, ${own ? "one of this host's own addresses" : `a ${range} address`}; ` +
    'allow it with OUTBOUND_ALLOW_CIDRS or OUTBOUND_ALLOW_HOSTS if it is meant to be reachable'
  );
}

/**
 * Checks a destination host before connecting. Node's net.connect does not call `lookup` for an IP
 * literal, so literals must be judged here; names are judged by guardedLookup after resolution.
 */
export function literalDenied(policy: OutboundPolicy, host: string): string | null {
  const bare = host.replace(/^\[|\]$/g, '');
  return ipaddr.isValid(bare) ? deniedReason(policy, bare) : null;
}

export class AddressDeniedError extends Error {
  readonly code = 'CIW_ADDRESS_DENIED';
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** A dns.lookup replacement for net.connect / undici that refuses denied addresses. */
export function guardedLookup(policy: OutboundPolicy) {
  return (hostname: string, options: { all?: boolean; family?: number }, callback: LookupCallback): void => {
    dnsLookup(hostname, { family: options.family ?? 0, all: true }, (err, addresses) => {
      if (err) return callback(err, '', 4);
      for (const a of addresses) {
        const why = deniedReason(policy, a.address, hostname);
        if (why) return callback(new AddressDeniedError(why) as NodeJS.ErrnoException, '', 4);
      }
      if (options.all) return callback(null, addresses);
      callback(null, addresses[0].address, addresses[0].family);
    });
  };
}
