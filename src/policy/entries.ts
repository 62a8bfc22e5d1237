// entries.ts — a policy set as the eBPF maps' contents: pure, so it is unit-tested without root.
import type { Policy } from './schema.js';
import {
  Action,
  CgKind,
  OwnerKind,
  PolicyFlag,
  AF_INET,
  AF_INET6,
  MAX_MARKS,
  MAX_POLICIES,
  SLOT_NAME_BYTES,
  defaultPendingBudget,
} from '../bpf/abi.js';

/** How a policy's cgroups resolved on this host (ids are kernfs inode numbers). */
export interface Resolution {
  cgroup: bigint | null;
  bypass: (bigint | null)[];
  /** spec.netns as the kernel names it (its inode number); null when given but not found; absent when
   * the policy gives none. A connect of the policy from any other netns is refused. */
  netns?: number | null;
}

export interface MapEntries {
  mr_cgroups: [bigint, { kind: number; slot: number }][];
  mr_policies: [
    number,
    {
      flags: number;
      proxy4_addr: Buffer;
      proxy6_addr: Buffer;
      proxy4_port: number;
      proxy6_port: number;
      marks: Buffer;
      pending_max: number;
      netns_ino: number;
    },
  ][];
  mr_owners: [{ slot: number; kind: number; id: number }, number][];
  mr_proxies: [{ cgroup_id: bigint; slot: number; pad: number }, number][];
  mr_ports: [{ slot: number; port: number; pad: number }, number][];
  mr_cidrs: [{ prefixlen: number; slot: number; family: number; addr: Buffer; pad: Buffer }, number][];
  mr_slots: [number, { cgroup_id: bigint; name: Buffer }][];
}

/** Keeps slots stable: a policy keeps the slot it had (by name), new ones take the lowest free. */
export function assignSlots(names: string[], previous: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  const used = new Set<number>();
  for (const n of names) {
    const s = previous.get(n);
    if (s !== undefined && !used.has(s)) {
      out.set(n, s);
      used.add(s);
    }
  }
  let next = 1; // slot 0 holds the counters of events not tied to a policy
  for (const n of names) {
    if (out.has(n)) continue;
    while (used.has(next)) next++;
    if (next >= MAX_POLICIES) throw new Error(`more than ${MAX_POLICIES - 1} policies`);
    out.set(n, next);
    used.add(next);
  }
  return out;
}

/** What the kernel side offers: without an sk_msg link, `accelerate` must not put sockets in the
 * sockhash (their send and receive would go through tcp_bpf for nothing). And the agent's settings
 * that every policy gets: its budget of handshakes in flight (default: defaultPendingBudget()). */
export interface Capabilities {
  fastPath: boolean;
  pendingMax?: number;
}

export function policyFlags(p: Policy, caps: Capabilities = { fastPath: true }): number {
  let f = 0;
  if (p.proxy.outbound) f |= PolicyFlag.PROXY4;
  if (p.proxy.outbound6) f |= PolicyFlag.PROXY6;
  if (p.outbound.includePorts.length > 0) f |= PolicyFlag.INCLUDE_PORTS;
  if (p.outbound.includeCidrs.length > 0) f |= PolicyFlag.INCLUDE_CIDRS;
  if (p.outbound.redirectLoopback) f |= PolicyFlag.REDIRECT_LOOPBACK;
  if (p.accelerate && caps.fastPath) f |= PolicyFlag.ACCELERATE;
  if (p.bypass.marks.length > 0) f |= PolicyFlag.BYPASS_MARKS;
  // What the policy has entries in: a connect looks up only those maps.
  if (p.bypass.uids.length + p.bypass.gids.length > 0) f |= PolicyFlag.OWNERS;
  if (p.outbound.includePorts.length + p.outbound.excludePorts.length > 0) f |= PolicyFlag.PORTS;
  if (p.outbound.includeCidrs.length + p.outbound.excludeCidrs.length > 0) f |= PolicyFlag.CIDRS;
  return f;
}

/** mr_policy.marks: { value, mask } pairs (u32, little-endian), the unused rest zero (a zero mask ends it). */
export function policyMarks(p: Policy): Buffer {
  if (p.bypass.marks.length > MAX_MARKS) throw new Error(`policy ${p.name}: more than ${MAX_MARKS} bypass marks`);
  const b = Buffer.alloc(8 * MAX_MARKS);
  p.bypass.marks.forEach((m, i) => {
    b.writeUInt32LE(m.value, 8 * i);
    b.writeUInt32LE(m.mask, 8 * i + 4);
  });
  return b;
}

/**
 * Cgroup ids that carry no policy (a source such as the Kubernetes pod watch gives their paths, see
 * src/sources/source.ts): `guard` (the kubepods QoS parents: a connect from a cgroup below one that has
 * no entry of its own is refused) and `pass` (pods classified as not enrolled: never redirected, not
 * guarded). Both use slot 0.
 */
export interface GateIds {
  guard: bigint[];
  pass: bigint[];
}

/** The same as cgroup paths under the cgroup2 mount ("/kubepods.slice"), as a source gives them. */
export interface Gates {
  guard: string[];
  pass: string[];
}

/** Which kind wins when one cgroup id is claimed twice: a policy, then a proxy, then a pass, then a guard. */
const KIND_RANK: Record<number, number> = {
  [CgKind.POLICY]: 4,
  [CgKind.BYPASS]: 3,
  [CgKind.PASS]: 2,
  [CgKind.GUARD]: 1,
};

/** Policies whose cgroup does not exist yet contribute nothing but their slot metadata. */
export function toEntries(
  policies: Policy[],
  slots: Map<string, number>,
  res: Map<string, Resolution>,
  caps: Capabilities = { fastPath: true },
  gates: GateIds = { guard: [], pass: [] },
): MapEntries {
  const e: MapEntries = {
    mr_cgroups: [],
    mr_policies: [],
    mr_owners: [],
    mr_proxies: [],
    mr_ports: [],
    mr_cidrs: [],
    mr_slots: [],
  };
  for (const p of policies) {
    const slot = slots.get(p.name);
    if (slot === undefined) throw new Error(`policy ${p.name}: no slot`);
    const r = res.get(p.name);
    const name = Buffer.alloc(SLOT_NAME_BYTES);
    if (Buffer.byteLength(p.name) >= SLOT_NAME_BYTES)
      throw new Error(`policy ${p.name}: name longer than ${SLOT_NAME_BYTES - 1} bytes`);
    name.write(p.name, 'utf8');
    e.mr_slots.push([slot, { cgroup_id: r?.cgroup ?? 0n, name }]);
    if (!r?.cgroup) continue;
    e.mr_cgroups.push([r.cgroup, { kind: CgKind.POLICY, slot }]);
    for (const b of r.bypass) {
      if (!b) continue;
      e.mr_cgroups.push([b, { kind: CgKind.BYPASS, slot }]);
      e.mr_proxies.push([{ cgroup_id: b, slot, pad: 0 }, 1]);
    }
    const o4 = p.proxy.outbound;
    const o6 = p.proxy.outbound6;
    e.mr_policies.push([
      slot,
      {
        flags: policyFlags(p, caps),
        proxy4_addr: Buffer.from(o4?.bytes ?? [0, 0, 0, 0]),
        proxy6_addr: Buffer.from(o6?.bytes ?? new Array<number>(16).fill(0)),
        proxy4_port: o4?.port ?? 0,
        proxy6_port: o6?.port ?? 0,
        marks: policyMarks(p),
        pending_max: caps.pendingMax ?? defaultPendingBudget(),
        netns_ino: r.netns ?? 0,
      },
    ]);
    for (const uid of p.bypass.uids) e.mr_owners.push([{ slot, kind: OwnerKind.UID, id: uid }, 1]);
    for (const gid of p.bypass.gids) e.mr_owners.push([{ slot, kind: OwnerKind.GID, id: gid }, 1]);
    for (const port of p.outbound.includePorts) e.mr_ports.push([{ slot, port, pad: 0 }, Action.INCLUDE]);
    for (const port of p.outbound.excludePorts) e.mr_ports.push([{ slot, port, pad: 0 }, Action.EXCLUDE]);
    const cidr = (
      c: { family: 4 | 6; bytes: number[]; prefix: number },
      action: number,
    ): MapEntries['mr_cidrs'][number] => {
      const addr = Buffer.alloc(16);
      Buffer.from(c.bytes).copy(addr);
      return [
        { prefixlen: 32 + 8 + c.prefix, slot, family: c.family === 4 ? AF_INET : AF_INET6, addr, pad: Buffer.alloc(3) },
        action,
      ];
    };
    for (const c of p.outbound.includeCidrs) e.mr_cidrs.push(cidr(c, Action.INCLUDE));
    for (const c of p.outbound.excludeCidrs) e.mr_cidrs.push(cidr(c, Action.EXCLUDE));
  }
  for (const id of gates.pass) e.mr_cgroups.push([id, { kind: CgKind.PASS, slot: 0 }]);
  for (const id of gates.guard) e.mr_cgroups.push([id, { kind: CgKind.GUARD, slot: 0 }]);
  // A cgroup that is one policy's bypass and another's policy cgroup: the policy entry wins, so a
  // workload cannot escape its policy by being listed as someone else's proxy. A pod's own entry (pass)
  // beats a guard, so a guard on a pod cgroup (a misconfigured root) never cuts a classified pod off.
  const byId = new Map<bigint, { kind: number; slot: number }>();
  for (const [id, v] of e.mr_cgroups) {
    const cur = byId.get(id);
    if (!cur || (KIND_RANK[v.kind] ?? 0) > (KIND_RANK[cur.kind] ?? 0)) byId.set(id, v);
  }
  e.mr_cgroups = [...byId.entries()];
  return e;
}

export interface IdConflict {
  /** The cgroup id two or more policies resolved to. */
  id: bigint;
  policies: Policy[];
  /** The policy that keeps the cgroup (it holds it in the kernel now), if exactly one does. */
  kept?: Policy;
}

/**
 * Policies whose cgroups resolve to the same cgroup id (different spellings of one directory that the
 * schema could not normalise away). The policy that owns the id in the kernel now (`owners`: id → policy
 * name) keeps it; the others are rejected; when none (or more than one) owns it, all are rejected.
 */
export function cgroupIdConflicts(
  policies: Policy[],
  res: Map<string, Resolution>,
  owners: Map<bigint, string>,
): { keep: Policy[]; conflicts: IdConflict[] } {
  const byId = new Map<bigint, Policy[]>();
  for (const p of policies) {
    const id = res.get(p.name)?.cgroup;
    if (id) byId.set(id, [...(byId.get(id) ?? []), p]);
  }
  const rejected = new Set<Policy>();
  const conflicts: IdConflict[] = [];
  for (const [id, ps] of byId) {
    if (ps.length < 2) continue;
    const owning = ps.filter((p) => owners.get(id) === p.name);
    const kept = owning.length === 1 ? owning[0] : undefined;
    for (const p of ps) if (p !== kept) rejected.add(p);
    conflicts.push({ id, policies: ps, ...(kept ? { kept } : {}) });
  }
  return { keep: policies.filter((p) => !rejected.has(p)), conflicts };
}

/** The error of a rejected policy in an id conflict, naming the other files. */
export function idConflictMessage(c: IdConflict, p: Policy): string {
  const others = c.policies.filter((o) => o !== p).map((o) => `${o.file} (${o.name}, ${o.cgroup})`);
  return c.kept
    ? `${p.file}: spec.cgroup: ${p.cgroup} is cgroup id ${c.id}, already claimed by ${c.kept.file} (${c.kept.name}, ${c.kept.cgroup}), which is applied and stays; ${p.name} is not applied`
    : `${p.file}: spec.cgroup: ${p.cgroup} is cgroup id ${c.id}, also claimed by ${others.join(', ')}; not applied`;
}
