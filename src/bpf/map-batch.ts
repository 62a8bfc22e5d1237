// map-batch.ts — BpfMap's BPF_MAP_*_BATCH commands: update, delete and look up (walk or count) many entries
// in a few syscalls where the map type has them. A kernel that refuses one outright is remembered per map
// type (batchRefused), and the caller goes key by key from where the batches stopped.
import { lib, NULL } from '../sys/libbpf.js';
import { BpfError } from './errors.js';
import { MapType } from './fd.js';
import type { MapInfo } from './map-info.js';

/** What the batch commands need of a map. */
export interface BatchMap {
  readonly name: string;
  readonly fd: number;
  readonly info: MapInfo;
  readonly perCpu: boolean;
  readonly key: { size: number };
  readonly value: { size: number };
}

const ENOENT = 2;
/** Map types whose kernel implementation has the BPF_MAP_*_BATCH commands: hash and array maps have
 * their own; the LPM trie has the kernel's generic ones (get_next_key/lookup/update/delete in a loop
 * inside one syscall, since 5.6). A kernel that refuses them anyway is noticed per map (see below). */
const BATCH_TYPES = new Set<number>([
  MapType.HASH,
  MapType.ARRAY,
  MapType.PERCPU_HASH,
  MapType.PERCPU_ARRAY,
  MapType.LRU_HASH,
  MapType.LPM_TRIE,
]);
const EINVAL = 22;
const ENOSPC = 28;
const EOPNOTSUPP = 95;
const ENOTSUPP = 524; // the kernel's "this map type has no such batch operation"
/** Why a batch command was refused outright (nothing done), per map type: later calls go one by one. */
export const batchRefused = new Map<number, string>();
const refusal = (r: number) =>
  r === -ENOTSUPP ? 'ENOTSUPP' : r === -EOPNOTSUPP ? 'EOPNOTSUPP' : r === -EINVAL ? 'EINVAL' : null;
/** Entries per update or delete batch. */
const CHUNK = 8192;

function batchable(m: BatchMap): boolean {
  return BATCH_TYPES.has(m.info.type) && !m.perCpu && !batchRefused.has(m.info.type);
}

/** The kernel refused a batch command before doing anything: remember why, go one by one. */
function refused(m: BatchMap, r: number, written: number, cmd: string): boolean {
  const why = refusal(r);
  if (!why || written !== 0) return false;
  batchRefused.set(m.info.type, `${cmd} on ${m.name}: ${why}`);
  return true;
}

/** Writes raw entries in order with BPF_MAP_UPDATE_BATCH; returns how many it wrote (from the start of the
 * list): those after it the caller writes one by one. */
export function updateBatches(m: BatchMap, list: [Buffer, Buffer][]): number {
  if (!batchable(m)) return 0;
  let i = 0;
  for (; i < list.length; i += CHUNK) {
    const part = list.slice(i, i + CHUNK);
    const keys = Buffer.concat(part.map(([k]) => k));
    const vals = Buffer.concat(part.map(([, v]) => v));
    const count = Buffer.alloc(4);
    count.writeUInt32LE(part.length);
    const r: number = lib.bpf_map_update_batch(m.fd, keys, vals, count, NULL);
    if (r < 0 && refused(m, r, count.readUInt32LE(0), 'BPF_MAP_UPDATE_BATCH')) break;
    if (r < 0)
      throw new BpfError(
        `batch update ${m.name} (${count.readUInt32LE(0)} of ${part.length} written)`,
        'bpf_map_update_batch',
        r,
      );
  }
  return Math.min(i, list.length);
}

/** Deletes raw keys in order with BPF_MAP_DELETE_BATCH, passing over keys that are not there; returns how
 * far it got in the list (the caller deletes the rest one by one) and how many it deleted. */
export function deleteBatches(m: BatchMap, keys: Buffer[]): { done: number; deleted: number } {
  let i = 0;
  let deleted = 0;
  if (!batchable(m)) return { done: 0, deleted: 0 };
  while (i < keys.length) {
    const part = keys.slice(i, i + CHUNK);
    const count = Buffer.alloc(4);
    count.writeUInt32LE(part.length);
    const r: number = lib.bpf_map_delete_batch(m.fd, Buffer.concat(part), count, NULL);
    const n = count.readUInt32LE(0);
    if (r < 0 && refused(m, r, n, 'BPF_MAP_DELETE_BATCH')) break;
    if (r < 0 && r !== -ENOENT)
      throw new BpfError(`batch delete from ${m.name} (${n} of ${part.length} deleted)`, 'bpf_map_delete_batch', r);
    deleted += n;
    i += r === -ENOENT ? n + 1 : part.length; // the kernel stops at a missing key: go on after it
  }
  return { done: i, deleted };
}

/** Walks the map with BPF_MAP_LOOKUP_BATCH, handing each batch to `take` (which returns the entries
 * taken so far); false when the map type has no batch lookup (nothing was taken). */
export function lookupBatches(m: BatchMap, take: (keys: Buffer, vals: Buffer, n: number) => number): boolean {
  if (!batchable(m)) return false;
  let chunk = 4096;
  // The batch cursor is opaque: 4 bytes for hash maps (a bucket), a key for the generic
  // implementation. A buffer of the larger size serves both.
  let inBatch: Buffer | null = null;
  const outBatch = Buffer.alloc(Math.max(8, m.key.size));
  for (;;) {
    const keys = Buffer.alloc(m.key.size * chunk);
    const vals = Buffer.alloc(m.value.size * chunk);
    const count = Buffer.alloc(4);
    count.writeUInt32LE(chunk);
    const r: number = lib.bpf_map_lookup_batch(m.fd, inBatch ?? NULL, outBatch, keys, vals, count, NULL);
    const n = count.readUInt32LE(0);
    if (r < 0 && r !== -ENOENT) {
      if (r === -ENOSPC && n === 0 && chunk < 1 << 20) {
        chunk *= 4; // a hash bucket holds more entries than the chunk: ask for more at once
        continue;
      }
      if (inBatch === null && refused(m, r, n, 'BPF_MAP_LOOKUP_BATCH')) return false;
      throw new BpfError(`batch look up in ${m.name}`, 'bpf_map_lookup_batch', r);
    }
    const taken = take(keys, vals, n);
    if (r === -ENOENT) return true; // the end of the map
    inBatch = Buffer.from(outBatch);
    if (taken > 50_000_000) throw new Error(`iterate ${m.name}: does not end`);
  }
}

/** How many entries the map holds, counted batch by batch without keeping them; null when the map type
 * has no batch lookup. */
export function countBatches(m: BatchMap): number | null {
  let total = 0;
  return lookupBatches(m, (_k, _v, n) => (total += n)) ? total : null;
}
