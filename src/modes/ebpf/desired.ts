// desired.ts — the eBPF mode's desired state for a policy set (and the gates: guard and pass cgroups):
// cgroups resolved to ids, slots kept from the pins, id conflicts settled in favour of what is applied,
// only the policies that fit in the maps (capacities read from the pins, the gates' entries set aside),
// and the map entries. One function, used by the dry run and by apply.
import { assignSlots, toEntries, cgroupIdConflicts, idConflictMessage } from '../../policy/entries.js';
import type { MapEntries, Resolution, IdConflict, Gates, GateIds } from '../../policy/entries.js';
import type { Policy } from '../../policy/schema.js';
import { admit } from '../../policy/capacity.js';
import { MAP_CAPACITY, type Capacities, type PolicyMapName } from '../../policy/limits.js';
import { CgKind } from '../../bpf/abi.js';
import { BpfObject } from '../../bpf/object.js';
import { mapInfo } from '../../bpf/map.js';
import { tryOpenPinned, withFd } from '../../bpf/fd.js';
import { cgroupId, cgroupDir, requireCgroup2 } from '../../util/host.js';
import type { Pins } from './pins.js';
import { netnsInode } from './records.js';

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
  /** The policies that take part, in the version written (an id conflict lost, or no room: not here). */
  keep: Policy[];
  /** Policies whose new version does not fit in the maps: the version applied before stays in `keep`. */
  failed: { name: string; file: string; message: string }[];
  /** The maps' capacities the admission used. */
  capacities: Capacities;
  /** Cgroups (policy or bypass) that do not exist (yet): no entries for them until they do. */
  unresolved: Unresolved[];
  /** Policies left out: their cgroup is another policy's (by id), or they do not fit in the maps. */
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

/** The gates as the dry run shows them (ids as strings). */
export const gatesJson = (g: Desired['gates']) => {
  const j = (xs: GateRes[]) => xs.map((x) => ({ cgroup: x.cgroup, id: x.id === null ? null : String(x.id) }));
  return { guard: j(g.guard), pass: j(g.pass) };
};

const gateIds = (g: Desired['gates']): GateIds => {
  const ids = (xs: GateRes[]) => xs.map((x) => x.id).filter((x): x is bigint => x !== null);
  return { guard: ids(g.guard), pass: ids(g.pass) };
};

/** Each policy map's capacity: from its pin when pinned, else from the object that will create it. */
export function capacities(pins: Pins, object?: string): Capacities {
  const out: Capacities = { ...MAP_CAPACITY };
  let obj: BpfObject | undefined;
  try {
    for (const name of Object.keys(MAP_CAPACITY) as PolicyMapName[]) {
      const fd = tryOpenPinned(pins.mapPin(name));
      if (fd !== null) {
        out[name] = withFd(fd, (f) => mapInfo(f, name).maxEntries);
        continue;
      }
      if (!object) continue;
      obj ??= BpfObject.open(object);
      out[name] = obj.mapSpec(name).maxEntries;
    }
  } finally {
    obj?.close();
  }
  return out;
}

/** Each policy's cgroup and bypass cgroups as ids (null: the directory does not exist). */
export function resolveCgroups(policies: Policy[]): Map<string, Resolution> {
  const mount = requireCgroup2();
  const id = (p: string) => cgroupId(cgroupDir(p, mount));
  return new Map(
    policies.map((p) => [
      p.name,
      {
        cgroup: id(p.cgroup),
        bypass: p.bypass.cgroups.map(id),
        ...(p.netns ? { netns: netnsInode(p.netns) ?? null } : {}),
      },
    ]),
  );
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

/** Options of the desired state beyond the policies. */
export interface DesiredOptions {
  /** Whether `accelerate` can take effect (the sk_msg link is attached and bounds a slow reader). */
  fastPath: boolean;
  /** The maps' capacities (see capacities()). */
  capacities: Capacities;
  /** The version of each policy applied last by this process (kept when a new version does not fit). */
  previous?: ReadonlyMap<string, Policy>;
  /** Guard and pass cgroups (the Kubernetes source's): entries of their own in mr_cgroups. */
  gates?: Gates;
  /** Each policy's budget of handshakes in flight (default: defaultPendingBudget()). */
  pendingMax?: number;
}

/** The desired state of the eBPF maps. */
export function desiredState(pins: Pins, policies: Policy[], o: DesiredOptions): Desired {
  const installed = pins.has('mr_slots');
  const current = installed ? pins.slots() : new Map<string, number>();
  const res = resolveCgroups(policies);
  const owners = installed && conflictsPossible(res) ? cgroupOwners(pins, current) : new Map<bigint, string>();
  const { keep: unique, conflicts } = cgroupIdConflicts(policies, res, owners);
  // The gates' entries come first in mr_cgroups: policies are admitted into the room they leave.
  const g = resolveGates(o.gates);
  const gIds = gateIds(g);
  const gateEntries = new Set([...gIds.guard, ...gIds.pass]).size;
  const room = { ...o.capacities, mr_cgroups: Math.max(0, o.capacities.mr_cgroups - gateEntries) };
  // Room in the maps: what is applied first, as applied; then new versions and newcomers while they fit.
  const input = new Map(policies.map((p) => [p.name, p]));
  const own = (p: Policy) => (input.get(p.name) === p ? res.get(p.name) : resolveCgroups([p]).get(p.name));
  const slotsHeld = Math.min(o.capacities.mr_slots, o.capacities.mr_policies) - 1; // slot 0: no policy
  const adm = admit(
    unique.map((p) => {
      const previous = o.previous?.get(p.name);
      return { policy: p, incumbent: current.has(p.name), ...(previous ? { previous } : {}) };
    }),
    own,
    room,
    slotsHeld,
  );
  const keep = adm.admitted;
  const resKeep = new Map(keep.map((p) => [p.name, own(p)!]));
  const slots = assignSlots(
    keep.map((p) => p.name),
    current,
  );
  const unresolved = keep.flatMap((p): Unresolved[] => {
    const r = resKeep.get(p.name)!;
    return [
      ...(r.cgroup === null ? [{ policy: p.name, field: 'spec.cgroup' as const, cgroup: p.cgroup }] : []),
      ...p.bypass.cgroups
        .filter((_, i) => r.bypass[i] === null)
        .map((b) => ({ policy: p.name, field: 'spec.proxy.bypass.cgroups' as const, cgroup: b })),
    ];
  });
  const record = (x: { policy: Policy; message: string }) => ({
    name: x.policy.name,
    file: x.policy.file,
    message: x.message,
  });
  return {
    entries: toEntries(
      keep,
      slots,
      resKeep,
      { fastPath: o.fastPath, ...(o.pendingMax ? { pendingMax: o.pendingMax } : {}) },
      gIds,
    ),
    gates: g,
    slots,
    slotsFrom: installed ? 'pins' : 'new',
    keep,
    unresolved,
    failed: adm.failed.map(record),
    capacities: o.capacities,
    rejected: [...rejections(conflicts), ...adm.rejected.map(record)],
  };
}
