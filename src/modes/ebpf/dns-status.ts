// dns-status.ts — the DNS capture part's status from the pins alone: whether its programs are attached,
// each capturing policy's proxy and destinations with its counters (queries captured, replies relabelled,
// bypasses, sockets refused for a full table), and the captured sockets open now.
import { existsSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import {
  AF_INET,
  DNS_NEEDS,
  DNS_PROGRAMS,
  DNS_STAT_FIELDS,
  ON_DEMAND_PROGRAMS,
  type ProgramName,
  DnsFlag,
  DnsSockFlag,
  type DnsProgramName,
  type DnsStatName,
} from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import type { Section } from '../mode.js';
import type { Pins } from './pins.js';
import { unloadableDnsPrograms } from '../../bpf/optional.js';

export interface DnsPolicyStatus {
  policy: string;
  slot: number;
  proxy: string;
  proxy6: string | null;
  /** The captured nameservers, or "all" (every port-53 destination). */
  nameservers: string[] | 'all';
  tcp: boolean;
  counters: Record<DnsStatName, number>;
  /** Queries sent to the proxy: UDP connects, unconnected sends, TCP connects. */
  captured: number;
}

export interface DnsStatus {
  available: boolean;
  unavailable?: Partial<Record<DnsProgramName, string>>;
  policies: DnsPolicyStatus[];
  /** Captured sockets open now (mr_dns_socks entries), of which connected, and the table's capacity. */
  openSockets: number;
  connectedSockets: number;
  capacity: number;
}

const DNS_NAMES = Object.keys(DNS_PROGRAMS) as DnsProgramName[];

/** Which DNS programs are not attached now, with why (nothing pinned yet: which this kernel cannot load).
 * mr_dns_release is attached on demand (release.ts): to plan (and in status) it is available while its
 * program is pinned and the hooks it goes with (DNS_NEEDS) are attached; to write mr_dns_pol (`write`), only
 * while it is attached. */
export function dnsUnavailable(pins: Pins, when: 'plan' | 'write' = 'plan'): Partial<Record<DnsProgramName, string>> {
  const links = new Map(pins.links().map((l) => [l.name, l]));
  if (!links.has('mr_connect4')) return unloadableDnsPrograms();
  const out: Partial<Record<DnsProgramName, string>> = {};
  for (const n of DNS_NAMES) {
    const l = links.get(n);
    if (ON_DEMAND_PROGRAMS.includes(n as ProgramName) && !l?.attached) {
      const missing = DNS_NEEDS.filter((x) => x !== n && !links.get(x)?.attached);
      if (!existsSync(pins.progPin(n)))
        out[n] = 'not loaded (this kernel lacks its hook, or one it needs: see the agent log)';
      else if (missing.length) out[n] = `needs ${missing.join(', ')}`;
      else if (when === 'write') out[n] = 'not attached (attached on demand before the entries: see the agent log)';
      continue;
    }
    if (!l) out[n] = 'not attached (this kernel lacks its hook, or one it needs: see the agent log)';
    else if (!l.attached) out[n] = `link ${l.name} is detached`;
  }
  return out;
}

const ip = (b: Buffer, family: number) =>
  ipaddr.fromByteArray([...(family === AF_INET ? b.subarray(0, 4) : b.subarray(0, 16))]).toString();

/** Captured sockets open now, and how many of them are connected (their peer is a nameserver). */
export function openDnsSockets(pins: Pins): { open: number; connected: number; capacity: number } {
  return pins.withMaps(['mr_dns_socks'], (m) => {
    const socks = m.get('mr_dns_socks')! as BpfMap<bigint, { flags: number }>;
    const all = socks.entries();
    return {
      open: all.length,
      connected: all.filter(([, v]) => v.flags & DnsSockFlag.CONNECTED).length,
      capacity: socks.info.maxEntries,
    };
  });
}

export function dnsPolicies(pins: Pins): DnsPolicyStatus[] {
  if (!pins.has('mr_dns_pol') || !pins.has('mr_slots')) return [];
  const names = new Map([...pins.slots()].map(([n, s]) => [s, n]));
  return pins.withMaps(['mr_dns_pol', 'mr_dns_ns', 'mr_dns_stats'], (m) => {
    type Pol = { flags: number; proxy4_addr: Buffer; proxy6_addr: Buffer; proxy4_port: number; proxy6_port: number };
    const pols = (m.get('mr_dns_pol')! as BpfMap<number, Pol>).entries();
    const ns = (m.get('mr_dns_ns')! as BpfMap<{ slot: number; family: number; addr: Buffer }, number>).keys();
    const stats = m.get('mr_dns_stats')! as BpfMap<number, Record<DnsStatName, bigint>>;
    return pols
      .sort(([a], [b]) => a - b)
      .map(([slot, p]) => {
        const per = stats.getPerCpu(slot) ?? [];
        const counters = Object.fromEntries(
          DNS_STAT_FIELDS.map((f) => [f, per.reduce((n, v) => n + Number(v[f]), 0)]),
        ) as Record<DnsStatName, number>;
        return {
          policy: names.get(slot) ?? `slot ${slot}`,
          slot,
          proxy: `${ip(p.proxy4_addr, AF_INET)}:${p.proxy4_port}`,
          proxy6: p.flags & DnsFlag.PROXY6 ? `[${ip(p.proxy6_addr, 10)}]:${p.proxy6_port}` : null,
          nameservers:
            p.flags & DnsFlag.ALL
              ? ('all' as const)
              : ns.filter((k) => k.slot === slot).map((k) => ip(k.addr, k.family)),
          tcp: Boolean(p.flags & DnsFlag.TCP),
          counters,
          captured: counters.udp_connect + counters.udp_sendmsg + counters.tcp_connect,
        };
      });
  });
}

export function dnsStatus(pins: Pins): { json: DnsStatus; sections: Section[] } {
  if (!pins.has('mr_dns_socks')) {
    return { json: { available: false, policies: [], openSockets: 0, connectedSockets: 0, capacity: 0 }, sections: [] };
  }
  const unavailable = dnsUnavailable(pins);
  const off = Object.keys(unavailable).length > 0;
  const policies = dnsPolicies(pins);
  const socks = openDnsSockets(pins);
  const json: DnsStatus = {
    available: !off,
    ...(off ? { unavailable } : {}),
    policies,
    openSockets: socks.open,
    connectedSockets: socks.connected,
    capacity: socks.capacity,
  };
  const sections: Section[] = [];
  if (off && (policies.length || pins.links().length))
    sections.push({
      lines: [
        `DNS capture unavailable: ${Object.entries(unavailable)
          .map(([n, w]) => `${n} (${w})`)
          .join('; ')}`,
      ],
    });
  if (policies.length) {
    sections.push({
      table: {
        head: ['dns policy', 'proxy', 'captures', 'queries captured', 'replies', 'bypassed', 'refused (full)'],
        rows: policies.map((p) => {
          const c = p.counters;
          return [
            p.policy,
            [p.proxy, p.proxy6].filter(Boolean).join(' '),
            `${p.nameservers === 'all' ? 'all port 53' : p.nameservers.join(' ')}${p.tcp ? '' : ' (UDP only)'}`,
            `${p.captured} (udp connect ${c.udp_connect}, sendto ${c.udp_sendmsg}, tcp ${c.tcp_connect})`,
            c.replies,
            c.bypass_cgroup + c.bypass_owner + c.bypass_mark + c.bypass_dest,
            c.err_full,
          ];
        }),
      },
    });
    sections.push({
      lines: [
        `captured DNS sockets open: ${socks.open} (${socks.connected} connected) of ${socks.capacity}; a socket's entry goes when it closes`,
      ],
    });
  }
  return { json, sections };
}
