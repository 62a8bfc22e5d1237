// limits.ts — how much policy input meshredir accepts, enforced before (bytes, files) and while (entries,
// policies) it is parsed, so that no file, however big or hostile, costs more than a bounded amount of
// memory and time, and no single policy can fill a map the others need.
import type { z } from 'zod';
import { MAX_POLICIES } from '../bpf/abi.js';

/**
 * The eBPF maps' capacities as bpf/mr_common.h declares them (what the shipped object creates; a unit test
 * holds the two together). The eBPF mode reads the real ones from the pins; `policy check` uses these.
 */
export const MAP_CAPACITY = {
  mr_cgroups: 65_536,
  mr_policies: MAX_POLICIES,
  mr_owners: 65_536,
  mr_proxies: 65_536,
  mr_ports: 262_144,
  mr_cidrs: 262_144,
  mr_slots: MAX_POLICIES,
} as const;
export type PolicyMapName = keyof typeof MAP_CAPACITY;
export type Capacities = Record<PolicyMapName, number>;

export const LIMITS = {
  /** Bytes per policy file: refused by size (fstat) before a byte is read. Parsing costs ~90 bytes of
   * memory per byte of YAML, so this bounds one parse to a few hundred MiB at worst. */
  fileBytes: 4 * 1024 * 1024,
  /** Bytes of all the policy files of a directory together (what agent.json remembers is bounded too). */
  dirBytes: 16 * 1024 * 1024,
  /** Policy files (*.yaml, *.yml) in a directory. */
  files: 4096,
  /** Policies per node: the maps have MAX_POLICIES slots, slot 0 holds the counters of no policy. */
  policies: MAX_POLICIES - 1,
  /** includePorts + excludePorts of one policy (mr_ports holds 262,144 for every policy). */
  ports: 16_384,
  /** includeCidrs + excludeCidrs of one policy: a quarter of mr_cidrs (262,144), room for the others. */
  cidrs: 65_536,
  /** bypass uids + gids of one policy (mr_owners holds 65,536). */
  owners: 1024,
  /** bypass cgroups of one policy (each is an entry of mr_cgroups and mr_proxies, 65,536 each). */
  bypassCgroups: 256,
  /** inbound.excludePorts (iptables rules only). */
  inboundPorts: 16_384,
  /** dns.nameservers of one policy: mr_dns_ns holds 65,536, room for 16 for each of 4,095 policies. */
  nameservers: 16,
} as const;

const n = (x: number) => x.toLocaleString('en-US');

/** The spec fields the entry limits read (the parsed spec of schema.ts). */
interface SpecCounts {
  proxy: { bypass: { cgroups: unknown[]; uids: unknown[]; gids: unknown[] } };
  outbound: { includePorts: unknown[]; excludePorts: unknown[]; includeCidrs: unknown[]; excludeCidrs: unknown[] };
  inbound: { excludePorts: unknown[] };
  dns?: { nameservers: unknown[] } | undefined;
}

/** Entries per policy, checked inside the schema (so `policy check` and the agent refuse alike). */
export function checkEntryLimits(spec: SpecCounts, ctx: z.RefinementCtx): void {
  const over = (path: (string | number)[], count: number, max: number, what: string) => {
    if (count > max)
      ctx.addIssue({
        code: 'custom',
        path,
        message: `${n(count)} ${what}; at most ${n(max)} per policy`,
      });
  };
  const o = spec.outbound;
  over(
    ['outbound', o.excludePorts.length ? 'excludePorts' : 'includePorts'],
    o.includePorts.length + o.excludePorts.length,
    LIMITS.ports,
    `ports in includePorts and excludePorts together (mr_ports holds ${n(MAP_CAPACITY.mr_ports)} for every policy of the node)`,
  );
  over(
    ['outbound', o.excludeCidrs.length ? 'excludeCidrs' : 'includeCidrs'],
    o.includeCidrs.length + o.excludeCidrs.length,
    LIMITS.cidrs,
    `CIDRs in includeCidrs and excludeCidrs together (mr_cidrs holds ${n(MAP_CAPACITY.mr_cidrs)} for every policy of the node)`,
  );
  const b = spec.proxy.bypass;
  over(
    ['proxy', 'bypass', b.gids.length ? 'gids' : 'uids'],
    b.uids.length + b.gids.length,
    LIMITS.owners,
    'uids and gids together',
  );
  over(['proxy', 'bypass', 'cgroups'], b.cgroups.length, LIMITS.bypassCgroups, 'bypass cgroups');
  over(['inbound', 'excludePorts'], spec.inbound.excludePorts.length, LIMITS.inboundPorts, 'inbound ports');
  if (spec.dns)
    over(
      ['dns', 'nameservers'],
      spec.dns.nameservers.length,
      LIMITS.nameservers,
      'nameservers (resolv.conf uses at most 3; or all: true)',
    );
}

/** For messages: "4 MiB". */
export function bytes(x: number): string {
  if (x >= 1024 * 1024) return `${+(x / (1024 * 1024)).toFixed(1)} MiB`;
  if (x >= 1024) return `${+(x / 1024).toFixed(1)} KiB`;
  return `${x} bytes`;
}
