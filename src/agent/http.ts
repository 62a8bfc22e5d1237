// http.ts — the agent's HTTP endpoint (node:http): /metrics (Prometheus text), /healthz and /readyz
// (200 or 503, with the reason as the body, for kubelet probes and people).
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Verdict } from './health.js';

export interface ListenAddress {
  host: string;
  port: number;
}

/** What the endpoint serves; each is asked per request. */
export interface Faces {
  metrics(): Promise<{ contentType: string; body: string }>;
  live(): Verdict;
  ready(): Verdict;
}

export interface Endpoint {
  /** Where it listens (the port the kernel chose when asked for port 0). */
  address: string;
  close(): Promise<void>;
}

/** `host:port` for logs and URLs (IPv6 in brackets). */
export const formatAddress = (a: ListenAddress): string =>
  a.host.includes(':') ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`;

/** Listens; rejects (nothing served) when the address cannot be bound. */
export async function serve(at: ListenAddress, faces: Faces, onError: (e: Error) => void): Promise<Endpoint> {
  const server = createServer((req, res) => {
    handle(req, res, faces).catch((e: Error) => {
      onError(e);
      if (!res.headersSent) send(res, 500, 'text/plain; charset=utf-8', `${e.message}\n`);
    });
  });
  // A scrape or probe is small and local: a client that stalls is dropped rather than held.
  server.requestTimeout = 30_000;
  server.headersTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e: NodeJS.ErrnoException) => {
      const hint = e.code === 'EADDRINUSE' ? ' (another agent? choose another with --metrics-address, or off)' : '';
      reject(new Error(`metrics address ${formatAddress(at)}: ${e.code ?? ''} ${e.message}${hint}`.trim()));
    });
    server.listen(at.port, at.host, () => resolve());
  });
  server.on('error', onError);
  const bound = server.address() as AddressInfo;
  return {
    address: formatAddress({ host: bound.address, port: bound.port }),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Prometheus keeps its connection open between scrapes.
        server.closeAllConnections();
      }),
  };
}

async function handle(req: IncomingMessage, res: ServerResponse, faces: Faces): Promise<void> {
  if (req.method !== 'GET' && req.method !== 'HEAD') {
    res.setHeader('Allow', 'GET, HEAD');
    return send(res, 405, 'text/plain; charset=utf-8', 'only GET and HEAD\n');
  }
  const path = new URL(req.url ?? '/', 'http://x').pathname;
  if (path === '/metrics') {
    const m = await faces.metrics();
    return send(res, 200, m.contentType, m.body, req.method === 'HEAD');
  }
  if (path === '/healthz' || path === '/readyz') {
    const v = path === '/healthz' ? faces.live() : faces.ready();
    return send(res, v.ok ? 200 : 503, 'text/plain; charset=utf-8', `${v.ok ? 'ok' : 'not ok'}: ${v.reason}\n`);
  }
  return send(res, 404, 'text/plain; charset=utf-8', 'not found: /metrics, /healthz and /readyz are served\n');
}

function send(res: ServerResponse, status: number, type: string, body: string, headOnly = false): void {
  res.writeHead(status, {
    'Content-Type': type,
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  res.end(headOnly ? undefined : body);
}
