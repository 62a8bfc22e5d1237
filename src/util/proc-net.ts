// proc-net.ts — the sockets of a network namespace, from /proc/<pid>/net/{tcp,udp}{,6}: how verify learns
// whether a proxy listens without connecting to it (a transparent proxy with no record for the connection
// would forward it to itself), and where a socket it made really points (a hook may hide that).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';

export interface Listener {
  /** 4 bytes (tcp) or 16 (tcp6), network order. */
  bytes: number[];
  port: number;
}

/** LISTEN sockets in /proc/net/tcp{,6} text. */
export function parseListeners(text: string): Listener[] {
  const out: Listener[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[3] !== '0A') continue; // TCP_LISTEN
    const [hexAddr = '', hexPort = ''] = (f[1] ?? '').split(':');
    // The kernel prints each 32-bit word of the address in host (little-endian) order.
    const bytes: number[] = [];
    for (let i = 0; i < hexAddr.length; i += 8) bytes.push(...Buffer.from(hexAddr.slice(i, i + 8), 'hex').reverse());
    out.push({ bytes, port: parseInt(hexPort, 16) });
  }
  return out;
}

/** The listeners of the netns that /proc/<pid>/net (or /proc/self/net) shows, both families. */
export function listenersOf(procNet: string): Listener[] {
  const out: Listener[] = [];
  for (const f of ['tcp', 'tcp6']) {
    try {
      out.push(...parseListeners(readFileSync(join(procNet, f), 'utf8')));
    } catch {
      // no such file (no IPv6), or the process is gone
    }
  }
  return out;
}

/**
 * Whether a listener accepts connections to the address: one on that address or on its family's wildcard,
 * or an IPv6 wildcard for an IPv4 address (dual-stack unless v6only, which /proc does not show).
 */
export function accepts(ls: Listener[], addr: number[], port: number): boolean {
  const zero = (b: number[]) => b.every((x) => x === 0);
  return ls.some(
    (l) =>
      l.port === port &&
      ((l.bytes.length === addr.length && (zero(l.bytes) || l.bytes.every((b, i) => b === addr[i]))) ||
        (l.bytes.length === 16 && addr.length === 4 && zero(l.bytes))),
  );
}

/** One line of /proc/net/{tcp,udp}{,6}. */
export interface SocketLine {
  local: Listener;
  remote: Listener;
  /** The state in hex as printed (0A: TCP LISTEN; 07: an unconnected UDP socket, 01: a connected one). */
  state: string;
  inode: number;
}

function endpointOf(hex: string): Listener {
  const [hexAddr = '', hexPort = ''] = hex.split(':');
  const bytes: number[] = [];
  for (let i = 0; i < hexAddr.length; i += 8) bytes.push(...Buffer.from(hexAddr.slice(i, i + 8), 'hex').reverse());
  return { bytes, port: parseInt(hexPort, 16) };
}

export function parseSockets(text: string): SocketLine[] {
  const out: SocketLine[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10) continue;
    out.push({ local: endpointOf(f[1]!), remote: endpointOf(f[2]!), state: f[3]!, inode: Number(f[9]) });
  }
  return out;
}

/** Every socket of one protocol (both families) of the netns /proc/<pid>/net (or /proc/self/net) shows. */
export function socketsOf(procNet: string, proto: 'tcp' | 'udp'): SocketLine[] {
  const out: SocketLine[] = [];
  for (const f of [proto, `${proto}6`]) {
    try {
      out.push(...parseSockets(readFileSync(join(procNet, f), 'utf8')));
    } catch {
      // no such file (no IPv6), or the process is gone
    }
  }
  return out;
}

/** UDP sockets that take datagrams from anyone (bound, not connected): a server's. */
export function udpServersOf(procNet: string): Listener[] {
  return socketsOf(procNet, 'udp')
    .filter((s) => s.state === '07' && s.remote.port === 0)
    .map((s) => s.local);
}
