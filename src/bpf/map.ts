// map.ts — a BPF map by file descriptor, typed by codecs: get/set/delete/entries/setMany,
// pin, unpin and reopen; per-CPU maps return one value per possible CPU. Many entries at once go through
// the batch commands where the map type has them (map-batch.ts).
import { unlinkSync } from 'node:fs';
import { lib, c, NULL } from '../sys/libbpf.js';
import { BpfError } from './errors.js';
import type { Codec } from './codec.js';
import { MapType } from './fd.js';
import { mapInfo, nPossibleCpus, type MapInfo } from './map-info.js';
import { countBatches, deleteBatches, lookupBatches, updateBatches } from './map-batch.js';

export { mapInfo, nPossibleCpus, type MapInfo } from './map-info.js';
export { batchRefused } from './map-batch.js';

export const BPF_ANY = 0;
export const BPF_NOEXIST = 1;
export const BPF_EXIST = 2;

const ENOENT = 2;

export class BpfMap<K, V> {
  private closed = false;
  private readonly keyBuf: Buffer;
  private readonly valBuf: Buffer;
  readonly info: MapInfo;
  constructor(
    readonly name: string,
    readonly fd: number,
    readonly key: Codec<K>,
    readonly value: Codec<V>,
    /** Whether close() closes fd (an fd from an object belongs to the object). */
    private readonly ownsFd: boolean,
  ) {
    this.info = mapInfo(fd, `map ${name}`);
    if (this.info.keySize !== key.size || this.info.valueSize !== value.size) {
      if (ownsFd) c.close(fd);
      throw new Error(
        `map ${name}: kernel sizes key ${this.info.keySize}/value ${this.info.valueSize}, codec ${key.size}/${value.size}`,
      );
    }
    this.keyBuf = Buffer.alloc(key.size);
    this.valBuf = Buffer.alloc(this.rawValueSize);
  }

  get perCpu(): boolean {
    const t = this.info.type;
    return t === MapType.PERCPU_HASH || t === MapType.PERCPU_ARRAY || t === MapType.LRU_PERCPU_HASH;
  }
  private get rawValueSize(): number {
    return this.perCpu ? Math.ceil(this.value.size / 8) * 8 * nPossibleCpus() : this.value.size;
  }

  /** Opens a pinned map. */
  static open<K, V>(path: string, name: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    const fd: number = lib.bpf_obj_get(path);
    if (fd < 0) throw new BpfError(`open pinned map ${path}`, 'bpf_obj_get', fd);
    return new BpfMap(name, fd, key, value, true);
  }

  get(k: K): V | undefined {
    const r: number = lib.bpf_map_lookup_elem(this.fd, this.key.encode(k, this.keyBuf), this.valBuf);
    if (r === -ENOENT) return undefined;
    if (r < 0) throw new BpfError(`look up in ${this.name}`, 'bpf_map_lookup_elem', r);
    return this.value.decode(this.valBuf);
  }

  /** Per-CPU maps: the value of every possible CPU. */
  getPerCpu(k: K): V[] | undefined {
    const r: number = lib.bpf_map_lookup_elem(this.fd, this.key.encode(k, this.keyBuf), this.valBuf);
    if (r === -ENOENT) return undefined;
    if (r < 0) throw new BpfError(`look up in ${this.name}`, 'bpf_map_lookup_elem', r);
    const stride = Math.ceil(this.value.size / 8) * 8;
    return Array.from({ length: nPossibleCpus() }, (_, i) => this.value.decode(this.valBuf, i * stride));
  }

  set(k: K, v: V, flags = BPF_ANY): void {
    const val = this.perCpu ? Buffer.alloc(this.rawValueSize) : Buffer.alloc(this.value.size);
    if (this.perCpu) {
      const stride = Math.ceil(this.value.size / 8) * 8;
      for (let i = 0; i < nPossibleCpus(); i++) this.value.encode(v, val, i * stride);
    } else this.value.encode(v, val);
    const r: number = lib.bpf_map_update_elem(this.fd, this.key.encode(k, Buffer.alloc(this.key.size)), val, flags);
    if (r < 0) throw new BpfError(`update ${this.name}`, 'bpf_map_update_elem', r);
  }

  delete(k: K): boolean {
    const r: number = lib.bpf_map_delete_elem(this.fd, this.key.encode(k, this.keyBuf));
    if (r === -ENOENT) return false;
    if (r < 0) throw new BpfError(`delete from ${this.name}`, 'bpf_map_delete_elem', r);
    return true;
  }

  /** Every key (raw), collected first so deleting while iterating is safe. */
  rawKeys(): Buffer[] {
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    for (;;) {
      const next = Buffer.alloc(this.key.size);
      const r: number = lib.bpf_map_get_next_key(this.fd, prev ?? NULL, next);
      if (r === -ENOENT) return keys;
      if (r < 0) throw new BpfError(`iterate ${this.name}`, 'bpf_map_get_next_key', r);
      keys.push(next);
      prev = next;
      if (keys.length > 50_000_000) throw new Error(`iterate ${this.name}: does not end`);
    }
  }

  keys(): K[] {
    return this.rawKeys().map((k) => this.key.decode(k));
  }

  /** Every entry; for an array map every index is an entry. */
  entries(): [K, V][] {
    const out: [K, V][] = [];
    for (const raw of this.rawKeys()) {
      const r: number = lib.bpf_map_lookup_elem(this.fd, raw, this.valBuf);
      if (r === -ENOENT) continue; // deleted meanwhile
      if (r < 0) throw new BpfError(`look up in ${this.name}`, 'bpf_map_lookup_elem', r);
      out.push([this.key.decode(raw), this.value.decode(this.valBuf)]);
    }
    return out;
  }

  /** Writes many entries: BPF_MAP_UPDATE_BATCH where the map type has it, else one by one. */
  setMany(entries: Iterable<[K, V]>): number {
    const list = [...entries];
    if (list.length === 0) return 0;
    if (this.perCpu) {
      for (const [k, v] of list) this.set(k, v);
      return list.length;
    }
    return this.setManyRaw(
      list.map(([k, v]) => [
        this.key.encode(k, Buffer.alloc(this.key.size)),
        this.value.encode(v, Buffer.alloc(this.value.size)),
      ]),
    );
  }

  /** Writes raw entries (key and value already encoded), in order, in as few syscalls as it can. */
  setManyRaw(list: [Buffer, Buffer][]): number {
    if (list.length === 0) return 0;
    let i = updateBatches(this, list);
    for (; i < list.length; i++) this.setRaw(list[i]![0], list[i]![1]);
    return list.length;
  }

  /** Deletes raw keys, in order, in as few syscalls as it can; keys that are not there are passed
   * over (like deleteRaw). Returns how many were deleted. */
  deleteManyRaw(keys: Buffer[]): number {
    let { done: i, deleted } = deleteBatches(this, keys);
    for (; i < keys.length; i++) if (this.deleteRaw(keys[i]!)) deleted++;
    return deleted;
  }

  /** Every entry as raw bytes (for diffing desired state against the kernel's): BPF_MAP_LOOKUP_BATCH
   * where the map type has it (a few syscalls for the whole map), else key by key. */
  rawEntries(): [Buffer, Buffer][] {
    const out: [Buffer, Buffer][] = [];
    const batched = lookupBatches(this, (keys, vals, n) => {
      for (let j = 0; j < n; j++) {
        out.push([
          Buffer.from(keys.subarray(j * this.key.size, (j + 1) * this.key.size)),
          Buffer.from(vals.subarray(j * this.value.size, (j + 1) * this.value.size)),
        ]);
      }
      return out.length;
    });
    return batched ? out : this.rawEntriesOneByOne();
  }

  /** Whether the map holds no entry now (one syscall, whatever its size). */
  empty(): boolean {
    const r: number = lib.bpf_map_get_next_key(this.fd, NULL, Buffer.alloc(this.key.size));
    if (r === -ENOENT) return true;
    if (r < 0) throw new BpfError(`iterate ${this.name}`, 'bpf_map_get_next_key', r);
    return false;
  }

  /** How many entries the map holds now (for fill levels, at every scrape): counted batch by batch where
   * the map type has BPF_MAP_LOOKUP_BATCH, without keeping them; else key by key. */
  count(): number {
    return countBatches(this) ?? this.countDistinct();
  }

  /** A hash map's key-by-key walk restarts from its first bucket when the key it stands on is deleted
   * meanwhile, so under churn it repeats keys (and may not end): distinct keys are counted, and the walk
   * stops after twice the map's capacity in steps (maps without batch lookups: sockhash). */
  private countDistinct(): number {
    const seen = new Set<string>();
    let prev: Buffer | null = null;
    for (let steps = 0; steps <= 2 * this.info.maxEntries; steps++) {
      const next = Buffer.alloc(this.key.size);
      const r: number = lib.bpf_map_get_next_key(this.fd, prev ?? NULL, next);
      if (r === -ENOENT) break;
      if (r < 0) throw new BpfError(`iterate ${this.name}`, 'bpf_map_get_next_key', r);
      seen.add(next.toString('hex'));
      prev = next;
    }
    return seen.size;
  }

  private rawEntriesOneByOne(): [Buffer, Buffer][] {
    const out: [Buffer, Buffer][] = [];
    for (const raw of this.rawKeys()) {
      const val = Buffer.alloc(this.rawValueSize);
      const r: number = lib.bpf_map_lookup_elem(this.fd, raw, val);
      if (r === -ENOENT) continue;
      if (r < 0) throw new BpfError(`look up in ${this.name}`, 'bpf_map_lookup_elem', r);
      out.push([raw, val]);
    }
    return out;
  }

  setRaw(k: Buffer, v: Buffer): void {
    const r: number = lib.bpf_map_update_elem(this.fd, k, v, BPF_ANY);
    if (r < 0) throw new BpfError(`update ${this.name}`, 'bpf_map_update_elem', r);
  }

  deleteRaw(k: Buffer): boolean {
    const r: number = lib.bpf_map_delete_elem(this.fd, k);
    if (r === -ENOENT) return false;
    if (r < 0) throw new BpfError(`delete from ${this.name}`, 'bpf_map_delete_elem', r);
    return true;
  }

  pin(path: string): void {
    const r: number = lib.bpf_obj_pin(this.fd, path);
    if (r < 0) throw new BpfError(`pin map ${this.name} at ${path}`, 'bpf_obj_pin', r);
  }

  /**
   * Removes the pin at `path`, which must be this map (another map's pin is refused, not removed).
   * The map itself lives on while an fd or a program holds it; this object stays usable.
   */
  unpin(path: string): void {
    const what = `unpin map ${this.name} at ${path}`;
    const fd: number = lib.bpf_obj_get(path);
    if (fd < 0) throw new BpfError(what, 'bpf_obj_get', fd);
    let id: number;
    try {
      id = mapInfo(fd, path).id;
    } finally {
      c.close(fd);
    }
    if (id !== this.info.id)
      throw new Error(`${what}: the pin is map id ${id}, not this map (id ${this.info.id}); left in place`);
    try {
      unlinkSync(path);
    } catch (e) {
      throw new BpfError(what, 'unlink', (e as NodeJS.ErrnoException).errno ?? -1);
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ownsFd) c.close(this.fd);
  }
}
