// load.ts — loads meshredir.bpf.o with its maps pinned under the bpffs directory: pinned maps are
// adopted when their layout is the object's (sizes, then the key and value types structurally), new ones
// are created and pinned, and then every link is attached or re-adopted (attach.ts).
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { BpfObject } from '../../bpf/object.js';
import { mapInfo, type MapInfo } from '../../bpf/map.js';
import { KernelBtf, compareBtfTypes } from '../../bpf/btf.js';
import { progMapsById } from '../../bpf/prog.js';
import { closeFd, mapFdById, mapTypeName, openPinned, pinFd } from '../../bpf/fd.js';
import {
  STRUCT_CODECS,
  Gauge,
  DEFAULT_MAX_CONNECTIONS,
  FAST_PATH,
  WITHOUT_FAST_PATH,
  TRACE_RING,
  u32,
  u64,
} from '../../bpf/abi.js';
import { BpfError, withVerifier } from '../../bpf/errors.js';
import { interrupted, retryInterrupted } from '../../bpf/retry.js';
import { ensureBpffs, cgroupId } from '../../util/host.js';
import { crashAt } from '../../util/faults.js';
import { ALL_MAPS, STORAGE_MAPS, type Pins } from './pins.js';
import { attachLinks } from './attach.js';

export interface LoadConfig {
  object: string;
  cgroupRoot: string;
  maxConnections?: number;
  maxAccelerated?: number;
  /** The trace ring's size in bytes (a power of two, at least a page); default: the object's (256 KiB). */
  traceRingBytes?: number;
}

export interface LoadReport {
  /** Programs that could not be attached on this kernel, with why (the fast path is optional). */
  unavailable: Record<string, string>;
  /** Map pins that had been deleted, pinned again from the maps the attached programs use. */
  repinnedMaps: string[];
  adoptedMaps: string[];
  createdMaps: string[];
  adoptedLinks: string[];
  attachedLinks: string[];
  updatedLinks: string[];
  /** Links updated because their program used other maps than the pinned ones: which, and how. */
  rebound: Record<string, string>;
}

function mkdirPrivate(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

/** What load asks of a part (part.ts): which of its programs this kernel cannot load, and what to do once
 * the object is loaded and attached. */
export interface LoadPart {
  prepare?(obj: BpfObject): Record<string, string>;
  loaded(obj: BpfObject): string[];
}

/**
 * Loads the object, re-using pinned maps, and makes every link attached at the root and pinned; then each
 * part's `loaded` runs with the object still open (it pins what it attaches later, updates its own links).
 * Before the load, each part's `prepare` names the programs this kernel cannot load: their autoload goes
 * off (else libbpf fails the whole object), they are reported unavailable and never attached.
 */
export function load(cfg: LoadConfig, pins: Pins, parts: LoadPart[] = []): LoadReport {
  const rep: LoadReport = {
    unavailable: {},
    repinnedMaps: [],
    adoptedMaps: [],
    createdMaps: [],
    adoptedLinks: [],
    attachedLinks: [],
    updatedLinks: [],
    rebound: {},
  };
  ensureBpffs(pins.bpffs);
  for (const d of [pins.bpffs, pins.mapsDir, pins.linksDir]) mkdirPrivate(d);
  const rootId = cgroupId(cfg.cgroupRoot);
  if (rootId === null) throw new Error(`cgroup root ${cfg.cgroupRoot} does not exist`);

  let obj = BpfObject.open(cfg.object);
  const reusedFds: number[] = [];
  const btfs = new Map<number, KernelBtf>();
  const limit = cfg.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
  /** Sizes the maps, adopts the pinned ones and loads; without the fast path when `fast` is false. */
  const loadObject = (fast: boolean) => {
    const drift = obj.checkAbi(STRUCT_CODECS);
    if (drift.length) throw new Error(`${cfg.object} does not match src/bpf/abi.ts:\n  ${drift.join('\n  ')}`);
    if (fast) obj.exclude(WITHOUT_FAST_PATH);
    else obj.exclude(FAST_PATH.programs, FAST_PATH.maps);
    obj.setMaxEntries('mr_orig', 2 * limit);
    // Socket storage (mr_fast) has no size of its own: one value per socket that joined.
    if (cfg.maxAccelerated && fast)
      for (const m of FAST_PATH.maps)
        if (!(STORAGE_MAPS as readonly string[]).includes(m)) obj.setMaxEntries(m, cfg.maxAccelerated);
    if (cfg.traceRingBytes) obj.setMaxEntries(TRACE_RING, cfg.traceRingBytes);
    for (const part of parts) {
      for (const [name, why] of Object.entries(part.prepare?.(obj) ?? {})) {
        obj.setAutoload(name, false);
        rep.unavailable[name] = why;
      }
    }
    const maps = fast ? ALL_MAPS : ALL_MAPS.filter((m) => !(FAST_PATH.maps as readonly string[]).includes(m));
    for (const name of maps) {
      const pin = pins.mapPin(name);
      if (!existsSync(pin)) continue;
      const fd = openPinned(pin, `open pinned map ${pin}`);
      if (name === TRACE_RING && mapInfo(fd, pin).maxEntries !== obj.mapSpec(name).maxEntries) {
        // Another ring size (--trace-ring-bytes): the ring keeps nothing worth adopting, so a new one
        // replaces it (the links are updated to programs that write to it; a running trace ends).
        closeFd(fd);
        unlinkSync(pin);
        continue;
      }
      reusedFds.push(fd);
      checkLayout(obj, name, mapInfo(fd, pin), pin, btfs, pins.bpffs);
      obj.reuseMapFd(name, fd);
      rep.adoptedMaps.push(name);
    }
    obj.load();
  };
  /** A fresh object: the one that failed to load cannot be loaded again. */
  const reopen = () => {
    obj.close();
    for (const fd of reusedFds.splice(0)) closeFd(fd);
    rep.adoptedMaps = [];
    obj = BpfObject.open(cfg.object);
  };
  try {
    repinFromLinks(pins, rep);
    let fast = true;
    try {
      retryInterrupted(() => loadObject(true), reopen);
    } catch (e) {
      if (!(e instanceof BpfError) || interrupted(e)) throw e;
      // The fast path is optional: a kernel that cannot load its maps or programs (no sockmap, a verifier
      // that refuses mr_skmsg) still redirects, without acceleration.
      reopen();
      retryInterrupted(() => loadObject(false), reopen);
      fast = false;
      rep.unavailable.mr_skmsg = `the fast path does not load here: ${withVerifier(e)}`;
    }
    const gauges = obj.map('mr_gauges', u32, u64);
    if (gauges.get(Gauge.LIMIT) !== BigInt(limit)) gauges.set(Gauge.LIMIT, BigInt(limit));
    for (const name of ALL_MAPS) {
      if (rep.adoptedMaps.includes(name) || !obj.hasMap(name)) continue;
      obj.pinMap(name, pins.mapPin(name));
      chmodSync(pins.mapPin(name), 0o600);
      rep.createdMaps.push(name);
    }
    crashAt('after-load'); // the crash-safety test: maps pinned, nothing attached
    attachLinks(obj, pins, cfg.cgroupRoot, rootId, rep, fast);
    for (const part of parts) rep.updatedLinks.push(...part.loaded(obj));
    return rep;
  } finally {
    obj.close();
    for (const fd of reusedFds) closeFd(fd);
    for (const b of btfs.values()) b.close();
  }
}

/** Refuses a pinned map whose layout is not the object's: its contents would be misread. */
function checkLayout(
  obj: BpfObject,
  name: string,
  have: MapInfo,
  pin: string,
  btfs: Map<number, KernelBtf>,
  bpffs: string,
): void {
  const want = obj.mapSpec(name);
  const again = `run 'meshredir cleanup --bpffs ${bpffs}' and start again (connections in flight lose their records)`;
  const diff = (['type', 'keySize', 'valueSize', 'maxEntries'] as const).filter(
    (k) => have[k] !== want[k] && !(k === 'maxEntries' && (STORAGE_MAPS as readonly string[]).includes(name)),
  );
  if (diff.length) {
    const say = (v: typeof have | typeof want) =>
      diff.map((k) => `${k} ${k === 'type' ? mapTypeName(v[k]) : v[k]}`).join(', ');
    throw new Error(
      `pinned map ${pin} has another layout than ${obj.path} (pinned: ${say(have)}; object: ${say(want)}). ` +
        `Its contents cannot be read with the new layout: ${again}.`,
    );
  }
  const btfDiff = compareMapBtf(obj, name, have, pin, btfs);
  if (btfDiff) {
    throw new Error(
      `pinned map ${pin} has another layout than ${obj.path} (same sizes, different types: ${btfDiff}). ` +
        `Adopting it would make the new programs misread what is stored: ${again}.`,
    );
  }
}

/**
 * The pinned map's key and value types (its BTF in the kernel) against the object's, structurally:
 * a field reorder of the same size passes every size check but would be misread. Returns the first
 * difference or null. A map the kernel keeps without BTF can only have been created so by this
 * same loader, and is compared by sizes (done by the caller) alone.
 */
function compareMapBtf(
  obj: BpfObject,
  name: string,
  have: MapInfo,
  pin: string,
  btfs: Map<number, KernelBtf>,
): string | null {
  const want = obj.mapBtf(name);
  if (!want.btf || (want.keyTypeId === 0 && want.valueTypeId === 0)) return null;
  if (have.btfId === 0 || (have.btfKeyTypeId === 0 && have.btfValueTypeId === 0)) return null;
  let k = btfs.get(have.btfId);
  if (!k) {
    k = KernelBtf.load(have.btfId, `pinned map ${pin}`);
    btfs.set(have.btfId, k);
  }
  if (have.btfKeyTypeId !== 0 && want.keyTypeId !== 0) {
    const d = compareBtfTypes(k.ptr, have.btfKeyTypeId, want.btf, want.keyTypeId, 'key');
    if (d) return d;
  }
  return compareBtfTypes(k.ptr, have.btfValueTypeId, want.btf, want.valueTypeId, 'value');
}

/**
 * Map pins deleted behind our back while links remain: the attached programs still use those maps,
 * so they are pinned again (contents kept, no program change). Only when every attached program
 * agrees on the map; otherwise the map is created anew and the links are updated to use it.
 */
function repinFromLinks(pins: Pins, rep: LoadReport): void {
  const missing = ALL_MAPS.filter((n) => !pins.has(n));
  if (missing.length === 0 || !existsSync(pins.linksDir)) return;
  const inUse = new Map<string, Set<number>>();
  for (const l of pins.links()) {
    if (!l.attached || l.progId === undefined) continue;
    for (const [name, id] of progMapsById(l.progId) ?? []) inUse.set(name, new Set([...(inUse.get(name) ?? []), id]));
  }
  for (const name of missing) {
    const ids = [...(inUse.get(name) ?? [])];
    if (ids.length !== 1) continue;
    const fd = mapFdById(ids[0]!);
    if (fd === null) continue;
    try {
      const pin = pins.mapPin(name);
      pinFd(fd, pin, `pin map ${name} (id ${ids[0]}) again at ${pin}`);
      chmodSync(pin, 0o600);
      rep.repinnedMaps.push(name);
    } finally {
      closeFd(fd);
    }
  }
}
