// decision-model.ts — the decision order of docs/policy.md for an outbound connect() as a pure function
// (the semantics the eBPF mode implements), and a seeded generator of random policies and
// connections to compare the iptables mode's rules against it (unit: evaluator; kernel: real nat).
import ipaddr from 'ipaddr.js';
import { parsePolicyText } from '../../src/policy/load.js';
import type { Policy } from '../../src/policy/schema.js';
import type { Conn } from '../../src/modes/iptables/evaluate.js';
import { within } from '../../src/util/host.js';

export type Decision =
  | 'redirect'
  | 'pass:cgroup'
  | 'pass:family'
  | 'pass:proxy'
  | 'pass:mark'
  | 'pass:owner'
  | 'pass:loopback'
  | 'pass:port'
  | 'pass:cidr';

function inCidr(addr: number[], c: { bytes: number[]; prefix: number }): boolean {
  for (let bit = 0; bit < c.prefix; bit++) {
    const i = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if (((addr[i] ?? 0) & m) !== ((c.bytes[i] ?? 0) & m)) return false;
  }
  return true;
}

export const isLoopback = (family: 4 | 6, b: number[]) =>
  family === 4 ? b[0] === 127 : b.slice(0, 15).every((x) => x === 0) && b[15] === 1;

/**
 * docs/policy.md "Decision order", for a connection of the policy (its socket made in `c.cgroup`, with
 * mark `c.mark`): a bypass cgroup (or below one) → no proxy for the family → the proxy itself → a bypass
 * mark ((mark & mask) == value) → uid/gid → loopback → port include/exclude → CIDR longest-prefix match →
 * redirect.
 */
export function decide(p: Policy, c: Conn): Decision {
  if (p.bypass.cgroups.some((b) => within(c.cgroup ?? '/', b))) return 'pass:cgroup';
  const proxy = c.family === 4 ? p.proxy.outbound : p.proxy.outbound6;
  if (!proxy) return 'pass:family';
  if (c.dport === proxy.port && c.dst.every((b, i) => b === proxy.bytes[i])) return 'pass:proxy';
  if (p.bypass.marks.some((m) => ((c.mark ?? 0) & m.mask) >>> 0 === m.value)) return 'pass:mark';
  if (p.bypass.uids.includes(c.uid) || p.bypass.gids.includes(c.gid)) return 'pass:owner';
  if (!p.outbound.redirectLoopback && isLoopback(c.family, c.dst)) return 'pass:loopback';
  if (p.outbound.excludePorts.includes(c.dport)) return 'pass:port';
  if (p.outbound.includePorts.length > 0 && !p.outbound.includePorts.includes(c.dport)) return 'pass:port';
  let best: { prefix: number; include: boolean } | null = null;
  for (const [list, include] of [
    [p.outbound.includeCidrs, true],
    [p.outbound.excludeCidrs, false],
  ] as const) {
    for (const cidr of list) {
      if (cidr.family !== c.family || !inCidr(c.dst, cidr)) continue;
      if (!best || cidr.prefix > best.prefix) best = { prefix: cidr.prefix, include };
    }
  }
  if (best && !best.include) return 'pass:cidr';
  if (!best && p.outbound.includeCidrs.length > 0) return 'pass:cidr';
  return 'redirect';
}

/** mulberry32: a small seeded PRNG, so a failure names a seed that reproduces it. */
export function rng(seed: number): {
  next: () => number;
  int: (n: number) => number;
  pick: <T>(a: readonly T[]) => T;
  chance: (p: number) => boolean;
} {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (n: number) => Math.floor(next() * n);
  return { next, int, pick: <T>(arr: readonly T[]) => arr[int(arr.length)]!, chance: (p: number) => next() < p };
}

const mask = (bytes: number[], prefix: number) =>
  bytes.map((b, i) => (i * 8 >= prefix ? 0 : i * 8 + 8 <= prefix ? b : b & (0xff << (8 - (prefix - i * 8))) & 0xff));
const text = (bytes: number[]) =>
  bytes.length === 4 ? bytes.join('.') : (ipaddr.fromByteArray(bytes) as ipaddr.IPv6).toRFC5952String();

export interface GenOptions {
  /** Proxy ports to choose from (the kernel test has one listener). */
  proxyPorts: readonly number[];
  ports: readonly number[];
  uids: readonly number[];
  gids: readonly number[];
  /** Bypass cgroups a policy may name, and the cgroups connections come from (in, below and beside them). */
  cgroups: readonly string[];
  connCgroups: readonly string[];
  /** Bypass marks a policy may name, and the marks connections carry (0: none). */
  marks: readonly string[];
  connMarks: readonly number[];
}

export const DEFAULT_GEN: GenOptions = {
  proxyPorts: [15001, 15006],
  ports: [80, 443, 5432, 8080, 15001, 15006],
  uids: [0, 1000, 1337, 1500],
  gids: [0, 1000, 1337, 1600],
  cgroups: ['/pods/gen/proxy', '/pods/gen/sidecar'],
  connCgroups: ['/pods/gen/app', '/pods/gen', '/pods/gen/proxy', '/pods/gen/proxy/worker', '/pods/gen/proxy2'],
  marks: ['0x539/0xfff', '0x100', '0x4000/0x4000'],
  // In a mask, outside it, equal below it, and the neighbours.
  connMarks: [0, 0, 0x539, 0x1539, 0x538, 0x100, 0x101, 0x4000, 0x4100, 0xc539],
};

/** A random valid policy (no inbound: the eBPF mode has none) whose CIDRs nest around a few anchors. */
export function genPolicy(
  r: ReturnType<typeof rng>,
  o: GenOptions = DEFAULT_GEN,
): { policy: Policy; anchors: { 4: number[][]; 6: number[][] } } {
  const anchors = {
    4: [0, 1, 2].map(() => [10, r.int(4), r.int(256), r.int(256)]),
    6: [0, 1].map(() => [
      0xfd,
      0,
      0,
      r.int(4),
      r.int(256),
      r.int(256),
      ...Array.from({ length: 10 }, () => r.int(256)),
    ]),
  };
  const cidrs = new Map<string, boolean>(); // text → include?
  const n = r.int(7);
  for (let i = 0; i < n; i++) {
    const family = r.chance(0.6) ? 4 : 6;
    const a = r.chance(0.1) ? (family === 4 ? [127, 0, 0, 1] : [...Array(15).fill(0), 1]) : r.pick(anchors[family]);
    const prefix =
      family === 4 ? r.pick([0, 8, 12, 14, 16, 20, 24, 28, 30, 32]) : r.pick([0, 8, 16, 24, 32, 48, 64, 96, 120, 128]);
    const t = `${text(mask(a, prefix))}/${prefix}`;
    if (!cidrs.has(t)) cidrs.set(t, r.chance(0.5));
  }
  const ports = [...o.ports];
  const includePorts = r.chance(0.3) ? ports.filter(() => r.chance(0.4)) : [];
  const excludePorts = ports.filter((p) => !includePorts.includes(p) && r.chance(0.2));
  // Each kind of bypass alone, or several: a policy may recognise its proxy by cgroup only, say.
  const owners = r.chance(0.6);
  let uids = owners ? o.uids.filter((u) => u !== 0 && r.chance(0.4)) : [];
  const gids = owners ? o.gids.filter((g) => g !== 0 && r.chance(0.3)) : [];
  const cgroups = o.cgroups.filter(() => r.chance(0.35));
  const marks = o.marks.filter(() => r.chance(0.35));
  if (uids.length + gids.length + cgroups.length + marks.length === 0) uids = [1337];
  const has4 = r.chance(0.85);
  const has6 = !has4 || r.chance(0.6);
  const doc = {
    apiVersion: 'meshredir/v1',
    kind: 'RedirectPolicy',
    metadata: { name: 'gen' },
    spec: {
      cgroup: '/pods/gen',
      proxy: {
        ...(has4 ? { outbound: `127.0.0.1:${r.pick(o.proxyPorts)}` } : {}),
        ...(has6 ? { outbound6: `[::1]:${r.pick(o.proxyPorts)}` } : {}),
        bypass: { uids, gids, cgroups, marks },
      },
      outbound: {
        includePorts,
        excludePorts,
        includeCidrs: [...cidrs].filter(([, inc]) => inc).map(([t]) => t),
        excludeCidrs: [...cidrs].filter(([, inc]) => !inc).map(([t]) => t),
        redirectLoopback: r.chance(0.4),
      },
    },
  };
  const res = parsePolicyText(JSON.stringify(doc), 'gen.yaml');
  if (res.errors.length)
    throw new Error(`generated an invalid policy: ${JSON.stringify(res.errors)}\n${JSON.stringify(doc)}`);
  return { policy: res.policies[0]!, anchors };
}

/** Random connections that hit the policy's CIDRs, their edges, loopback and the proxy itself. */
export function genConns(
  r: ReturnType<typeof rng>,
  p: Policy,
  anchors: { 4: number[][]; 6: number[][] },
  count: number,
  o: GenOptions = DEFAULT_GEN,
): Conn[] {
  const out: Conn[] = [];
  const cidrs = [...p.outbound.includeCidrs, ...p.outbound.excludeCidrs];
  for (let i = 0; i < count; i++) {
    const family: 4 | 6 = r.chance(0.6) ? 4 : 6;
    const len = family === 4 ? 4 : 16;
    const mine = cidrs.filter((c) => c.family === family);
    const proxy = family === 4 ? p.proxy.outbound : p.proxy.outbound6;
    let dst: number[];
    let dport = r.pick([...o.ports, ...o.proxyPorts]);
    const k = r.next();
    if (k < 0.45 && mine.length) {
      const c = r.pick(mine);
      // Inside the CIDR: keep its prefix bits, randomise the rest.
      dst = Array.from({ length: len }, (_, j) => {
        const keep = Math.max(0, Math.min(8, c.prefix - j * 8));
        const m = keep === 0 ? 0 : (0xff << (8 - keep)) & 0xff;
        return ((c.bytes[j] ?? 0) & m) | (r.int(256) & ~m & 0xff);
      });
      if (c.prefix === 0) dst[0] = family === 4 ? 10 : 0xfd; // still inside; and an address an interface can hold
    } else if (k < 0.6) dst = [...r.pick(anchors[family])];
    else if (k < 0.72)
      dst =
        family === 4
          ? r.pick([
              [127, 0, 0, 1],
              [127, r.int(256), r.int(256), 1 + r.int(254)],
            ])
          : [...Array(15).fill(0), 1];
    else if (k < 0.82 && proxy) {
      dst = [...proxy.bytes];
      dport = proxy.port;
    } else
      dst =
        family === 4
          ? [10, r.int(4), r.int(256), 1 + r.int(254)]
          : [0xfd, 0, 0, r.int(4), ...Array.from({ length: 12 }, () => r.int(256))];
    // Addresses the kernel test puts on an interface must be usable there.
    if (family === 4 && dst[0] === 10 && (dst[3] === 0 || dst[3] === 255)) dst[3] = 7;
    out.push({
      family,
      dst,
      dport,
      uid: r.pick(o.uids),
      gid: r.pick(o.gids),
      cgroup: r.pick(o.connCgroups),
      mark: r.pick(o.connMarks),
      outLo: isLoopback(family, dst) || r.chance(0.2),
    });
  }
  return out;
}

export const addrText = text;
