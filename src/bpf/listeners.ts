// listeners.ts — an unmodified proxy's listening socket: found by address and port (the netns's TCP
// table → inode → the process's fd), copied out of the process with pidfd_getfd, and described
// (cookie, netns, family, local address) so the caller can check it before handing it to BPF.
import { closeSync, fstatSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { c, errno, pidfdGetfd, pidfdOpen } from '../sys/libbpf.js';
import { BpfError } from './errors.js';

export interface TableListener {
  family: 4 | 6;
  /** Network order: 4 bytes (IPv4) or 16. */
  bytes: number[];
  port: number;
  inode: number;
}

const TCP_LISTEN = 0x0a;

/** /proc/net/tcp* prints each 32-bit word of the address as the host (little-endian) sees it. */
function hexAddr(hex: string): number[] {
  const out: number[] = [];
  for (let w = 0; w < hex.length; w += 8) {
    const word = hex.slice(w, w + 8);
    for (let b = 6; b >= 0; b -= 2) out.push(parseInt(word.slice(b, b + 2), 16));
  }
  return out;
}

/** The listeners of a /proc/net/tcp or tcp6 text. */
export function parseTcpTable(text: string, family: 4 | 6): TableListener[] {
  const out: TableListener[] = [];
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || parseInt(f[3]!, 16) !== TCP_LISTEN) continue;
    const [addr = '', port = ''] = f[1]!.split(':');
    out.push({ family, bytes: hexAddr(addr), port: parseInt(port, 16), inode: Number(f[9]) });
  }
  return out;
}

/** The listeners of /proc/net/tcp and tcp6 texts one after the other (as `cat` of both prints them): the
 * family of each row is told by the length of its address. */
export function parseTcpTables(text: string): TableListener[] {
  const out: TableListener[] = [];
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f.length < 10 || !/^[0-9A-F]+:[0-9A-F]{4}$/i.test(f[1]!) || parseInt(f[3]!, 16) !== TCP_LISTEN) continue;
    const [addr = '', port = ''] = f[1]!.split(':');
    const family = addr.length === 32 ? 6 : 4;
    out.push({ family, bytes: hexAddr(addr), port: parseInt(port, 16), inode: Number(f[9]) });
  }
  return out;
}

/** The TCP listeners of the netns that process `pid` is in (its /proc/PID/net/tcp and tcp6). */
export function tableListeners(pid: number): TableListener[] {
  const out: TableListener[] = [];
  for (const [file, family] of [
    ['tcp', 4],
    ['tcp6', 6],
  ] as const) {
    try {
      out.push(...parseTcpTable(readFileSync(`/proc/${pid}/net/${file}`, 'utf8'), family));
    } catch {
      // no IPv6, or the process is gone
    }
  }
  return out;
}

/** socket inode → fds of process `pid` that refer to it. */
export function socketFds(pid: number): Map<number, number[]> {
  const out = new Map<number, number[]>();
  let fds: string[];
  try {
    fds = readdirSync(`/proc/${pid}/fd`);
  } catch {
    return out;
  }
  for (const fd of fds) {
    let link: string;
    try {
      link = readlinkSync(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue; // closed meanwhile
    }
    const m = /^socket:\[(\d+)\]$/.exec(link);
    if (!m) continue;
    const ino = Number(m[1]);
    out.set(ino, [...(out.get(ino) ?? []), Number(fd)]);
  }
  return out;
}

export interface FoundListener extends TableListener {
  pid: number;
  fd: number;
}

/**
 * The listeners on `port` (and `address`, when given: 4 or 16 bytes; the unspecified address of a
 * socket bound to any matches too) in the netns of `tablePid` (a process of the pod), held by one of
 * `ownerPids` (the proxy's processes; a node proxy's listener opened in the pod netns is found too).
 */
export function findListeners(o: {
  tablePid?: number;
  /** The table itself, when it was read otherwise (e.g. inside the netns). */
  table?: TableListener[];
  ownerPids: number[];
  port: number;
  address?: number[];
}): FoundListener[] {
  const want = (o.table ?? tableListeners(o.tablePid!)).filter(
    (l) =>
      l.port === o.port &&
      (!o.address || sameAddr(l.bytes, o.address) || l.bytes.every((b) => b === 0)) &&
      l.inode !== 0,
  );
  if (want.length === 0) return [];
  const out: FoundListener[] = [];
  for (const pid of o.ownerPids) {
    const fds = socketFds(pid);
    for (const l of want) {
      const fd = fds.get(l.inode)?.[0];
      if (fd !== undefined) out.push({ ...l, pid, fd });
    }
  }
  return out;
}

function sameAddr(a: number[], b: number[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** Copies fd `fd` of process `pid` into this process (needs CAP_SYS_PTRACE, or the same uid). */
export function takeFd(pid: number, fd: number): number {
  const what = `take fd ${fd} of pid ${pid}`;
  const pidfd = pidfdOpen(pid);
  if (pidfd < 0) throw new BpfError(what, 'pidfd_open', errno());
  try {
    const copy = pidfdGetfd(pidfd, fd);
    if (copy < 0) throw new BpfError(what, 'pidfd_getfd', errno());
    return copy;
  } finally {
    c.close(pidfd);
  }
}

const SOL_SOCKET = 1;
const SO_REUSEPORT = 15;
const SO_ACCEPTCONN = 30;
const SO_PROTOCOL = 38;
const SO_DOMAIN = 39;
const SO_COOKIE = 57;
const SO_NETNS_COOKIE = 71;
const IPPROTO_IPV6 = 41;
const IPV6_V6ONLY = 26;
const SIOCGSKNS = 0x894c;
const SOL_IP = 0;
const IP_TRANSPARENT = 19;
const IPV6_TRANSPARENT = 75;

function sockopt(fd: number, level: number, name: number, size: 4 | 8): bigint {
  const v = Buffer.alloc(size);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(size);
  if (c.getsockopt(fd, level, name, v, len) < 0)
    throw new BpfError(`getsockopt ${name} on fd ${fd}`, 'getsockopt', errno());
  return size === 8 ? v.readBigUInt64LE(0) : BigInt(v.readInt32LE(0));
}

export interface SocketFacts {
  cookie: bigint;
  netnsCookie: bigint;
  /** dev:ino of its network namespace (as node:fs stat shows a netns file). */
  netnsId: string;
  listening: boolean;
  tcp: boolean;
  family: 4 | 6;
  /** IPv6 sockets: whether IPv4 connections are refused (a dual-stack socket takes both). */
  v6only: boolean;
  /** IP_TRANSPARENT (IPV6_TRANSPARENT): what TPROXY needs of its listener. */
  transparent: boolean;
  /** SO_REUSEPORT: one of a group (the kernel's selection runs over the group it is assigned from). */
  reuseport: boolean;
  local: { bytes: number[]; port: number };
}

/** What a socket fd is: enough to check a listener before it is registered. */
export function socketFacts(fd: number): SocketFacts {
  const domain = Number(sockopt(fd, SOL_SOCKET, SO_DOMAIN, 4));
  const family = domain === 10 ? 6 : 4;
  const sa = Buffer.alloc(28);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(28);
  if (c.getsockname(fd, sa, len) < 0) throw new BpfError(`getsockname on fd ${fd}`, 'getsockname', errno());
  const local =
    family === 4
      ? { bytes: [...sa.subarray(4, 8)], port: sa.readUInt16BE(2) }
      : { bytes: [...sa.subarray(8, 24)], port: sa.readUInt16BE(2) };
  const nsfd = c.ioctl(fd, SIOCGSKNS, 0);
  if (nsfd < 0) throw new BpfError(`netns of fd ${fd}`, 'ioctl(SIOCGSKNS)', errno());
  let netnsId: string;
  try {
    const st = fstatSync(nsfd, { bigint: true });
    netnsId = `${st.dev}:${st.ino}`;
  } finally {
    closeSync(nsfd);
  }
  return {
    cookie: sockopt(fd, SOL_SOCKET, SO_COOKIE, 8),
    netnsCookie: sockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, 8),
    netnsId,
    listening: sockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, 4) === 1n,
    tcp: sockopt(fd, SOL_SOCKET, SO_PROTOCOL, 4) === 6n,
    family,
    v6only: family === 6 && sockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, 4) === 1n,
    transparent:
      family === 4
        ? sockopt(fd, SOL_IP, IP_TRANSPARENT, 4) === 1n
        : sockopt(fd, IPPROTO_IPV6, IPV6_TRANSPARENT, 4) === 1n,
    reuseport: sockopt(fd, SOL_SOCKET, SO_REUSEPORT, 4) === 1n,
    local,
  };
}
