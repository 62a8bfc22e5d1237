// dns.ts — a policy set's DNS capture as the contents of mr_dns_pol and mr_dns_ns (bpf/mr_dns.h):
// pure, unit-tested without root. The cgroup, bypass and owner entries it relies on are entries.ts's.
import type { Policy } from './schema.js';
import type { Resolution } from './entries.js';
import { DnsFlag, AF_INET, AF_INET6 } from '../bpf/abi.js';

export interface DnsEntries {
  mr_dns_pol: [
    number,
    { flags: number; proxy4_addr: Buffer; proxy6_addr: Buffer; proxy4_port: number; proxy6_port: number },
  ][];
  mr_dns_ns: [{ slot: number; family: number; pad: Buffer; addr: Buffer }, number][];
}

export function dnsFlags(d: NonNullable<Policy['dns']>): number {
  return DnsFlag.PROXY4 | (d.proxy6 ? DnsFlag.PROXY6 : 0) | (d.all ? DnsFlag.ALL : 0) | (d.tcp ? DnsFlag.TCP : 0);
}

/** Like toEntries: a policy whose cgroup does not exist yet contributes nothing. */
export function toDnsEntries(policies: Policy[], slots: Map<string, number>, res: Map<string, Resolution>): DnsEntries {
  const e: DnsEntries = { mr_dns_pol: [], mr_dns_ns: [] };
  for (const p of policies) {
    if (!p.dns || !res.get(p.name)?.cgroup) continue;
    const slot = slots.get(p.name);
    if (slot === undefined) throw new Error(`policy ${p.name}: no slot`);
    const d = p.dns;
    e.mr_dns_pol.push([
      slot,
      {
        flags: dnsFlags(d),
        proxy4_addr: Buffer.from(d.proxy.bytes),
        proxy6_addr: Buffer.from(d.proxy6?.bytes ?? new Array<number>(16).fill(0)),
        proxy4_port: d.proxy.port,
        proxy6_port: d.proxy6?.port ?? 0,
      },
    ]);
    if (d.all) continue; // every destination: the list is not consulted
    for (const ns of d.nameservers) {
      const addr = Buffer.alloc(16);
      Buffer.from(ns.bytes).copy(addr);
      e.mr_dns_ns.push([{ slot, family: ns.family === 4 ? AF_INET : AF_INET6, pad: Buffer.alloc(3), addr }, 1]);
    }
  }
  return e;
}
