// inbound.ts — a pod's inbound interception as eBPF map entries (mr_in_addrs, mr_in_ports, mr_in_srcs):
// pure, so the agent can diff them against the maps and `--dry-run` can print them.
import { Action, AF_INET, AF_INET6, InFlag } from '../bpf/abi.js';
import { isLoopback, type Cidr } from './addr.js';

export interface InboundSpec {
  /** The policy's slot (shared with its outbound state and counters). */
  slot: number;
  /** For messages. */
  name: string;
  /** The pod's own addresses, as read in its netns (sk_lookup cannot tell netns apart: see mr_abi.h). */
  addresses: { family: 4 | 6; bytes: number[] }[];
  includePorts: number[];
  excludePorts: number[];
  /** Sources that reach the app directly (e.g. the address a node proxy connects to the app from). */
  bypassSources: Cidr[];
  /** No proxy socket registered: refuse the connection (default) or deliver it to the app. */
  whenNoProxy: 'reject' | 'pass';
}

type AddrKey = { family: number; addr: Buffer };
type PortKey = { slot: number; port: number; pad: number };
type CidrKey = { prefixlen: number; slot: number; family: number; addr: Buffer; pad: Buffer };

export interface InboundEntries {
  mr_in_addrs: [AddrKey, { slot: number; flags: number }][];
  mr_in_ports: [PortKey, number][];
  mr_in_srcs: [CidrKey, number][];
}

export function inboundFlags(s: InboundSpec): number {
  let f = 0;
  if (s.whenNoProxy === 'pass') f |= InFlag.PASS;
  if (s.includePorts.length) f |= InFlag.INCLUDE_PORTS;
  if (s.bypassSources.length) f |= InFlag.BYPASS_SRCS;
  return f;
}

const addrText = (a: { family: 4 | 6; bytes: number[] }) =>
  a.family === 4
    ? a.bytes.join('.')
    : Buffer.from(a.bytes)
        .toString('hex')
        .replace(/(.{4})(?!$)/g, '$1:');

/**
 * The entries of every spec. An address is one pod's only: a second pod claiming it (two netns with
 * one address, or a stale read) keeps nothing of it and is named in `conflicts`, as is a loopback
 * address (never the pod's own: the program leaves loopback alone).
 */
export function inboundEntries(specs: InboundSpec[]): { entries: InboundEntries; conflicts: string[] } {
  const e: InboundEntries = { mr_in_addrs: [], mr_in_ports: [], mr_in_srcs: [] };
  const conflicts: string[] = [];
  const owner = new Map<string, string>();
  for (const s of specs) {
    const flags = inboundFlags(s);
    for (const a of s.addresses) {
      const text = addrText(a);
      if (isLoopback(a) || a.bytes.every((b) => b === 0)) {
        conflicts.push(`policy ${s.name}: ${text} is not a pod address (loopback/unspecified)`);
        continue;
      }
      const key = `${a.family}/${text}`;
      const had = owner.get(key);
      if (had !== undefined) {
        conflicts.push(`policy ${s.name}: address ${text} is already policy ${had}'s`);
        continue;
      }
      owner.set(key, s.name);
      const addr = Buffer.alloc(16);
      Buffer.from(a.bytes).copy(addr);
      e.mr_in_addrs.push([
        { family: a.family === 4 ? AF_INET : AF_INET6, addr },
        { slot: s.slot, flags },
      ]);
    }
    for (const port of s.includePorts) e.mr_in_ports.push([{ slot: s.slot, port, pad: 0 }, Action.INCLUDE]);
    for (const port of s.excludePorts) e.mr_in_ports.push([{ slot: s.slot, port, pad: 0 }, Action.EXCLUDE]);
    for (const c of s.bypassSources) {
      const addr = Buffer.alloc(16);
      Buffer.from(c.bytes).copy(addr);
      e.mr_in_srcs.push([
        {
          prefixlen: 32 + 8 + c.prefix,
          slot: s.slot,
          family: c.family === 4 ? AF_INET : AF_INET6,
          addr,
          pad: Buffer.alloc(3),
        },
        Action.EXCLUDE,
      ]);
    }
  }
  return { entries: e, conflicts };
}
