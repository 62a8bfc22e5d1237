// desired.ts — the eBPF mode's desired state for a policy set (and the gates: guard and pass cgroups):
// cgroups resolved to ids, slots kept from the pins, id conflicts settled in favour of what is applied,
// and the map entries. One function, used by the dry run and by apply alike.
import { assignSlots, toEntries, cgroupIdConflicts, idConflictMessage } from '../../policy/entries.js';
import type { MapEntries, Resolution, IdConflict, Gates, GateIds } from '../../policy/entries.js';
import type { Policy } from '../../policy/schema.js';
import { CgKind } from '../../bpf/abi.js';
import { cgroupId, cgroupDir, requireCgroup2 } from '../../util/host.js';
import type { Pins } from './pins.js';

export interface Unresolved {
  policy: string;
  field: 'spec.cgroup' | 'spec.proxy.bypass.cgroups';
  cgroup: string;
}

export interface Desired {
  entries: MapEntries;
  slots: Map<string, number>;
  /** Where the slots came from: the pinned mr_slots, or assigned anew (nothing pinned). */
  slotsFrom: 'pins' | 'new';
  /** The policies that take part (those in an id conflict they lose are not). */
  keep: Policy[];
  /** Cgroups (policy or bypass) that do not exist (yet): no entries for them until they do. */
  unresolved: Unresolved[];
  /** Policies left out because their cgroup is the same cgroup (by id) as another policy's. */
  rejected: { name: string; file: string; message: string }[];
  /** The gates (guard and pass cgroups) with their ids; null: the cgroup does not exist (yet), no entry. */
  gates: { guard: GateRes[]; pass: GateRes[] };
}

export interface GateRes {
  cgroup: string;
  id: bigint | null;
}

/** Gate paths as ids (null: the directory does not exist). */
export function resolveGates(gates: Gates | undefined): Desired['gates'] {
  const mount = requireCgroup2();
  const res = (paths: string[]) => paths.map((p) => ({ cgroup: p, id: cgroupId(cgroupDir(p, mount)) }));
  return { guard: res(gates?.guard ?? []), pass: res(gates?.pass ?? []) };
}

const gateIds = (g: Desired['gates']): GateIds => {
  const ids = (xs: GateRes[]) => xs.map((x) => x.id).filter((x): x is bigint => x !== null);
  return { guard: ids(g.guard), pass: ids(g.pass) };
};

/** Each policy's cgroup and bypass cgroups as ids (null: the directory does not exist). */
export function resolveCgroups(policies: Policy[]): Map<string, Resolution> {
  const mount = requireCgroup2();
  const id = (p: string) => cgroupId(cgroupDir(p, mount));
  return new Map(policies.map((p) => [p.name, { cgroup: id(p.cgroup), bypass: p.bypass.cgroups.map(id) }]));
}

/** Which policy (by name) owns each cgroup id in mr_cgroups now. */
function cgroupOwners(pins: Pins, slots: Map<string, number>): Map<bigint, string> {
  const bySlot = new Map([...slots].map(([n, s]) => [s, n]));
  const out = new Map<bigint, string>();
  for (const [id, v] of pins.entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups')) {
    const name = bySlot.get(v.slot);
    if (v.kind === CgKind.POLICY && name !== undefined) out.set(id, name);
  }
  return out;
}

/** Two policies can only collide by id when two of them resolved to the same one. */
function conflictsPossible(res: Map<string, Resolution>): boolean {
  const ids = [...res.values()].map((r) => r.cgroup).filter((x) => x !== null);
  return new Set(ids).size !== ids.length;
}

function rejections(conflicts: IdConflict[]): Desired['rejected'] {
  return conflicts.flatMap((c) =>
    c.policies
      .filter((p) => p !== c.kept)
      .map((p) => ({ name: p.name, file: p.file, message: idConflictMessage(c, p) })),
  );
}

/**
 * The desired state of the eBPF maps. `fastPath`: whether `accelerate` can take effect (the sk_msg link is
 * attached and the kernel lets it bound a slow reader; assumed when nothing is loaded yet).
 */
export function desiredState(pins: Pins, policies: Policy[], caps: { fastPath: boolean }, gates?: Gates): Desired {
  const installed = pins.has('mr_slots');
  const current = installed ? pins.slots() : new Map<string, number>();
  const res = resolveCgroups(policies);
  const owners = installed && conflictsPossible(res) ? cgroupOwners(pins, current) : new Map<bigint, string>();
  const { keep, conflicts } = cgroupIdConflicts(policies, res, owners);
  const slots = assignSlots(
    keep.map((p) => p.name),
    current,
  );
  const unresolved = keep.flatMap((p): Unresolved[] => {
    const r = res.get(p.name)!;
    return [
      ...(r.cgroup === null ? [{ policy: p.name, field: 'spec.cgroup' as const, cgroup: p.cgroup }] : []),
      ...p.bypass.cgroups
        .filter((_, i) => r.bypass[i] === null)
        .map((b) => ({ policy: p.name, field: 'spec.proxy.bypass.cgroups' as const, cgroup: b })),
    ];
  });
  const g = resolveGates(gates);
  return {
    entries: toEntries(keep, slots, res, caps, gateIds(g)),
    gates: g,
    slots,
    slotsFrom: installed ? 'pins' : 'new',
    keep,
    unresolved,
    rejected: rejections(conflicts),
  };
}
