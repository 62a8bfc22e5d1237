// dnsload.ts — a minimal loader for the DNS capture tests, on the src/bpf layer: loads
// meshredir.bpf.o, writes the policy and DNS map entries, attaches the programs DNS capture needs to a
// test cgroup in the documented order (detaching in reverse), and reads counters and open entries.
// Nothing is pinned: everything goes when close() runs (the agent integration comes later).
import { statSync } from 'node:fs';
import { BpfObject } from '../../src/bpf/object.js';
import { Link } from '../../src/bpf/link.js';
import type { BpfMap } from '../../src/bpf/map.js';
import { MAPS, DNS_PROGRAMS, DNS_STAT_FIELDS, type DnsStatName } from '../../src/bpf/abi.js';
import { toEntries, type Resolution } from '../../src/policy/entries.js';
import { toDnsEntries } from '../../src/policy/dns.js';
import type { Policy } from '../../src/policy/schema.js';

/** sock_release and recvmsg first, then sendmsg; getpeername before the connect hooks, which go last. */
export const DNS_ATTACH_ORDER = [
  'mr_dns_release',
  'mr_getpeername4',
  'mr_getpeername6',
  'mr_dns_recv4',
  'mr_dns_recv6',
  'mr_dns_send4',
  'mr_dns_send6',
  'mr_connect4',
  'mr_connect6',
] as const;

const cgroupId = (dir: string) => statSync(dir, { bigint: true }).ino;

type AnyMap = BpfMap<unknown, unknown>;

export class DnsLoader {
  private obj: BpfObject;
  private links: Link[] = [];
  constructor(object: string) {
    this.obj = BpfObject.open(object);
    this.obj.load();
  }

  map(name: keyof typeof MAPS): AnyMap {
    const m = MAPS[name] as { key: never; value: never };
    return this.obj.map(name, m.key, m.value) as AnyMap;
  }

  /** Writes the entries of these policies (cgroup dirs: policy name → its dir and its bypass dirs). */
  apply(policies: Policy[], dirs: Map<string, { cgroup: string; bypass: string[] }>): void {
    const slots = new Map(policies.map((p, i) => [p.name, i + 1]));
    const res = new Map<string, Resolution>(
      policies.map((p) => {
        const d = dirs.get(p.name)!;
        return [p.name, { cgroup: cgroupId(d.cgroup), bypass: d.bypass.map(cgroupId) }];
      }),
    );
    const e = { ...toEntries(policies, slots, res), ...toDnsEntries(policies, slots, res) };
    for (const [name, entries] of Object.entries(e)) this.map(name as keyof typeof MAPS).setMany(entries as never);
  }

  attach(cgroupDir: string, only: readonly string[] = DNS_ATTACH_ORDER): void {
    for (const name of DNS_ATTACH_ORDER) {
      if (!only.includes(name)) continue;
      this.links.push(Link.attachCgroup(this.obj.program(name), cgroupDir));
    }
  }

  /** Detaches in reverse attach order. */
  detach(): void {
    for (const l of this.links.reverse()) {
      l.detach();
      l.close();
    }
    this.links = [];
  }

  /** DNS counters of a slot, summed over CPUs. */
  stats(slot: number): Record<DnsStatName, number> {
    const per = (this.map('mr_dns_stats') as BpfMap<number, Record<DnsStatName, bigint>>).getPerCpu(slot) ?? [];
    return Object.fromEntries(DNS_STAT_FIELDS.map((f) => [f, per.reduce((a, v) => a + Number(v[f]), 0)])) as Record<
      DnsStatName,
      number
    >;
  }

  /** Entries of a map now (captured sockets open, for mr_dns_socks). */
  count(name: keyof typeof MAPS): number {
    return this.map(name).rawKeys().length;
  }

  close(): void {
    this.detach();
    this.obj.close();
  }
}

export { DNS_PROGRAMS };
