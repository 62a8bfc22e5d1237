// capacity.ts — which policies fit in the eBPF maps: each policy's demand per map (the entries toEntries
// makes of it, duplicates counted once), and an admission that never lets a newcomer or a policy that grew
// push out what is applied. Pure: the mode gives it the capacities (from the pins) and the resolutions.
import type { Policy } from './schema.js';
import type { Resolution } from './entries.js';
import type { Capacities, PolicyMapName } from './limits.js';

/** Maps whose keys carry the policy's slot: entries of two policies never share a key. */
const PER_SLOT = ['mr_policies', 'mr_owners', 'mr_proxies', 'mr_ports', 'mr_cidrs', 'mr_slots'] as const;
type PerSlot = (typeof PER_SLOT)[number];

export interface Demand {
  /** Entries per map keyed by slot. */
  perSlot: Record<PerSlot, number>;
  /** mr_cgroups is keyed by cgroup id, which policies may share (a node proxy is every policy's bypass). */
  cgroups: bigint[];
}

/** What toEntries writes for one policy, counted (a policy whose cgroup does not exist: its slot only). */
export function demand(p: Policy, r: Resolution | undefined): Demand {
  const perSlot: Record<PerSlot, number> = {
    mr_policies: 0,
    mr_owners: 0,
    mr_proxies: 0,
    mr_ports: 0,
    mr_cidrs: 0,
    mr_slots: 1,
  };
  if (!r?.cgroup) return { perSlot, cgroups: [] };
  const bypass = [...new Set(r.bypass.filter((b): b is bigint => b !== null))];
  perSlot.mr_policies = 1;
  perSlot.mr_proxies = bypass.length;
  perSlot.mr_owners = new Set(p.bypass.uids).size + new Set(p.bypass.gids).size;
  perSlot.mr_ports = new Set([...p.outbound.includePorts, ...p.outbound.excludePorts]).size;
  perSlot.mr_cidrs = new Set([...p.outbound.includeCidrs, ...p.outbound.excludeCidrs].map((c) => c.text)).size;
  return { perSlot, cgroups: [...new Set([r.cgroup, ...bypass])] };
}

export interface Candidate {
  policy: Policy;
  /** In the maps now (it holds a slot). */
  incumbent: boolean;
  /** The version of it applied last (its entries are in the maps), when known. */
  previous?: Policy;
}

export interface Admission {
  /** The versions to write, in the candidates' order. */
  admitted: Policy[];
  /** Incumbents whose new version does not fit: their previous version stays (in `admitted`). */
  failed: { policy: Policy; message: string }[];
  /** Not applied at all. */
  rejected: { policy: Policy; message: string }[];
}

const n = (x: number) => x.toLocaleString('en-US');

/**
 * Admits policies while they fit: first what is applied, as it was applied (so nothing that works can be
 * pushed out); then each incumbent's new version, if it fits in place of the old one (else the old one
 * stays: `failed`); then newcomers in order (else `rejected`). `slots`: how many policies the maps hold.
 */
export function admit(
  candidates: Candidate[],
  resolve: (p: Policy) => Resolution | undefined,
  caps: Capacities,
  slots: number,
): Admission {
  const used: Record<PerSlot, number> = {
    mr_policies: 0,
    mr_owners: 0,
    mr_proxies: 0,
    mr_ports: 0,
    mr_cidrs: 0,
    mr_slots: 0,
  };
  const ids = new Map<bigint, number>(); // cgroup id → how many admitted policies use it
  let count = 0;
  const reserve = (d: Demand, sign: 1 | -1) => {
    for (const m of PER_SLOT) used[m] += sign * d.perSlot[m];
    for (const id of d.cgroups) {
      const k = (ids.get(id) ?? 0) + sign;
      if (k > 0) ids.set(id, k);
      else ids.delete(id);
    }
    count += sign;
  };
  /** Why d does not fit now, or null. */
  const misfit = (d: Demand): string | null => {
    if (count + 1 > slots) return `no free policy slot: the maps hold ${n(slots)} policies`;
    for (const m of PER_SLOT) {
      const cap = caps[m as PolicyMapName];
      if (used[m] + d.perSlot[m] > cap)
        return `${m} would hold ${n(used[m] + d.perSlot[m])} entries, more than its ${n(cap)} (this policy needs ${n(d.perSlot[m])}, the policies admitted before it ${n(used[m])})`;
    }
    const fresh = d.cgroups.filter((id) => !ids.has(id)).length;
    if (ids.size + fresh > caps.mr_cgroups)
      return `mr_cgroups would hold ${n(ids.size + fresh)} entries, more than its ${n(caps.mr_cgroups)}`;
    return null;
  };
  const out: Admission = { admitted: [], failed: [], rejected: [] };
  const chosen = new Map<Candidate, Policy>();
  const held = new Map<Candidate, Demand>();
  const at = (p: Policy) => `${p.file}: policy ${p.name}`;
  /** Takes `p` for `c` if it fits (its demand reserved, `p` chosen), else rejects `c`; the demand or null. */
  const admit = (c: Candidate, p: Policy): Demand | null => {
    const d = demand(p, resolve(p));
    const why = misfit(d);
    if (why) {
      out.rejected.push({
        policy: c.policy,
        message: `${at(c.policy)}: does not fit in the eBPF maps: ${why}; not applied`,
      });
      return null;
    }
    reserve(d, 1);
    chosen.set(c, p);
    return d;
  };
  // 1. What is applied, as applied.
  for (const c of candidates.filter((x) => x.incumbent)) {
    const d = admit(c, c.previous ?? c.policy);
    if (d) held.set(c, d);
  }
  // 2. Incumbents' new versions, each in place of its old one.
  for (const [c, old] of held) {
    if (!c.previous || c.previous === c.policy) continue;
    const d = demand(c.policy, resolve(c.policy));
    reserve(old, -1);
    const why = misfit(d);
    if (why) {
      reserve(old, 1);
      out.failed.push({
        policy: c.policy,
        message: `${at(c.policy)}: its new version does not fit in the eBPF maps: ${why}; the version applied before stays`,
      });
      continue;
    }
    reserve(d, 1);
    chosen.set(c, c.policy);
  }
  // 3. Newcomers, in order.
  for (const c of candidates.filter((x) => !x.incumbent)) admit(c, c.policy);
  out.admitted = candidates.filter((c) => chosen.has(c)).map((c) => chosen.get(c)!);
  return out;
}

/**
 * `policy check`'s capacity check: every policy as if its cgroups existed (a distinct id per distinct
 * path, the most mr_cgroups could need), admitted in order against the shipped capacities.
 */
export function checkCapacity(policies: Policy[], caps: Capacities, slots: number): Admission {
  const idOf = new Map<string, bigint>();
  const id = (path: string) => {
    if (!idOf.has(path)) idOf.set(path, BigInt(idOf.size + 1));
    return idOf.get(path)!;
  };
  return admit(
    policies.map((policy) => ({ policy, incumbent: false })),
    (p) => ({ cgroup: id(p.cgroup), bypass: p.bypass.cgroups.map(id) }),
    caps,
    slots,
  );
}
