// object.ts — a BPF object file: open, configure maps (size, reuse of pinned maps), load, find
// programs and maps, close (safe twice; releases everything it owns).
import { lib, isNull, errno, logMark, logSince, holdingProfilerSignal, type Ptr } from '../sys/libbpf.js';
import { BpfError } from './errors.js';
import { BpfMap, mapInfo } from './map.js';
import { checkEnums, checkStruct, type AbiEnums } from './mirror.js';
import { ABI_ENUMS } from './abi.js';
import type { Codec, StructCodec } from './codec.js';

export interface Program {
  name: string;
  ptr: Ptr;
  fd: number;
}

export class BpfObject {
  private ptr: Ptr | null;
  private loaded = false;
  private constructor(
    ptr: Ptr,
    readonly path: string,
  ) {
    this.ptr = ptr;
  }

  static open(path: string): BpfObject {
    const mark = logMark();
    const p: Ptr = lib.bpf_object__open_file(path, null);
    if (isNull(p)) throw new BpfError(`open BPF object ${path}`, 'bpf_object__open_file', errno(), logSince(mark));
    return new BpfObject(p, path);
  }

  private get handle(): Ptr {
    if (!this.ptr) throw new Error(`BPF object ${this.path}: already closed`);
    return this.ptr;
  }

  private mapPtr(name: string): Ptr {
    const m: Ptr = lib.bpf_object__find_map_by_name(this.handle, name);
    if (isNull(m)) throw new Error(`BPF object ${this.path}: no map ${name}`);
    return m;
  }

  mapNames(): string[] {
    const names: string[] = [];
    let m: Ptr = lib.bpf_object__next_map(this.handle, null);
    while (!isNull(m)) {
      const n: string = lib.bpf_map__name(m);
      if (!n.includes('.')) names.push(n); // internal maps: libbpf names them '<object>.rodata' and so on
      m = lib.bpf_object__next_map(this.handle, m);
    }
    return names;
  }

  /** Before load: leaves programs out of the load (not loaded, not verified) and maps out of creation
   * (only maps no loaded program uses), e.g. an optional part this kernel cannot load. */
  exclude(programs: readonly string[], maps: readonly string[] = []): void {
    for (const name of programs) {
      const r: number = lib.bpf_program__set_autoload(this.programPtr(name), false);
      if (r < 0) throw new BpfError(`leave program ${name} out of the load`, 'bpf_program__set_autoload', r);
    }
    for (const name of maps) {
      const r: number = lib.bpf_map__set_autocreate(this.mapPtr(name), false);
      if (r < 0) throw new BpfError(`leave map ${name} out of the load`, 'bpf_map__set_autocreate', r);
    }
  }

  private programPtr(name: string): Ptr {
    const p: Ptr = lib.bpf_object__find_program_by_name(this.handle, name);
    if (isNull(p)) throw new Error(`BPF object ${this.path}: no program ${name}`);
    return p;
  }

  /** After load: whether the map was created (see exclude). */
  hasMap(name: string): boolean {
    return this.loaded && lib.bpf_map__fd(this.mapPtr(name)) >= 0;
  }

  /** Before load: the map's capacity. */
  setMaxEntries(name: string, n: number): void {
    const r: number = lib.bpf_map__set_max_entries(this.mapPtr(name), n);
    if (r < 0) throw new BpfError(`set max entries of ${name} to ${n}`, 'bpf_map__set_max_entries', r);
  }

  maxEntries(name: string): number {
    return lib.bpf_map__max_entries(this.mapPtr(name));
  }

  /** Declared layout of a map (before or after load). */
  mapSpec(name: string): { type: number; keySize: number; valueSize: number; maxEntries: number } {
    const m = this.mapPtr(name);
    return {
      type: lib.bpf_map__type(m),
      keySize: lib.bpf_map__key_size(m),
      valueSize: lib.bpf_map__value_size(m),
      maxEntries: lib.bpf_map__max_entries(m),
    };
  }

  /** The object's BTF and the ids of a map's key and value types in it (0: none declared). */
  mapBtf(name: string): { btf: Ptr | null; keyTypeId: number; valueTypeId: number } {
    const m = this.mapPtr(name);
    const btf: Ptr = lib.bpf_object__btf(this.handle);
    return {
      btf: isNull(btf) ? null : btf,
      keyTypeId: lib.bpf_map__btf_key_type_id(m),
      valueTypeId: lib.bpf_map__btf_value_type_id(m),
    };
  }

  /** Before load: use an existing map (e.g. a pinned one) instead of creating it. */
  reuseMapFd(name: string, fd: number): void {
    const r: number = lib.bpf_map__reuse_fd(this.mapPtr(name), fd);
    if (r < 0) throw new BpfError(`reuse fd ${fd} for map ${name} (${mapInfo(fd, name).name})`, 'bpf_map__reuse_fd', r);
  }

  load(): void {
    const mark = logMark();
    const r: number = holdingProfilerSignal(() => lib.bpf_object__load(this.handle));
    if (r < 0) throw new BpfError(`load BPF object ${this.path}`, 'bpf_object__load', r, logSince(mark));
    this.loaded = true;
  }

  /** Before load: whether libbpf loads this program (off: the rest of the object loads without it, e.g. a
   * program whose hook this kernel lacks, which would otherwise fail the whole object). */
  setAutoload(name: string, on: boolean): void {
    const p: Ptr = lib.bpf_object__find_program_by_name(this.handle, name);
    if (isNull(p)) throw new Error(`BPF object ${this.path}: no program ${name}`);
    const r: number = lib.bpf_program__set_autoload(p, on);
    if (r < 0) throw new BpfError(`set autoload of ${name}`, 'bpf_program__set_autoload', r);
  }

  program(name: string): Program {
    const p: Ptr = lib.bpf_object__find_program_by_name(this.handle, name);
    if (isNull(p)) throw new Error(`BPF object ${this.path}: no program ${name}`);
    return { name, ptr: p, fd: this.loaded ? lib.bpf_program__fd(p) : -1 };
  }

  /** A typed view of a loaded map; the fd stays owned by the object. */
  map<K, V>(name: string, key: Codec<K>, value: Codec<V>): BpfMap<K, V> {
    if (!this.loaded) throw new Error(`BPF object ${this.path}: map ${name} used before load`);
    return new BpfMap(name, lib.bpf_map__fd(this.mapPtr(name)), key, value, false);
  }

  /** After load: the fd of a map (owned by the object). */
  mapFd(name: string): number {
    return lib.bpf_map__fd(this.mapPtr(name));
  }

  /** After load: pins a map the object created. */
  pinMap(name: string, path: string): void {
    const fd: number = lib.bpf_map__fd(this.mapPtr(name));
    const r: number = lib.bpf_obj_pin(fd, path);
    if (r < 0) throw new BpfError(`pin map ${name} at ${path}`, 'bpf_obj_pin', r);
  }

  /** Checks struct codecs and enum mirrors (by default src/bpf/abi.ts's) against this object's BTF
   * (before or after load); returns the mismatches. */
  checkAbi(codecs: readonly StructCodec<unknown>[], enums: AbiEnums = ABI_ENUMS): string[] {
    const btf: Ptr = lib.bpf_object__btf(this.handle);
    if (isNull(btf)) return [`${this.path}: has no BTF (build with -g)`];
    return [...codecs.flatMap((cd) => checkStruct(btf, cd)), ...checkEnums(btf, enums)];
  }

  close(): void {
    if (!this.ptr) return;
    lib.bpf_object__close(this.ptr);
    this.ptr = null;
  }
}
