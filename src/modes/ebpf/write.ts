// write.ts — makes the policy maps hold exactly the desired entries, writing and deleting only what
// differs, in an order that never shows a connect hook a half-written policy. Every write is journalled:
// when one fails, everything this pass wrote is put back and the changes are made again one policy at a
// time, so a policy that cannot be written (a full map, a fault) is rolled back alone and the others go on.
import { createHash } from 'node:crypto';
import type { BpfMap } from '../../bpf/map.js';
import { MapType } from '../../bpf/fd.js';
import { BpfError } from '../../bpf/errors.js';
import { POLICY_MAPS, type MapName } from '../../bpf/abi.js';
import type { MapEntries } from '../../policy/entries.js';
import { faultAt } from '../../util/faults.js';
import type { AnyMapName, Pins } from './pins.js';

/** Policy details before the cgroup entries that point at them; removals in the reverse order. */
const ORDER: MapName[] = ['mr_slots', 'mr_policies', 'mr_owners', 'mr_proxies', 'mr_ports', 'mr_cidrs', 'mr_cgroups'];

/** The slot an entry belongs to (every policy map carries it, in the key or, for mr_cgroups, the value). */
const SLOT: Partial<Record<MapName, (k: unknown, v: unknown) => number>> = {
  mr_slots: (k) => k as number,
  mr_policies: (k) => k as number,
  mr_owners: (k) => (k as { slot: number }).slot,
  mr_proxies: (k) => (k as { slot: number }).slot,
  mr_ports: (k) => (k as { slot: number }).slot,
  mr_cidrs: (k) => (k as { slot: number }).slot,
  mr_cgroups: (_k, v) => (v as { slot: number }).slot,
};

interface Op {
  map: MapName;
  slot: number;
  key: Buffer;
  /** The value to write; undefined: delete. */
  value?: Buffer;
  /** What the key held before (undefined: absent). */
  prev?: Buffer;
}

export interface WriteReport {
  writes: number;
  deletes: number;
  /** Per map: entries written and deleted, and a fingerprint of the desired entries (to tell, next pass,
   * whether a difference came from a change of ours or from outside). */
  maps: Partial<Record<MapName, { written: number; deleted: number; fingerprint: string }>>;
  /** Slots whose changes could not be written, rolled back, with why. */
  failed: Map<number, string>;
  /** Whether the batch failed and the changes were then made one policy at a time. */
  perPolicy: boolean;
  /** Why the batch failed. */
  batchError?: string;
  /** Maps whose stale entries had to go before the new ones for want of room. */
  deletedFirst: MapName[];
}

export interface WriteOptions {
  /** Policy name per slot (fault injection, messages). */
  names?: ReadonlyMap<number, string>;
  /** Each map's capacity: stale entries go first where the new ones would not fit beside them. */
  capacities?: Partial<Record<MapName, number>>;
}

/**
 * Reads and writes go by map in batches (BPF_MAP_*_BATCH, see BpfMap): per entry through the FFI they
 * cost ~50 µs each, which made a 10,000-entry policy take a second to apply, and as long to find in sync.
 */
export function writeEntries(pins: Pins, entries: MapEntries, o: WriteOptions = {}): WriteReport {
  const rep: WriteReport = { writes: 0, deletes: 0, maps: {}, failed: new Map(), perPolicy: false, deletedFirst: [] };
  pins.withMaps(POLICY_MAPS, (maps) => {
    const ops: Op[] = [];
    const size = new Map<MapName, number>();
    const desiredSlots = new Set<number>();
    for (const name of ORDER) {
      const map = maps.get(name)!;
      // Encoded into one buffer per map, keys as latin1 strings (one char per byte): a map of 100,000s of
      // entries costs two allocations, not two per entry.
      const list = entries[name as keyof MapEntries] as [unknown, unknown][];
      const ks = map.key.size;
      const vs = map.value.size;
      const kbuf = Buffer.alloc(ks * list.length);
      const vbuf = Buffer.alloc(vs * list.length);
      const want = new Map<string, number>();
      list.forEach(([k, v], i) => {
        map.key.encode(k, kbuf, i * ks);
        map.value.encode(v, vbuf, i * vs);
        want.set(kbuf.toString('latin1', i * ks, (i + 1) * ks), i);
        desiredSlots.add(SLOT[name]!(k, v));
      });
      const hash = createHash('sha1').update(kbuf).update(vbuf);
      const isArray = map.info.type === MapType.ARRAY;
      const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('latin1'), v]));
      size.set(name, [...have.values()].filter((v) => !(isArray && v.every((b) => b === 0))).length);
      const slotOf = (kb: Buffer, vb: Buffer) => SLOT[name]!(map.key.decode(kb), map.value.decode(vb));
      let written = 0;
      let deleted = 0;
      for (const [key, i] of want) {
        const vb = vbuf.subarray(i * vs, (i + 1) * vs);
        const cur = have.get(key);
        if (cur && cur.equals(vb)) continue;
        const kb = kbuf.subarray(i * ks, (i + 1) * ks);
        ops.push({ map: name, slot: slotOf(kb, vb), key: kb, value: vb, ...(cur ? { prev: cur } : {}) });
        written++;
      }
      for (const [key, v] of have) {
        if (want.has(key) || (isArray && v.every((b) => b === 0))) continue;
        const kb = Buffer.from(key, 'latin1');
        ops.push({ map: name, slot: slotOf(kb, v), key: kb, prev: v });
        deleted++;
      }
      rep.maps[name] = { written, deleted, fingerprint: hash.digest('hex') };
    }
    if (ops.length === 0) return;
    const w = new Writer(maps, size, o, rep);
    try {
      w.run(sequence(ops, desiredSlots));
    } catch (e) {
      w.undo(e as Error);
      rep.batchError = (e as Error).message;
      // One policy at a time: removed policies first (they free room), then the others by slot.
      rep.perPolicy = true;
      const bySlot = new Map<number, Op[]>();
      for (const op of ops) {
        const list = bySlot.get(op.slot);
        if (list) list.push(op);
        else bySlot.set(op.slot, [op]);
      }
      const order = [...bySlot.keys()].sort(
        (a, b) => Number(desiredSlots.has(a)) - Number(desiredSlots.has(b)) || a - b,
      );
      for (const slot of order) {
        try {
          w.run(sequence(bySlot.get(slot)!, desiredSlots));
        } catch (err) {
          w.undo(err as Error);
          rep.failed.set(slot, (err as Error).message);
        }
      }
    }
    rep.writes = w.writes;
    rep.deletes = w.deletes;
  });
  return rep;
}

/**
 * The order of a set of changes: whole policies that go away first (their cgroup entries before their
 * details), then the writes map by map (details before the cgroup entries that point at them), then what
 * is stale of the policies that stay (again cgroup entries first). Each group is one step per map.
 */
function sequence(ops: Op[], desiredSlots: ReadonlySet<number>): Step[] {
  const steps: Step[] = [];
  const pick = (kind: 'gone' | 'set' | 'stale', map: MapName) =>
    ops.filter(
      (op) =>
        op.map === map &&
        (kind === 'set'
          ? op.value !== undefined
          : op.value === undefined && (kind === 'gone') === !desiredSlots.has(op.slot)),
    );
  for (const map of [...ORDER].reverse()) steps.push({ kind: 'gone', map, ops: pick('gone', map) });
  for (const map of ORDER) steps.push({ kind: 'set', map, ops: pick('set', map) });
  for (const map of [...ORDER].reverse()) steps.push({ kind: 'stale', map, ops: pick('stale', map) });
  return steps.filter((s) => s.ops.length > 0);
}

type Step = { kind: 'gone' | 'set' | 'stale'; map: MapName; ops: Op[] };

/** Runs steps against the maps, journalling every change so that undo() puts the maps back. */
class Writer {
  /** Changes made by runs that completed. */
  private done: Op[] = [];
  private journal: Op[] = [];
  private sizeAtStart = new Map<MapName, number>();

  constructor(
    private readonly maps: Map<AnyMapName, BpfMap<unknown, unknown>>,
    private readonly size: Map<MapName, number>,
    private readonly o: WriteOptions,
    private readonly rep: WriteReport,
  ) {}

  get writes(): number {
    return this.done.filter((op) => op.value !== undefined).length;
  }
  get deletes(): number {
    return this.done.filter((op) => op.value === undefined).length;
  }

  run(steps: Step[]): void {
    this.journal = [];
    this.sizeAtStart = new Map(this.size);
    const ran = new Set<Op>();
    const todo = (ops: Op[]) => ops.filter((op) => !ran.has(op));
    for (const step of steps) {
      if (step.kind === 'set') {
        // Where the new entries would not fit beside the stale ones, the stale ones of this map go first.
        const cap = this.o.capacities?.[step.map];
        const fresh = step.ops.filter((op) => !op.prev).length;
        const stale = steps.find((s) => s.kind === 'stale' && s.map === step.map);
        if (cap !== undefined && stale && this.size.get(step.map)! + fresh > cap) {
          for (const op of this.delete(step.map, todo(stale.ops))) ran.add(op);
          if (!this.rep.deletedFirst.includes(step.map)) this.rep.deletedFirst.push(step.map);
        }
        for (const op of this.set(step.map, todo(step.ops))) ran.add(op);
      } else for (const op of this.delete(step.map, todo(step.ops))) ran.add(op);
    }
    for (const op of this.journal) this.done.push(op); // (no spread: it can be 100,000s of ops)
    this.journal = [];
  }

  private set(name: MapName, ops: Op[]): Op[] {
    if (ops.length === 0) return ops;
    const map = this.maps.get(name)!;
    for (const op of ops) this.journal.push(op); // before writing: a batch that fails half-way wrote some
    injectedFailure(name, ops, this.o.names, (part) => map.setManyRaw(part));
    map.setManyRaw(ops.map((op) => [op.key, op.value!]));
    this.size.set(name, this.size.get(name)! + ops.filter((op) => !op.prev).length);
    return ops;
  }

  private delete(name: MapName, ops: Op[]): Op[] {
    if (ops.length === 0) return ops;
    const map = this.maps.get(name)!;
    for (const op of ops) this.journal.push(op);
    if (map.info.type === MapType.ARRAY) map.setManyRaw(ops.map((op) => [op.key, Buffer.alloc(map.value.size)]));
    else map.deleteManyRaw(ops.map((op) => op.key));
    this.size.set(name, this.size.get(name)! - ops.length);
    return ops;
  }

  /** Puts back what the failed run changed (in reverse); a failure to do so is a failure of the pass. */
  undo(cause: Error): void {
    const journal = this.journal.reverse();
    this.journal = [];
    try {
      for (const op of journal) {
        const map = this.maps.get(op.map)!;
        if (op.prev) map.setRaw(op.key, op.prev);
        else if (map.info.type === MapType.ARRAY) map.setRaw(op.key, Buffer.alloc(map.value.size));
        else map.deleteRaw(op.key);
      }
    } catch (e) {
      throw new Error(`${cause.message}; putting back what this pass had written failed too: ${(e as Error).message}`, {
        cause,
      });
    }
    for (const [k, v] of this.sizeAtStart) this.size.set(k, v);
  }
}

const ENOSPC = 28;

/**
 * fail-write:MAP:POLICY (faults.ts): writing POLICY's entries to MAP fails after half of them were
 * written, as a full map would make it, so that the rollback has real partial writes to undo.
 */
function injectedFailure(
  name: MapName,
  ops: Op[],
  names: ReadonlyMap<number, string> | undefined,
  write: (part: [Buffer, Buffer][]) => void,
): void {
  if (!names) return;
  const i = ops.findIndex((op) => faultAt('fail-write', `${name}:${names.get(op.slot) ?? ''}`));
  if (i < 0) return;
  const slot = ops[i]!.slot;
  const theirs = ops.flatMap((op, j) => (op.slot === slot ? [j] : []));
  write(ops.slice(0, theirs[Math.floor(theirs.length / 2)]).map((op) => [op.key, op.value!]));
  throw new BpfError(
    `batch update ${name} (injected: MESHREDIR_FAULT=fail-write:${name}:${names.get(slot)})`,
    'bpf_map_update_batch',
    -ENOSPC,
  );
}
