// socket.ts — the few raw socket and namespace calls Node has no API for (setns, TCP_REPAIR, netns
// cookie), typed, on the libc declarations of libbpf.ts; errors name the call and the errno.
import { openSync, closeSync, readlinkSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { c, errno } from './libbpf.js';
import { errnoName } from './errno.js';

const AF_INET = 2;
const AF_INET6 = 10;
const CLONE_NEWNET = 0x40000000;
const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;
const SOL_TCP = 6;
const TCP_REPAIR = 19;
const SOCK_STREAM = 1;
const SOCK_DGRAM = 2;
const SO_COOKIE = 57;

export interface SockAddr {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: number[];
  port: number;
  /** "10.0.0.1:80" or "[fd00::1]:80". */
  text: string;
}

function encode(a: { family: 4 | 6; bytes: number[]; port: number }): Buffer {
  const b = Buffer.alloc(a.family === 4 ? 16 : 28);
  b.writeUInt16LE(a.family === 4 ? AF_INET : AF_INET6, 0);
  b.writeUInt16BE(a.port, 2);
  Buffer.from(a.bytes).copy(b, a.family === 4 ? 4 : 8);
  return b;
}

function decode(b: Buffer): SockAddr {
  const v4 = b.readUInt16LE(0) === AF_INET;
  const port = b.readUInt16BE(2);
  const bytes = v4 ? [...b.subarray(4, 8)] : [...b.subarray(8, 24)];
  const text = ipaddr.fromByteArray(bytes).toString();
  return { family: v4 ? 4 : 6, bytes, port, text: v4 ? `${text}:${port}` : `[${text}]:${port}` };
}

/** Moves the calling thread into the network namespace at `path` (a /proc/PID/ns/net or a bind mount). */
export function enterNetns(path: string): void {
  const fd = openSync(path, 'r');
  try {
    if (c.setns(fd, CLONE_NEWNET) < 0) throw new Error(`setns ${path}: ${errnoName(errno())}`);
  } finally {
    closeSync(fd);
  }
}

/** What a connect() in TCP_REPAIR mode saw: the hooks ran, no packet was sent. */
export interface RepairConnect {
  /** "ok" or the errno name connect() failed with. */
  connect: string;
  local?: SockAddr;
  peer?: SockAddr;
  netnsCookie?: bigint;
}

function openSocket(family: 4 | 6, type: number): number {
  const fd: number = c.socket(family === 4 ? AF_INET : AF_INET6, type, 0);
  if (fd < 0) throw new Error(`socket: ${errnoName(errno())}`);
  return fd;
}

/** TCP_REPAIR mode: connect() sends no SYN, and close() nothing either. */
function repairMode(fd: number): void {
  const one = Buffer.alloc(4);
  one.writeInt32LE(1);
  if (c.setsockopt(fd, SOL_TCP, TCP_REPAIR, one, 4) < 0)
    throw new Error(`setsockopt TCP_REPAIR: ${errnoName(errno())}`);
}

/** connect(); the errno name it failed with, or null. */
function connectTo(fd: number, dest: { family: 4 | 6; bytes: number[]; port: number }): string | null {
  const sa = encode(dest);
  return c.connect(fd, sa, sa.length) < 0 ? errnoName(errno()) : null;
}

/**
 * connect() in TCP_REPAIR mode: the cgroup and sockops hooks run, but no SYN is ever sent (nor on close).
 * `whileOpen` runs before the socket is closed (what the hooks recorded for it may go with the close).
 */
export function repairConnect<T>(
  dest: { family: 4 | 6; bytes: number[]; port: number },
  whileOpen: (r: Required<RepairConnect>) => T,
): { result: RepairConnect; seen?: T } {
  const fd = openSocket(dest.family, SOCK_STREAM);
  try {
    repairMode(fd);
    const failed = connectTo(fd, dest);
    if (failed) return { result: { connect: failed } };
    const { local, peer } = ends(fd);
    const result = { connect: 'ok', local, peer, netnsCookie: sockoptU64(fd, SO_NETNS_COOKIE, 'SO_NETNS_COOKIE') };
    return { result, seen: whileOpen(result) };
  } finally {
    c.close(fd);
  }
}

/** What a connect() that sends nothing saw: the addresses, the socket's cookie and inode. */
export interface QuietConnect {
  /** "ok" or the errno name connect() failed with. */
  connect: string;
  local?: SockAddr;
  /** What getpeername() answers (a hook may rewrite it). */
  peer?: SockAddr;
  cookie?: bigint;
  /** The socket's inode (its line in /proc/<pid>/net/{udp,tcp}{,6} shows the real peer). */
  inode?: number;
}

/**
 * A connect() that sends no packet: UDP (a connect only sets the peer), or TCP in TCP_REPAIR mode. The
 * cgroup hooks run as for any connect. `whileOpen` runs before the socket is closed.
 */
export function quietConnect<T>(
  dest: { family: 4 | 6; bytes: number[]; port: number },
  proto: 'udp' | 'tcp',
  whileOpen: (r: Required<QuietConnect>) => T,
): { result: QuietConnect; seen?: T } {
  const fd = openSocket(dest.family, proto === 'udp' ? SOCK_DGRAM : SOCK_STREAM);
  try {
    if (proto === 'tcp') repairMode(fd);
    const failed = connectTo(fd, dest);
    if (failed) return { result: { connect: failed } };
    const { local, peer } = ends(fd);
    const cookie = sockoptU64(fd, SO_COOKIE, 'SO_COOKIE');
    const inode = Number(/^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/self/fd/${fd}`))?.[1] ?? -1);
    const result = { connect: 'ok', local, peer, cookie, inode };
    return { result, seen: whileOpen(result) };
  } finally {
    c.close(fd);
  }
}

/** A connected socket's local and peer addresses. */
function ends(fd: number): { local: ReturnType<typeof decode>; peer: ReturnType<typeof decode> } {
  const get = (call: 'getsockname' | 'getpeername') => {
    const buf = Buffer.alloc(28);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(28);
    if (c[call](fd, buf, len) < 0) throw new Error(`${call}: ${errnoName(errno())}`);
    return decode(buf);
  };
  return { local: get('getsockname'), peer: get('getpeername') };
}

/** A 64-bit SOL_SOCKET option (SO_COOKIE, SO_NETNS_COOKIE). */
function sockoptU64(fd: number, opt: number, name: string): bigint {
  const v = Buffer.alloc(8);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(8);
  if (c.getsockopt(fd, SOL_SOCKET, opt, v, len) < 0) throw new Error(`getsockopt ${name}: ${errnoName(errno())}`);
  return v.readBigUInt64LE(0);
}
