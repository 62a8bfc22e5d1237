// pins.ts — what the eBPF mode keeps under its bpffs directory (maps/, links/, progs/) and how it reads
// it back: typed maps by name, the links with their programs and attach points, slots by policy name.
import { existsSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BpfMap, mapInfo } from '../../bpf/map.js';
import { Link } from '../../bpf/link.js';
import { progInfoById } from '../../bpf/prog.js';
import { tryOpenPinned, withFd } from '../../bpf/fd.js';
import {
  MAPS,
  INBOUND_MAPS,
  IN_RING,
  TRACE_RING,
  inSk,
  u32,
  type MapName,
  type InboundMapName,
} from '../../bpf/abi.js';
import type { Codec } from '../../bpf/codec.js';

/** Socket storage maps: pinned, but with no user-space view by key (and no get_next_key). */
export const STORAGE_MAPS = ['mr_sk', 'mr_fast', 'mr_in_sk'] as const;
/** Every pinned map: the outbound part's, the inbound part's, the socket storages, and the trace's and
 * the inbound watch's ring buffers (no entries to type). */
export const ALL_MAPS = [
  ...(Object.keys(MAPS) as MapName[]),
  ...(Object.keys(INBOUND_MAPS) as InboundMapName[]),
  ...STORAGE_MAPS,
  TRACE_RING,
  IN_RING,
] as const;
/** A map with codecs (every pinned map but the socket storages). */
export type AnyMapName = MapName | InboundMapName;
const CODECS = { ...MAPS, ...INBOUND_MAPS };

/** Links of the inbound part: one per pod netns, pinned as links/sklookup-<slot>. */
export const NETNS_LINK_PREFIX = 'sklookup-';

export interface LinkState {
  name: string;
  pin: string;
  id?: number;
  progId?: number;
  progTag?: string;
  /** Cgroup links: the id of the cgroup it is attached to ("0": detached). */
  cgroupId?: string;
  /** sk_msg links: the sockhash it is attached to (0: detached). */
  mapId?: number;
  /** sk_lookup links: the inode of their netns (0: the netns is gone, the link defunct). */
  netnsIno?: number;
  attached: boolean;
  error?: string;
}

export class Pins {
  readonly mapsDir: string;
  readonly linksDir: string;
  /** Programs kept to attach later (the inbound part's sk_lookup, one link per netns as pods come). */
  readonly progsDir: string;
  constructor(readonly bpffs: string) {
    this.mapsDir = join(bpffs, 'maps');
    this.linksDir = join(bpffs, 'links');
    this.progsDir = join(bpffs, 'progs');
  }

  /** Whether meshredir's pins exist under the bpffs directory; throws when this process may not look. */
  installed(): boolean {
    for (const d of [this.linksDir, this.mapsDir, this.progsDir]) {
      try {
        statSync(d);
        return true;
      } catch (e) {
        const code = (e as NodeJS.ErrnoException).code;
        if (code === 'EACCES' || code === 'EPERM')
          throw new Error(
            `cannot read the pins under ${this.bpffs}: ${code} (${code === 'EACCES' ? 'permission denied' : 'operation not permitted'}); reading them needs root (CAP_BPF and access to ${this.bpffs})`,
          );
      }
    }
    return false;
  }

  mapPin(name: string): string {
    return join(this.mapsDir, name);
  }

  linkPin(name: string): string {
    return join(this.linksDir, name);
  }

  progPin(name: string): string {
    return join(this.progsDir, name);
  }

  has(name: string): boolean {
    return existsSync(this.mapPin(name));
  }

  openMap<N extends AnyMapName>(name: N): BpfMap<unknown, unknown> {
    const m = CODECS[name] as { key: Codec<unknown>; value: Codec<unknown> };
    return BpfMap.open(this.mapPin(name), name, m.key, m.value);
  }

  /** The inbound listeners' socket storage, keyed by a socket fd of this process (no iteration). */
  openStorage(name: 'mr_in_sk'): BpfMap<number, { slot: number; flags: number }> {
    return BpfMap.open(this.mapPin(name), name, u32, inSk);
  }

  /** Opens the maps, runs fn, closes them. */
  withMaps<T>(names: readonly AnyMapName[], fn: (maps: Map<AnyMapName, BpfMap<unknown, unknown>>) => T): T {
    const maps = new Map<AnyMapName, BpfMap<unknown, unknown>>();
    try {
      for (const n of names) maps.set(n, this.openMap(n));
      return fn(maps);
    } finally {
      for (const m of maps.values()) m.close();
    }
  }

  /** The entries of one map, decoded. */
  entries<T>(name: AnyMapName): T {
    return this.withMaps([name], (m) => m.get(name)!.entries() as T);
  }

  /** Map name → id of every pinned map (undefined where the pin is missing or unreadable). */
  mapIds(): Map<string, number | undefined> {
    return new Map(
      ALL_MAPS.map((name) => {
        const fd = tryOpenPinned(this.mapPin(name));
        return [name, fd === null ? undefined : withFd(fd, (f) => mapInfo(f, name).id)];
      }),
    );
  }

  /** Every pinned link of the cgroup root (and the sockhash), with its program and where it is attached
   * (or why it cannot be read); the inbound part's netns links are netnsLinks(). */
  links(): LinkState[] {
    return this.readLinks((n) => !n.startsWith(NETNS_LINK_PREFIX));
  }

  /** The inbound part's links: one per pod netns (links/sklookup-<slot>). */
  netnsLinks(): (LinkState & { slot: number })[] {
    return this.readLinks((n) => n.startsWith(NETNS_LINK_PREFIX)).map((l) => ({
      ...l,
      slot: Number(l.name.slice(NETNS_LINK_PREFIX.length)),
    }));
  }

  private readLinks(which: (name: string) => boolean): LinkState[] {
    if (!existsSync(this.linksDir)) return [];
    return readdirSync(this.linksDir)
      .filter(which)
      .sort()
      .map((name) => {
        const pin = this.linkPin(name);
        try {
          const l = Link.open(pin);
          try {
            const i = l.info();
            const tag = progInfoById(i.progId)?.tag;
            const base = { name, pin, id: i.id, progId: i.progId, ...(tag ? { progTag: tag } : {}) };
            if (i.mapId !== undefined) return { ...base, mapId: i.mapId, attached: i.mapId !== 0 };
            if (i.netnsIno !== undefined) return { ...base, netnsIno: i.netnsIno, attached: i.netnsIno !== 0 };
            return { ...base, cgroupId: String(i.cgroupId ?? 0n), attached: (i.cgroupId ?? 0n) !== 0n };
          } finally {
            l.close();
          }
        } catch (e) {
          return { name, pin, attached: false, error: (e as Error).message };
        }
      });
  }

  /** The slot of every policy, by name, from mr_slots. */
  slots(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [slot, meta] of this.entries<[number, { name: Buffer }][]>('mr_slots')) {
      out.set(meta.name.toString('utf8').replace(/\0.*$/s, ''), slot);
    }
    return out;
  }

  /** Whether a map has no entry (or is not pinned): one syscall, however many entries it has. */
  mapEmpty(name: AnyMapName): boolean {
    return !this.has(name) || this.withMaps([name], (m) => m.get(name)!.empty());
  }

  /** Sockets on the fast path now (entries of the pinned sockhash); 0 when it is not pinned. */
  acceleratedSockets(): number {
    if (!this.has('mr_sockhash')) return 0;
    return this.withMaps(['mr_sockhash'], (m) => m.get('mr_sockhash')!.count());
  }
}
