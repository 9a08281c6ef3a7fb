/**
 * Outbound network for a sandbox that asked for it, without giving it a network: the sandbox keeps its
 * empty network namespace, and an HTTP proxy listens on a Unix socket bound into it (the agent relays
 * 127.0.0.1:3128 inside to that socket; HTTP_PROXY / HTTPS_PROXY point there). The proxy, outside,
 * resolves every destination and applies the outbound policy to each connection (CONNECT tunnels for
 * HTTPS, absolute-form requests for plain HTTP), so loopback, private and metadata addresses stay out of
 * reach and DNS rebinding does not help.
 */
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { connect, type Socket } from 'node:net';
import { chmodSync, chownSync, rmSync } from 'node:fs';
import type { Duplex } from 'node:stream';
import { AddressDeniedError, guardedLookup, literalDenied, type OutboundPolicy } from '../../core/network-policy.js';

export interface EgressProxy {
  readonly socketPath: string;
  close(): Promise<void>;
}

const MAX_CONNECTIONS = 64;
const CONNECT_TIMEOUT_MS = 15_000;
const HOP_BY_HOP = new Set([
  'proxy-authorization',
  'proxy-connection',
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function refusal(err: Error & { code?: string }): { status: number; text: string } {
  if (err.code === 'CIW_ADDRESS_DENIED') return { status: 403, text: `blocked by the sandbox network policy: ${err.message}` };
  return { status: 502, text: `could not reach the destination: ${err.message}` };
}

function parseTarget(authority: string): { host: string; port: number } | null {
  const m = /^\[?([^\]]+?)\]?:(\d{1,5})$/.exec(authority);
  if (!m) return null;
  const port = Number(m[2]);
  return port > 0 && port < 65536 ? { host: m[1], port } : null;
}

export async function startEgressProxy(
  socketPath: string,
  policy: OutboundPolicy,
  owner?: { uid: number; gid: number },
): Promise<EgressProxy> {
  const lookup = guardedLookup(policy) as never;
  const sockets = new Set<Socket | Duplex>();
  const track = (s: Socket | Duplex) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  };

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    let url: URL;
    try {
      url = new URL(req.url ?? '');
    } catch {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('the proxy needs an absolute http:// URL\n');
      return;
    }
    if (url.protocol !== 'http:') {
      res.writeHead(400, { 'content-type': 'text/plain' }).end('only http:// is proxied directly; use CONNECT (HTTPS_PROXY) for https\n');
      return;
    }
    const denied = literalDenied(policy, url.hostname);
    if (denied) {
      res.writeHead(403, { 'content-type': 'text/plain' }).end(`${refusal(new AddressDeniedError(denied)).text}\n`);
      return;
    }
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    const upstream = httpRequest(
      {
        host: url.hostname.replace(/^\[|\]$/g, ''),
        port: Number(url.port || 80),
        path: `${url.pathname}${url.search}`,
        method: req.method,
        headers,
        lookup,
        timeout: CONNECT_TIMEOUT_MS,
      },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on('timeout', () => upstream.destroy(new Error('timed out')));
    upstream.on('error', (err) => {
      const { status, text } = refusal(err);
      if (!res.headersSent) res.writeHead(status, { 'content-type': 'text/plain' });
      res.end(`${text}\n`);
    });
    req.pipe(upstream);
  });
  server.maxConnections = MAX_CONNECTIONS;
  server.on('connection', track);
  server.on('connect', (req: IncomingMessage, client: Duplex, head: Buffer) => {
    track(client);
    const target = parseTarget(req.url ?? '');
    if (!target) {
      client.end('HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\n\r\nCONNECT needs host:port\n');
      return;
    }
    const denied = literalDenied(policy, target.host);
    if (denied) {
      client.end(`HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\n\r\n${refusal(new AddressDeniedError(denied)).text}\n`);
      return;
    }
    const upstream = connect({ host: target.host, port: target.port, lookup, timeout: CONNECT_TIMEOUT_MS });
    track(upstream);
    upstream.once('connect', () => {
      upstream.setTimeout(0);
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('timeout', () => upstream.destroy(new Error('timed out')));
    upstream.on('error', (err) => {
      const { status, text } = refusal(err);
      client.end(`HTTP/1.1 ${status} ${status === 403 ? 'Forbidden' : 'Bad Gateway'}\r\ncontent-type: text/plain\r\n\r\n${text}\n`);
    });
    client.on('error', () => upstream.destroy());
  });

  rmSync(socketPath, { force: true });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  if (owner) chownSync(socketPath, owner.uid, owner.gid);
  return {
    socketPath,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => {
          rmSync(socketPath, { force: true });
          resolve();
        });
      }),
  };
}
