// ebpf.ts — the eBPF mode: loads (or re-adopts) meshredir.bpf.o with its maps and links pinned
// under the bpffs directory, writes policy maps by difference, reports status, cleans up.
import { existsSync, mkdirSync, readdirSync, rmSync, rmdirSync, chmodSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { BpfObject } from '../../bpf/object.js';
import { BpfMap, mapInfo, type MapInfo } from '../../bpf/map.js';
import { KernelBtf, compareBtfTypes, kernelHasMember } from '../../bpf/btf.js';
import { Link } from '../../bpf/link.js';
import { progInfoById, progInfoByFd, progMapsById, progMapsByFd } from '../../bpf/prog.js';
import { lib, c } from '../../sys/libbpf.js';
import { BpfError } from '../../bpf/errors.js';
import {
  CgKind,
  MAPS,
  POLICY_MAPS,
  PROGRAMS,
  REDIRECTING,
  REDIRECT_NEEDS,
  STRUCT_CODECS,
  STAT_FIELDS,
  Gauge,
  DEFAULT_MAX_CONNECTIONS,
  u32,
  u64,
  type MapName,
  type ProgramName,
  type StatName,
} from '../../bpf/abi.js';
import type { Codec } from '../../bpf/codec.js';
import { ensureBpffs, cgroupId, cgroupDir, requireCgroup2 } from '../../util/host.js';
import {
  assignSlots,
  toEntries,
  cgroupIdConflicts,
  idConflictMessage,
  type IdConflict,
  type MapEntries,
  type Resolution,
  type Gates,
  type GateIds,
} from '../../policy/entries.js';
import type { Policy } from '../../policy/schema.js';

export const DEFAULT_BPFFS = '/sys/fs/bpf/meshredir';
/** Pinned maps besides those with codecs: the socket storage has no user-space view. */
const ALL_MAPS = [...(Object.keys(MAPS) as MapName[]), 'mr_sk'] as const;

export interface EbpfConfig {
  bpffs: string;
  /** cgroup directory (absolute) where the programs attach. */
  cgroupRoot: string;
  /** meshredir.bpf.o */
  object: string;
  /** Connections that may wait for the proxy's accept before connect() is refused (mr_orig holds
   * twice as many: the rest is headroom for handshakes in flight). Default DEFAULT_MAX_CONNECTIONS. */
  maxConnections?: number;
  /** Sockets the fast path may hold (mr_sockhash; two per connection). Default from the object. */
  maxAccelerated?: number;
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

/** Compares the meshredir maps two programs use (name → id); a description of the difference or null. */
function mapsDiffer(cur: Map<string, number> | null, next: Map<string, number>): string | null {
  const diffs: string[] = [];
  for (const [name, id] of next) {
    if (!name.startsWith('mr_')) continue; // .rodata/.bss are per load
    const had = cur?.get(name);
    if (had !== id) diffs.push(`${name} ${had ?? 'none'} → ${id}`);
  }
  return diffs.length ? `uses map ids ${diffs.join(', ')}` : null;
}

export interface ApplyReport {
  writes: number;
  deletes: number;
  policies: { name: string; slot: number; cgroup: string; resolved: boolean; unresolvedBypass: string[] }[];
  /** Policies left out because their cgroup is the same cgroup (by id) as another policy's. */
  rejected: { name: string; file: string; message: string }[];
}

/** Two policies can only collide by id when two of them resolved. */
function conflictsPossible(res: Map<string, Resolution>): boolean {
  const ids = [...res.values()].map((r) => r.cgroup).filter((x) => x !== null);
  return new Set(ids).size !== ids.length;
}

/** Fault injection for tests: MESHREDIR_FAULT=fail-attach:NAME makes attaching NAME fail. */
function injectAttachFault(name: string, attachedSoFar: number): void {
  if (process.env.MESHREDIR_FAULT === `fail-attach:${name}`)
    throw new Error(
      `attach ${name}: injected failure (MESHREDIR_FAULT, after ${attachedSoFar} attach(es) of this load)`,
    );
}

/** Fault injection for tests: MESHREDIR_FAULT=between-attach[:N] dies after the Nth attach of a load (default 1). */
function injectCrashAfterAttach(attached: number): void {
  const f = /^between-attach(?::(\d+))?$/.exec(process.env.MESHREDIR_FAULT ?? '');
  if (f && attached === Number(f[1] ?? 1)) process.kill(process.pid, 'SIGKILL');
}

const TYPE_NAMES: Record<number, string> = {
  1: 'hash',
  2: 'array',
  6: 'percpu_array',
  9: 'lru_hash',
  11: 'lpm_trie',
  24: 'sk_storage',
};

function mkdirPrivate(dir: string): void {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
}

export class EbpfMode {
  readonly mapsDir: string;
  readonly linksDir: string;
  constructor(readonly cfg: EbpfConfig) {
    this.mapsDir = join(cfg.bpffs, 'maps');
    this.linksDir = join(cfg.bpffs, 'links');
  }

  /** Loads the object, re-using pinned maps, and makes every link attached at the root and pinned. */
  ensureLoaded(): LoadReport {
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
    ensureBpffs(this.cfg.bpffs);
    mkdirPrivate(this.cfg.bpffs);
    mkdirPrivate(this.mapsDir);
    mkdirPrivate(this.linksDir);
    const rootId = cgroupId(this.cfg.cgroupRoot);
    if (rootId === null) throw new Error(`cgroup root ${this.cfg.cgroupRoot} does not exist`);

    const obj = BpfObject.open(this.cfg.object);
    const reusedFds: number[] = [];
    const btfs = new Map<number, KernelBtf>();
    try {
      const drift = obj.checkCodecs(STRUCT_CODECS);
      if (drift.length) throw new Error(`${this.cfg.object} does not match src/bpf/abi.ts:\n  ${drift.join('\n  ')}`);
      const limit = this.cfg.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
      obj.setMaxEntries('mr_orig', 2 * limit);
      if (this.cfg.maxAccelerated)
        for (const m of ['mr_sockhash', 'mr_peers']) obj.setMaxEntries(m, this.cfg.maxAccelerated);

      this.repinFromLinks(rep);
      for (const name of ALL_MAPS) {
        const pin = join(this.mapsDir, name);
        if (!existsSync(pin)) continue;
        const fd: number = lib.bpf_obj_get(pin);
        if (fd < 0) throw new BpfError(`open pinned map ${pin}`, 'bpf_obj_get', fd);
        reusedFds.push(fd);
        const have = mapInfo(fd, pin);
        const want = obj.mapSpec(name);
        const diff = (['type', 'keySize', 'valueSize', 'maxEntries'] as const).filter(
          (k) => have[k] !== want[k] && !(k === 'maxEntries' && name === 'mr_sk'),
        );
        if (diff.length) {
          const say = (v: typeof have | typeof want) =>
            diff.map((k) => `${k} ${k === 'type' ? (TYPE_NAMES[v[k]] ?? v[k]) : v[k]}`).join(', ');
          throw new Error(
            `pinned map ${pin} has another layout than ${this.cfg.object} (pinned: ${say(have)}; object: ${say(want)}). ` +
              `Its contents cannot be read with the new layout: run 'meshredir cleanup --bpffs ${this.cfg.bpffs}' and start again (connections in flight lose their records).`,
          );
        }
        const btfDiff = this.compareMapBtf(obj, name, have, pin, btfs);
        if (btfDiff) {
          throw new Error(
            `pinned map ${pin} has another layout than ${this.cfg.object} (same sizes, different types: ${btfDiff}). ` +
              `Adopting it would make the new programs misread what is stored: run 'meshredir cleanup --bpffs ${this.cfg.bpffs}' and start again (connections in flight lose their records).`,
          );
        }
        obj.reuseMapFd(name, fd);
        rep.adoptedMaps.push(name);
      }
      obj.load();
      const gauges = obj.map('mr_gauges', u32, u64);
      if (gauges.get(Gauge.LIMIT) !== BigInt(limit)) gauges.set(Gauge.LIMIT, BigInt(limit));
      for (const name of ALL_MAPS) {
        if (rep.adoptedMaps.includes(name)) continue;
        obj.pinMap(name, join(this.mapsDir, name));
        chmodSync(join(this.mapsDir, name), 0o600);
        rep.createdMaps.push(name);
      }

      // Fault injection for the crash-safety test: die with maps pinned and nothing attached.
      if (process.env.MESHREDIR_FAULT === 'after-load') process.kill(process.pid, 'SIGKILL');
      const sockhashId = mapInfo(obj.mapFd('mr_sockhash'), 'mr_sockhash').id;
      const attachedNow: string[] = [];
      try {
        for (const name of Object.keys(PROGRAMS) as ProgramName[]) {
          const prog = obj.program(name);
          const pin = join(this.linksDir, name);
          const skmsg = PROGRAMS[name].attach === 'sk_msg';
          if (existsSync(pin)) {
            const link = Link.open(pin);
            try {
              const info = link.info();
              if (skmsg ? info.mapId === sockhashId : info.cgroupId === rootId) {
                const cur = progInfoById(info.progId);
                const next = progInfoByFd(prog.fd, name);
                // The tag hashes the instructions only: the same program bound to other maps (pins
                // lost and maps recreated) has the same tag, so the maps are compared too.
                const maps = cur ? mapsDiffer(progMapsById(cur.id), progMapsByFd(prog.fd, name)) : null;
                if (!cur || cur.tag !== next.tag || maps) {
                  link.update(prog);
                  rep.updatedLinks.push(name);
                  if (maps) rep.rebound[name] = maps;
                } else rep.adoptedLinks.push(name);
                continue;
              }
              if (!skmsg && info.cgroupId && info.cgroupId !== 0n) {
                throw new Error(
                  `link ${pin} is attached to another cgroup (id ${info.cgroupId}); run 'meshredir cleanup --bpffs ${this.cfg.bpffs}' first`,
                );
              }
              link.unpin(); // defunct (its cgroup is gone or it was detached): replace it
            } finally {
              link.close();
            }
          }
          injectAttachFault(name, attachedNow.length);
          if (skmsg) {
            try {
              Link.attachSkMsgPinned(prog, obj.mapFd('mr_sockhash'), pin);
            } catch (e) {
              // sk_msg links need kernel 6.10; without them accelerate stays off, and status says so.
              if (!(e instanceof BpfError)) throw e;
              rep.unavailable[name] = e.message;
              continue;
            }
            attachedNow.push(pin);
            chmodSync(pin, 0o600);
            rep.attachedLinks.push(name);
            injectCrashAfterAttach(attachedNow.length);
            continue;
          }
          const link = Link.attachCgroup(prog, this.cfg.cgroupRoot);
          try {
            link.pin(pin);
            attachedNow.push(pin);
            chmodSync(pin, 0o600);
          } catch (e) {
            link.detach(); // never attached without a pin: nobody could find it to detach it
            throw e;
          } finally {
            link.close();
          }
          rep.attachedLinks.push(name);
          injectCrashAfterAttach(attachedNow.length);
        }
      } catch (e) {
        const undone = this.rollback(attachedNow);
        throw new Error(
          `${(e as Error).message}; ${undone.length ? `detached what this load had attached (${undone.join(', ')})` : 'nothing had been attached by this load'}${this.enforceDependencies()}`,
          { cause: e },
        );
      }
      return rep;
    } finally {
      obj.close();
      for (const fd of reusedFds) c.close(fd);
      for (const b of btfs.values()) b.close();
    }
  }

  /**
   * The pinned map's key and value types (its BTF in the kernel) against the object's, structurally:
   * a field reorder of the same size passes every size check but would be misread. Returns the first
   * difference or null. A map the kernel keeps without BTF can only have been created so by this
   * same loader, and is compared by sizes (done by the caller) alone.
   */
  private compareMapBtf(
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
  private repinFromLinks(rep: LoadReport): void {
    const missing = ALL_MAPS.filter((n) => !existsSync(join(this.mapsDir, n)));
    if (missing.length === 0 || !existsSync(this.linksDir)) return;
    const inUse = new Map<string, Set<number>>();
    for (const l of this.links()) {
      if (!l.attached || l.progId === undefined) continue;
      for (const [name, id] of progMapsById(l.progId) ?? []) inUse.set(name, new Set([...(inUse.get(name) ?? []), id]));
    }
    for (const name of missing) {
      const ids = [...(inUse.get(name) ?? [])];
      if (ids.length !== 1) continue;
      const fd: number = lib.bpf_map_get_fd_by_id(ids[0]!);
      if (fd < 0) continue;
      try {
        const pin = join(this.mapsDir, name);
        const r: number = lib.bpf_obj_pin(fd, pin);
        if (r < 0) throw new BpfError(`pin map ${name} (id ${ids[0]}) again at ${pin}`, 'bpf_obj_pin', r);
        chmodSync(pin, 0o600);
        rep.repinnedMaps.push(name);
      } finally {
        c.close(fd);
      }
    }
  }

  /** Map name → id of every pinned map (undefined where the pin is missing or unreadable). */
  pinnedMapIds(): Map<string, number | undefined> {
    return new Map(
      ALL_MAPS.map((name) => {
        const fd: number = lib.bpf_obj_get(join(this.mapsDir, name));
        if (fd < 0) return [name, undefined];
        try {
          return [name, mapInfo(fd, name).id];
        } finally {
          c.close(fd);
        }
      }),
    );
  }

  /** Detaches and unpins the given link pins (what a failed load attached). Returns their names. */
  private rollback(pins: string[]): string[] {
    const done: string[] = [];
    for (const pin of [...pins].reverse()) {
      try {
        const l = Link.open(pin);
        try {
          l.detach();
        } finally {
          l.close();
        }
      } catch (e) {
        if (!(e instanceof BpfError)) throw e;
      }
      rmSync(pin, { force: true });
      done.push(basename(pin));
    }
    return done;
  }

  /**
   * A connect hook without sockops and getsockopt redirects connections that the proxy cannot resolve;
   * if that is what is left (e.g. adopted connect links while a dependency failed to attach), the
   * connect hooks go too, so connections go direct instead. Returns a note for the error message.
   */
  private enforceDependencies(): string {
    const attached = new Set(
      this.links()
        .filter((l) => l.attached)
        .map((l) => l.name),
    );
    const missing = REDIRECT_NEEDS.filter((n) => !attached.has(n));
    const redirecting = REDIRECTING.filter((n) => attached.has(n));
    if (missing.length === 0 || redirecting.length === 0) return '';
    this.rollback(redirecting.map((n) => join(this.linksDir, n)));
    return `; detached ${redirecting.join(', ')} too: without ${missing.join(', ')} redirected connections could not be resolved by the proxy`;
  }

  openMap<N extends MapName>(name: N): BpfMap<unknown, unknown> {
    const m = MAPS[name] as { key: Codec<unknown>; value: Codec<unknown> };
    return BpfMap.open(join(this.mapsDir, name), name, m.key, m.value);
  }

  private withMaps<T>(names: readonly MapName[], fn: (maps: Map<MapName, BpfMap<unknown, unknown>>) => T): T {
    const maps = new Map<MapName, BpfMap<unknown, unknown>>();
    try {
      for (const n of names) maps.set(n, this.openMap(n));
      return fn(maps);
    } finally {
      for (const m of maps.values()) m.close();
    }
  }

  /** Slot assignment kept in mr_slots. */
  currentSlots(): Map<string, number> {
    return this.withMaps(['mr_slots'], (maps) => {
      const out = new Map<string, number>();
      for (const [slot, meta] of maps.get('mr_slots')!.entries() as [number, { name: Buffer }][]) {
        out.set(meta.name.toString('utf8').replace(/\0.*$/s, ''), slot);
      }
      return out;
    });
  }

  resolve(policies: Policy[]): Map<string, Resolution> {
    const mount = requireCgroup2();
    return new Map(
      policies.map((p) => [
        p.name,
        {
          cgroup: cgroupId(cgroupDir(p.cgroup, mount)),
          bypass: p.bypass.cgroups.map((b) => cgroupId(cgroupDir(b, mount))),
        },
      ]),
    );
  }

  /** Gate paths as ids; those that do not exist (yet) are left out. */
  resolveGates(gates: Gates | undefined): GateIds {
    const mount = requireCgroup2();
    const ids = (paths: string[]) =>
      paths.map((p) => cgroupId(cgroupDir(p, mount))).filter((x): x is bigint => x !== null);
    return { guard: ids(gates?.guard ?? []), pass: ids(gates?.pass ?? []) };
  }

  /** Which policy (by name) owns each cgroup id in mr_cgroups now. */
  private cgroupOwners(slots: Map<string, number>): Map<bigint, string> {
    const bySlot = new Map([...slots].map(([n, s]) => [s, n]));
    return this.withMaps(['mr_cgroups'], (maps) => {
      const out = new Map<bigint, string>();
      for (const [id, v] of maps.get('mr_cgroups')!.entries() as [bigint, { kind: number; slot: number }][]) {
        const name = bySlot.get(v.slot);
        if (v.kind === CgKind.POLICY && name !== undefined) out.set(id, name);
      }
      return out;
    });
  }

  desired(
    policies: Policy[],
    gates?: Gates,
  ): {
    entries: MapEntries;
    slots: Map<string, number>;
    res: Map<string, Resolution>;
    keep: Policy[];
    conflicts: IdConflict[];
  } {
    const current = this.currentSlots();
    const res = this.resolve(policies);
    const { keep, conflicts } = cgroupIdConflicts(
      policies,
      res,
      conflictsPossible(res) ? this.cgroupOwners(current) : new Map(),
    );
    const slots = assignSlots(
      keep.map((p) => p.name),
      current,
    );
    return {
      entries: toEntries(keep, slots, res, { fastPath: this.fastPathAttached() }, this.resolveGates(gates)),
      slots,
      res,
      keep,
      conflicts,
    };
  }

  /** Whether `accelerate` can be applied here, and if not why: the sk_msg program is attached (sk_msg
   * links: kernel >= 6.10) and the kernel lets it see a peer's unread fast-path bytes (the psock's
   * msg_tot_len, its only flow control; without it a slow reader would let a sender queue without
   * bound). */
  fastPath(): { usable: boolean; why?: string } {
    if (!this.links().some((l) => l.name === 'mr_skmsg' && l.attached))
      return { usable: false, why: 'no sk_msg link (kernel < 6.10, or not attached)' };
    const queue = kernelHasMember('sk_psock', 'msg_tot_len');
    if (queue !== true)
      return {
        usable: false,
        why: "the kernel's psock has no msg_tot_len: the fast path could not bound a slow reader's queue",
      };
    return { usable: true };
  }

  fastPathAttached(): boolean {
    return this.fastPath().usable;
  }

  /**
   * What applyPolicies would write, without writing: the map entries with real cgroup ids where the
   * cgroups exist (slots from the pinned mr_slots when installed), and which cgroups do not exist.
   */
  dryRun(
    policies: Policy[],
    gates?: Gates,
  ): {
    entries: MapEntries;
    slotsFrom: 'pins' | 'new';
    unresolved: { policy: string; field: string; cgroup: string }[];
    rejected: string[];
  } {
    const pinned = existsSync(join(this.mapsDir, 'mr_slots'));
    const res = this.resolve(policies);
    const { keep, conflicts } = cgroupIdConflicts(policies, res, new Map());
    const slots = assignSlots(
      keep.map((p) => p.name),
      pinned ? this.currentSlots() : new Map(),
    );
    const unresolved = keep.flatMap((p) => {
      const r = res.get(p.name)!;
      return [
        ...(r.cgroup === null ? [{ policy: p.name, field: 'spec.cgroup', cgroup: p.cgroup }] : []),
        ...p.bypass.cgroups
          .filter((_, i) => r.bypass[i] === null)
          .map((b) => ({ policy: p.name, field: 'spec.proxy.bypass.cgroups', cgroup: b })),
      ];
    });
    return {
      entries: toEntries(keep, slots, res, { fastPath: !pinned || this.fastPathAttached() }, this.resolveGates(gates)),
      slotsFrom: pinned ? 'pins' : 'new',
      unresolved,
      rejected: conflicts.flatMap((c) => c.policies.filter((p) => p !== c.kept).map((p) => idConflictMessage(c, p))),
    };
  }

  /** Makes the policy maps hold exactly `policies` (and the `gates`: guard and pass entries of pod
   * cgroups); writes only what differs. */
  applyPolicies(policies: Policy[], gates?: Gates): ApplyReport {
    const { entries, slots, res, keep, conflicts } = this.desired(policies, gates);
    let writes = 0;
    let deletes = 0;
    this.withMaps(POLICY_MAPS, (maps) => {
      // Order matters for a consistent view: policy details before the cgroup entries that point at
      // them when adding; cgroup entries before details when removing (done below by map order).
      const order: MapName[] = [
        'mr_slots',
        'mr_policies',
        'mr_owners',
        'mr_proxies',
        'mr_ports',
        'mr_cidrs',
        'mr_cgroups',
      ];
      // Reads and writes go by map in batches (BPF_MAP_*_BATCH, see BpfMap): per entry through the FFI
      // they cost ~50 µs each, which made a 10,000-entry policy take a second to apply, and as long to
      // find in sync.
      const stale: [BpfMap<unknown, unknown>, Buffer[]][] = [];
      for (const name of order) {
        const map = maps.get(name)!;
        const want = new Map<string, [Buffer, Buffer]>();
        for (const [k, v] of entries[name as keyof MapEntries] as [unknown, unknown][]) {
          const kb = map.key.encode(k, Buffer.alloc(map.key.size));
          want.set(kb.toString('hex'), [kb, map.value.encode(v, Buffer.alloc(map.value.size))]);
        }
        const isArray = map.info.type === 2;
        const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('hex'), v]));
        const changed: [Buffer, Buffer][] = [];
        for (const [hex, [kb, vb]] of want) {
          const cur = have.get(hex);
          if (cur && cur.equals(vb)) continue;
          changed.push([kb, vb]);
        }
        writes += map.setManyRaw(changed);
        const gone: Buffer[] = [];
        for (const [hex, v] of have) {
          if (want.has(hex)) continue;
          if (isArray && v.every((b) => b === 0)) continue;
          gone.push(Buffer.from(hex, 'hex'));
        }
        if (gone.length) stale.push([map, gone]);
      }
      // Removals: the cgroup entries first (last in `order`), so no lookup sees a half-removed policy.
      for (const [map, keys] of stale.reverse()) {
        if (map.info.type === 2) map.setManyRaw(keys.map((k) => [k, Buffer.alloc(map.value.size)]));
        else map.deleteManyRaw(keys);
        deletes += keys.length;
      }
    });
    return {
      writes,
      deletes,
      rejected: conflicts.flatMap((c) =>
        c.policies
          .filter((p) => p !== c.kept)
          .map((p) => ({ name: p.name, file: p.file, message: idConflictMessage(c, p) })),
      ),
      policies: keep.map((p) => {
        const r = res.get(p.name)!;
        return {
          name: p.name,
          slot: slots.get(p.name)!,
          cgroup: p.cgroup,
          resolved: r.cgroup !== null,
          unresolvedBypass: p.bypass.cgroups.filter((_, i) => r.bypass[i] === null),
        };
      }),
    };
  }

  /**
   * The pending-record gauge against the records really in mr_orig. The programs keep the gauge exact
   * (+1 per record added, -1 per record really deleted); only deletions from outside (bpftool) make
   * them disagree, and only a program may change the gauge (a write from here would race theirs).
   */
  pendingDrift(): { gauge: bigint; records: number } {
    return this.withMaps(['mr_gauges', 'mr_orig'], (maps) => ({
      gauge: BigInt.asIntN(64, (maps.get('mr_gauges')! as BpfMap<number, bigint>).get(Gauge.PENDING) ?? 0n),
      records: maps.get('mr_orig')!.rawKeys().length,
    }));
  }

  /** Whether meshredir's pins exist under the bpffs directory. */
  installed(): boolean {
    return existsSync(this.linksDir) || existsSync(this.mapsDir);
  }

  /** Per-slot counters summed over CPUs. */
  stats(): Map<number, Record<StatName, bigint>> {
    return this.withMaps(['mr_stats', 'mr_slots'], (maps) => {
      const out = new Map<number, Record<StatName, bigint>>();
      const slots = [0, ...(maps.get('mr_slots')!.keys() as number[])];
      for (const slot of slots) {
        const per = maps.get('mr_stats')!.getPerCpu(slot) as Record<StatName, bigint>[] | undefined;
        const sum = Object.fromEntries(STAT_FIELDS.map((f) => [f, 0n])) as Record<StatName, bigint>;
        for (const cpu of per ?? []) for (const f of STAT_FIELDS) sum[f] += cpu[f];
        // Per-CPU parts wrap (a gauge is decremented on another CPU than it was incremented on):
        // the sum modulo 2^64 is exact.
        for (const f of STAT_FIELDS) sum[f] = BigInt.asIntN(64, sum[f]);
        out.set(slot, sum);
      }
      return out;
    });
  }

  /** Connections waiting for the proxy's accept (records), and the limit past which connect fails. */
  pending(): { pending: number; limit: number } {
    return this.withMaps(['mr_gauges'], (maps) => {
      const g = maps.get('mr_gauges')! as BpfMap<number, bigint>;
      return {
        pending: Number(BigInt.asIntN(64, g.get(Gauge.PENDING) ?? 0n)),
        limit: Number(g.get(Gauge.LIMIT) ?? 0n),
      };
    });
  }

  /** Entry counts of the maps, for fill levels. */
  fill(): { map: string; entries: number; max: number }[] {
    return this.withMaps(Object.keys(MAPS) as MapName[], (maps) =>
      [...maps.values()]
        .filter((m) => m.info.type !== 2 && m.info.type !== 6)
        .map((m) => ({ map: m.name, entries: m.rawKeys().length, max: m.info.maxEntries })),
    );
  }

  links(): {
    name: string;
    pin: string;
    id?: number;
    progId?: number;
    progTag?: string;
    cgroupId?: string;
    mapId?: number;
    attached: boolean;
    error?: string;
  }[] {
    if (!existsSync(this.linksDir)) return [];
    return readdirSync(this.linksDir)
      .sort()
      .map((name) => {
        const pin = join(this.linksDir, name);
        try {
          const l = Link.open(pin);
          try {
            const i = l.info();
            const tag = progInfoById(i.progId)?.tag;
            if (i.mapId !== undefined)
              return {
                name,
                pin,
                id: i.id,
                progId: i.progId,
                ...(tag ? { progTag: tag } : {}),
                mapId: i.mapId,
                attached: i.mapId !== 0,
              };
            return {
              name,
              pin,
              id: i.id,
              progId: i.progId,
              ...(tag ? { progTag: tag } : {}),
              cgroupId: String(i.cgroupId ?? 0n),
              attached: (i.cgroupId ?? 0n) !== 0n,
            };
          } finally {
            l.close();
          }
        } catch (e) {
          return { name, pin, attached: false, error: (e as Error).message };
        }
      });
  }

  /** Sockets on the fast path now (entries of the pinned sockhash); 0 when it is not pinned. */
  acceleratedSockets(): number {
    if (!existsSync(join(this.mapsDir, 'mr_sockhash'))) return 0;
    const m = this.openMap('mr_sockhash');
    try {
      return m.rawKeys().length;
    } finally {
      m.close();
    }
  }

  /**
   * Detaches every pinned link, removes every pin and the directories. Idempotent.
   *
   * In order: the connect hooks first (nothing new is redirected), then a bounded wait for the
   * handshakes already redirected to be claimed by their proxy's socket (so none reaches the proxy
   * without the record it reads), then the rest. A socket on the fast path keeps it until it closes
   * (the kernel gives each socket its own hold on the sk_msg program and its maps); while such sockets
   * exist, unless `force`, the setsockopt link (which refuses kTLS on them) and the maps they use stay
   * pinned, so that they keep that guard and a restarted agent re-adopts the same maps; another cleanup
   * once they have closed removes the rest.
   */
  cleanup(opts: { force?: boolean; drainMs?: number } = {}): {
    detached: string[];
    unpinned: string[];
    kept: string[];
    openAccelerated: number;
    undrained: number;
  } {
    const out = {
      detached: [] as string[],
      unpinned: [] as string[],
      kept: [] as string[],
      openAccelerated: 0,
      undrained: 0,
    };
    const detach = (name: string) => {
      const pin = join(this.linksDir, name);
      if (!existsSync(pin)) return;
      try {
        const l = Link.open(pin);
        try {
          l.detach();
          out.detached.push(name);
        } finally {
          l.close();
        }
      } catch (e) {
        // A pin that is not a link (or already defunct) is still ours to remove.
        if (!(e instanceof BpfError)) throw e;
      }
      rmSync(pin, { force: true });
      out.unpinned.push(pin);
    };
    for (const name of REDIRECTING) detach(name);
    if (existsSync(join(this.mapsDir, 'mr_gauges'))) {
      const end = Date.now() + (opts.drainMs ?? 5000);
      // A synchronous wait (cleanup is a last step, and callers are synchronous): Atomics.wait sleeps.
      const nap = new Int32Array(new SharedArrayBuffer(4));
      while ((out.undrained = this.pending().pending) > 0 && Date.now() < end) Atomics.wait(nap, 0, 0, 50);
    }
    if (existsSync(this.linksDir))
      for (const name of readdirSync(this.linksDir).filter((n) => n !== 'mr_setsockopt')) detach(name);
    // Counted once nothing can join the fast path any more (sockops is detached).
    out.openAccelerated = this.acceleratedSockets();
    const keep = new Set<string>(
      out.openAccelerated > 0 && !opts.force
        ? [
            join(this.linksDir, 'mr_setsockopt'),
            ...['mr_sockhash', 'mr_sk', 'mr_peers', 'mr_stats'].map((m) => join(this.mapsDir, m)),
          ]
        : [],
    );
    if (existsSync(join(this.linksDir, 'mr_setsockopt'))) {
      if (keep.has(join(this.linksDir, 'mr_setsockopt'))) out.kept.push(join(this.linksDir, 'mr_setsockopt'));
      else detach('mr_setsockopt');
    }
    if (existsSync(this.mapsDir)) {
      for (const name of readdirSync(this.mapsDir)) {
        const pin = join(this.mapsDir, name);
        if (keep.has(pin)) {
          out.kept.push(pin);
          continue;
        }
        rmSync(pin, { force: true });
        out.unpinned.push(pin);
      }
    }
    for (const d of [this.linksDir, this.mapsDir, this.cfg.bpffs]) {
      try {
        if (existsSync(d) && statSync(d).isDirectory() && readdirSync(d).length === 0) rmdirSync(d);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw e;
      }
    }
    const foreign = [this.linksDir, this.mapsDir, this.cfg.bpffs].filter(
      (d) => existsSync(d) && readdirSync(d).some((n) => !keep.has(join(d, n)) && n !== 'links' && n !== 'maps'),
    );
    if (foreign.length) throw new Error(`${foreign.join(', ')} hold files meshredir did not make; left in place`);
    return out;
  }
}
