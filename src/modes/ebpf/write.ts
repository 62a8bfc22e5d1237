// write.ts — makes the policy maps hold exactly the desired entries, writing and deleting only what
// differs, in an order that never shows a connect hook a half-written policy.
import type { BpfMap } from '../../bpf/map.js';
import { MapType } from '../../bpf/fd.js';
import { POLICY_MAPS, type MapName } from '../../bpf/abi.js';
import type { MapEntries } from '../../policy/entries.js';
import type { Pins } from './pins.js';

/** Policy details before the cgroup entries that point at them; removals in the reverse order. */
const ORDER: MapName[] = ['mr_slots', 'mr_policies', 'mr_owners', 'mr_proxies', 'mr_ports', 'mr_cidrs', 'mr_cgroups'];

/**
 * Reads and writes go by map in batches (BPF_MAP_*_BATCH, see BpfMap): per entry through the FFI they
 * cost ~50 µs each, which made a 10,000-entry policy take a second to apply, and as long to find in sync.
 */
export function writeEntries(pins: Pins, entries: MapEntries): { writes: number; deletes: number } {
  let writes = 0;
  let deletes = 0;
  pins.withMaps(POLICY_MAPS, (maps) => {
    const stale: [BpfMap<unknown, unknown>, Buffer[]][] = [];
    for (const name of ORDER) {
      const map = maps.get(name)!;
      const want = new Map<string, [Buffer, Buffer]>();
      for (const [k, v] of entries[name as keyof MapEntries] as [unknown, unknown][]) {
        const kb = map.key.encode(k, Buffer.alloc(map.key.size));
        want.set(kb.toString('hex'), [kb, map.value.encode(v, Buffer.alloc(map.value.size))]);
      }
      const isArray = map.info.type === MapType.ARRAY;
      const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('hex'), v]));
      const changed: [Buffer, Buffer][] = [];
      for (const [hex, [kb, vb]] of want) {
        const cur = have.get(hex);
        if (!cur || !cur.equals(vb)) changed.push([kb, vb]);
      }
      writes += map.setManyRaw(changed);
      const gone: Buffer[] = [];
      for (const [hex, v] of have) {
        if (want.has(hex) || (isArray && v.every((b) => b === 0))) continue;
        gone.push(Buffer.from(hex, 'hex'));
      }
      if (gone.length) stale.push([map, gone]);
    }
    // Removals: the cgroup entries first (last in ORDER), so no lookup sees a half-removed policy.
    for (const [map, keys] of stale.reverse()) {
      if (map.info.type === MapType.ARRAY) map.setManyRaw(keys.map((k) => [k, Buffer.alloc(map.value.size)]));
      else map.deleteManyRaw(keys);
      deletes += keys.length;
    }
  });
  return { writes, deletes };
}
