// inbound-entries.ts — the inbound maps written by difference: the policy entries (ports and sources before
// the addresses that point at them; removed in reverse) and mr_in_watch (what the kernel tells the agent of).
import type { BpfMap } from '../../bpf/map.js';
import type { AnyMapName } from './pins.js';
import type { InboundPlan, InboundTarget } from './inbound-plan.js';
import { watchEntries } from './inbound-watch.js';

const ORDER: AnyMapName[] = ['mr_in_ports', 'mr_in_srcs', 'mr_in_addrs'];
type Maps = Map<AnyMapName, BpfMap<unknown, unknown>>;

/** The entries of `map` to write (new or changed) and the keys to delete, for the wanted list. */
function difference(map: BpfMap<unknown, unknown>, list: [unknown, unknown][]) {
  const want = new Map<string, [Buffer, Buffer]>();
  for (const [k, v] of list) {
    const kb = map.key.encode(k, Buffer.alloc(map.key.size));
    want.set(kb.toString('hex'), [kb, map.value.encode(v, Buffer.alloc(map.value.size))]);
  }
  const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('hex'), v]));
  return {
    changed: [...want.values()].filter(([kb, vb]) => !have.get(kb.toString('hex'))?.equals(vb)),
    gone: [...have.keys()].filter((h) => !want.has(h)).map((h) => Buffer.from(h, 'hex')),
  };
}

/** The policy entries of the targets whose link is in place (no link: never looked up anyway). */
export function writeEntries(
  maps: Maps,
  plan: InboundPlan,
  targets: Map<number, InboundTarget>,
): { writes: number; deletes: number } {
  let writes = 0;
  let deletes = 0;
  const stale: [BpfMap<unknown, unknown>, Buffer[]][] = [];
  for (const name of ORDER) {
    const map = maps.get(name)!;
    const list = plan.entries[name as keyof typeof plan.entries] as [{ slot?: number }, unknown][];
    const kept = list.filter(([k, v]) => targets.has(name === 'mr_in_addrs' ? (v as { slot: number }).slot : k.slot!));
    const d = difference(map, kept);
    writes += map.setManyRaw(d.changed);
    if (d.gone.length) stale.push([map, d.gone]);
  }
  for (const [map, keys] of stale.reverse()) deletes += map.deleteManyRaw(keys);
  return { writes, deletes };
}

/** mr_in_watch for the targets: written before their listeners are taken, so no change after goes untold. */
export function writeWatch(
  maps: Maps,
  targets: Iterable<InboundTarget>,
  cookies: Map<number, bigint>,
): { writes: number; deletes: number } {
  const map = maps.get('mr_in_watch')!;
  const d = difference(map, watchEntries(targets, cookies));
  return { writes: map.setManyRaw(d.changed), deletes: map.deleteManyRaw(d.gone) };
}
