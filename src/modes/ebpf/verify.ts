// verify.ts — the self-check behind `meshredir verify`: from a throwaway process in the cgroup (and
// its netns), a TCP_REPAIR connect runs the real hooks without sending a packet, then each link of
// the chain is checked: policy → attached → redirected to the proxy → record for the proxy →
// getpeername → proxy listening.
import { openSync, closeSync, writeFileSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import ipaddr from 'ipaddr.js';
import { c, errno } from '../../sys/libbpf.js';
import { errnoName } from '../../bpf/errors.js';
import { EbpfMode } from './ebpf.js';
import { cgroupId, cgroupPathOf, requireCgroup2 } from '../../util/host.js';
import { AF_INET, AF_INET6, CgKind } from '../../bpf/abi.js';

const CLONE_NEWNET = 0x40000000;
const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;
const SOL_TCP = 6;
const TCP_REPAIR = 19;
const SOCK_STREAM = 1;

export interface Step {
  step: string;
  ok: boolean;
  detail: string;
}

function sockaddr(family: 4 | 6, bytes: number[], port: number): Buffer {
  if (family === 4) {
    const b = Buffer.alloc(16);
    b.writeUInt16LE(AF_INET, 0);
    b.writeUInt16BE(port, 2);
    Buffer.from(bytes).copy(b, 4);
    return b;
  }
  const b = Buffer.alloc(28);
  b.writeUInt16LE(AF_INET6, 0);
  b.writeUInt16BE(port, 2);
  Buffer.from(bytes).copy(b, 8);
  return b;
}

function parseSockaddr(b: Buffer): { family: 4 | 6; bytes: number[]; port: number; text: string } {
  const fam = b.readUInt16LE(0);
  const port = b.readUInt16BE(2);
  const bytes = fam === AF_INET ? [...b.subarray(4, 8)] : [...b.subarray(8, 24)];
  const text = ipaddr.fromByteArray(bytes).toString();
  return {
    family: fam === AF_INET ? 4 : 6,
    bytes,
    port,
    text: fam === AF_INET ? `${text}:${port}` : `[${text}]:${port}`,
  };
}

/** Whether a LISTEN socket in the netns of `procNet` (/proc/PID/net) accepts on ep (or a wildcard). */
export function listensOn(procNet: string, ep: { family: 4 | 6; bytes: number[]; port: number }): boolean {
  const file = join(procNet, ep.family === 4 ? 'tcp' : 'tcp6');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return false;
  }
  for (const line of text.split('\n').slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f[3] !== '0A') continue; // TCP_LISTEN
    const [hexAddr = '', hexPort = ''] = (f[1] ?? '').split(':');
    if (parseInt(hexPort, 16) !== ep.port) continue;
    // The kernel prints each 32-bit word of the address in host (little-endian) order.
    const bytes: number[] = [];
    for (let i = 0; i < hexAddr.length; i += 8) bytes.push(...Buffer.from(hexAddr.slice(i, i + 8), 'hex').reverse());
    if (bytes.every((b) => b === 0) || bytes.every((b, i) => b === ep.bytes[i])) return true;
  }
  return false;
}

/** Every pid in a cgroup subtree. */
export function cgroupPids(cgroupDir: string): number[] {
  const out: number[] = [];
  const stack = [cgroupDir];
  while (stack.length) {
    const d = stack.pop()!;
    try {
      out.push(...readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) stack.push(join(d, e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}

/** Finds a process in the cgroup subtree; its netns is the pod's. */
export function podNetns(cgroupDir: string): string | null {
  const stack = [cgroupDir];
  while (stack.length) {
    const d = stack.pop()!;
    try {
      const pid = readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').find(Boolean);
      if (pid) return `/proc/${pid}/ns/net`;
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) stack.push(join(d, e.name));
    } catch {
      // gone meanwhile
    }
  }
  return null;
}

export interface ChildResult {
  connect: string; // "ok" or errno name
  local?: string;
  localBytes?: number[];
  localPort?: number;
  peer?: string;
  netnsCookie?: string;
  record?: { family: number; port: number; addr: string } | null;
  proxyListening?: string; // "ok" or why not
}

/** Runs in the throwaway child: joins netns and cgroup, does the repair-mode connect, reads back. */
export async function probeChild(o: {
  cgroupDir: string;
  netns: string | null;
  bpffs: string;
  dest: string;
  proxy: string;
  proxyLoopback: boolean;
}): Promise<ChildResult> {
  if (o.netns) {
    const fd = openSync(o.netns, 'r');
    const r: number = c.setns(fd, CLONE_NEWNET);
    closeSync(fd);
    if (r < 0) throw new Error(`setns ${o.netns}: ${errnoName(errno())}`);
  }
  writeFileSync(join(o.cgroupDir, 'cgroup.procs'), String(process.pid));
  const dest = parse(o.dest);
  const fd: number = c.socket(dest.family === 4 ? AF_INET : AF_INET6, SOCK_STREAM, 0);
  if (fd < 0) throw new Error(`socket: ${errnoName(errno())}`);
  const res: ChildResult = { connect: 'ok' };
  try {
    const one = Buffer.alloc(4);
    one.writeInt32LE(1);
    // Repair mode: connect() runs the cgroup and sockops hooks but no SYN is ever sent.
    if (c.setsockopt(fd, SOL_TCP, TCP_REPAIR, one, 4) < 0)
      throw new Error(`setsockopt TCP_REPAIR: ${errnoName(errno())}`);
    const sa = sockaddr(dest.family, dest.bytes, dest.port);
    if (c.connect(fd, sa, sa.length) < 0) {
      res.connect = errnoName(errno());
      return res;
    }
    const buf = Buffer.alloc(28);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(28);
    c.getsockname(fd, buf, len);
    const local = parseSockaddr(buf);
    res.local = local.text;
    res.localBytes = local.bytes;
    res.localPort = local.port;
    len.writeUInt32LE(28);
    c.getpeername(fd, buf, len);
    res.peer = parseSockaddr(buf).text;
    const cookie = Buffer.alloc(8);
    const clen = Buffer.alloc(4);
    clen.writeUInt32LE(8);
    c.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, cookie, clen);
    res.netnsCookie = cookie.readBigUInt64LE(0).toString();
    // The record the proxy would read, looked up as the proxy's getsockopt would.
    const proxy = parse(o.proxy);
    const mode = new EbpfMode({ bpffs: o.bpffs, cgroupRoot: '/', object: '' });
    const m = mode.openMap('mr_orig');
    try {
      const norm = (b: number[]) => {
        const out = Buffer.alloc(16);
        const v4 =
          b.length === 16 &&
          ipaddr.fromByteArray(b).kind() === 'ipv6' &&
          (ipaddr.fromByteArray(b) as ipaddr.IPv6).isIPv4MappedAddress();
        Buffer.from(v4 ? b.slice(12) : b).copy(out);
        return out;
      };
      const v = m.get({
        netns: o.proxyLoopback ? BigInt(res.netnsCookie) : 0n,
        saddr: norm(local.bytes),
        daddr: norm(proxy.bytes),
        sport: local.port,
        dport: proxy.port,
        family: proxy.family === 4 ? AF_INET : AF_INET6,
        pad: Buffer.alloc(3),
      }) as { family: number; port: number; addr: Buffer } | undefined;
      res.record = v
        ? {
            family: v.family,
            port: v.port,
            addr: ipaddr.fromByteArray([...(v.family === AF_INET ? v.addr.subarray(0, 4) : v.addr)]).toString(),
          }
        : null;
    } finally {
      m.close();
    }
  } finally {
    c.close(fd); // closing a repair-mode socket sends nothing either
  }
  // Whether the proxy listens is read from this netns's socket table: connecting to it would make a
  // transparent proxy with no record for the connection forward it to itself.
  res.proxyListening = listensOn('/proc/self/net', parse(o.proxy)) ? 'ok' : 'no listener in the pod netns';
  return res;
}

function parse(ep: string): { family: 4 | 6; bytes: number[]; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(ep);
  if (!m) throw new Error(`${ep}: not an address:port`);
  const a = ipaddr.parse(m[1]!);
  return { family: a.kind() === 'ipv4' ? 4 : 6, bytes: a.toByteArray(), port: Number(m[2]) };
}

export interface Coverage {
  policy: string;
  slot: number;
  proxy4: string | null;
  proxy6: string | null;
  bypass: boolean;
  /** The policy's bypass (proxy) cgroups, as ids. */
  bypassIds: bigint[];
}

/** Which policy covers a cgroup, read from the pinned maps (nearest ancestor wins, like the kernel). */
export function coverage(mode: EbpfMode, cgroupDir: string): Coverage | null {
  const mount = requireCgroup2();
  const cg = mode.openMap('mr_cgroups');
  const pol = mode.openMap('mr_policies');
  try {
    const slots = mode.currentSlots();
    for (let d = cgroupDir; d.startsWith(mount); d = dirname(d)) {
      const id = cgroupId(d);
      const e = id === null ? undefined : (cg.get(id) as { kind: number; slot: number } | undefined);
      if (e && (e.kind === CgKind.PASS || e.kind === CgKind.GUARD)) {
        // A pod classified as not enrolled (pass) is covered by no policy; a guard means the pod has
        // not been classified yet and its connects are refused.
        if (e.kind === CgKind.PASS) return null;
        return {
          bypassIds: [],
          policy: `guard on ${cgroupPathOf(d, mount)} (pod not classified yet: connects are refused)`,
          slot: 0,
          bypass: false,
          proxy4: null,
          proxy6: null,
        };
      }
      if (e) {
        const p = pol.get(e.slot) as {
          flags: number;
          proxy4_addr: Buffer;
          proxy6_addr: Buffer;
          proxy4_port: number;
          proxy6_port: number;
        };
        const name = [...slots.entries()].find(([, s]) => s === e.slot)?.[0] ?? `slot ${e.slot}`;
        const bypassIds = (cg.entries() as [bigint, { kind: number; slot: number }][])
          .filter(([, v]) => v.slot === e.slot && v.kind === CgKind.BYPASS)
          .map(([k]) => k);
        return {
          bypassIds,
          policy: name,
          slot: e.slot,
          bypass: e.kind === CgKind.BYPASS,
          proxy4: p.flags & 1 ? `${ipaddr.fromByteArray([...p.proxy4_addr]).toString()}:${p.proxy4_port}` : null,
          proxy6: p.flags & 2 ? `[${ipaddr.fromByteArray([...p.proxy6_addr]).toString()}]:${p.proxy6_port}` : null,
        };
      }
      if (d === mount) break;
    }
    return null;
  } finally {
    cg.close();
    pol.close();
  }
}

export { existsSync };
