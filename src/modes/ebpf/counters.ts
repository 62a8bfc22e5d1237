// counters.ts — what the eBPF programs count and keep, read from the pins: per-policy counters summed
// over CPUs, the handshakes in flight against their limit, map fill levels, and whether the fast path
// can be used here; the drift watch (the gauge against the records).
import type { BpfMap } from '../../bpf/map.js';
import { MapType } from '../../bpf/fd.js';
import { kernelHasMember } from '../../bpf/btf.js';
import {
  DNS_STAT_FIELDS,
  Gauge,
  MAPS,
  INBOUND_MAPS,
  STAT_FIELDS,
  type DnsStatName,
  type StatName,
} from '../../bpf/abi.js';
import type { AnyMapName, Pins } from './pins.js';
import type { Note } from '../mode.js';
import { slotPending } from './records.js';

export type Counters = Record<StatName, bigint>;
export type DnsCounters = Record<DnsStatName, bigint>;

/** The per-CPU arrays of per-slot counters, with their fields. */
const STAT_MAPS = { mr_stats: STAT_FIELDS, mr_dns_stats: DNS_STAT_FIELDS } as const;

/** Per-slot counters of one of the counter maps, summed over CPUs (slot 0: events not tied to a policy). */
function perSlot<F extends string>(
  pins: Pins,
  map: keyof typeof STAT_MAPS,
  fields: readonly F[],
): Map<number, Record<F, bigint>> {
  return pins.withMaps([map, 'mr_slots'], (maps) => {
    const out = new Map<number, Record<F, bigint>>();
    const slots = [0, ...(maps.get('mr_slots')!.keys() as number[])];
    for (const slot of slots) {
      const per = maps.get(map)!.getPerCpu(slot) as Record<F, bigint>[] | undefined;
      const sum = Object.fromEntries(fields.map((f) => [f, 0n])) as Record<F, bigint>;
      for (const cpu of per ?? []) for (const f of fields) sum[f] += cpu[f];
      // Per-CPU parts wrap (a gauge is decremented on another CPU than it was incremented on): the sum
      // modulo 2^64 is exact.
      for (const f of fields) sum[f] = BigInt.asIntN(64, sum[f]);
      out.set(slot, sum);
    }
    return out;
  });
}

/** Per-slot counters of the outbound programs (mr_stats). */
export function stats(pins: Pins): Map<number, Counters> {
  return perSlot(pins, 'mr_stats', STAT_FIELDS);
}

/** Per-slot counters of DNS capture (mr_dns_stats); none where that map is not pinned. */
export function dnsStats(pins: Pins): Map<number, DnsCounters> {
  return pins.has('mr_dns_stats') ? perSlot(pins, 'mr_dns_stats', DNS_STAT_FIELDS) : new Map();
}

/**
 * Zeroes the counters of every slot that `slots` gives to another policy than mr_slots says holds it now
 * (slots are reused, lowest free first): a policy's counters start at zero, never at those of the policy
 * that had its slot before. Called before the policy's entries are written, so no connection of the new
 * policy is counted yet.
 */
export function resetReassigned(pins: Pins, slots: Map<string, number>): number[] {
  if (!pins.has('mr_slots') || !pins.has('mr_stats')) return [];
  const owner = new Map([...pins.slots()].map(([name, slot]) => [slot, name]));
  const moved = [...slots].filter(([name, slot]) => owner.get(slot) !== name).map(([, slot]) => slot);
  if (moved.length === 0) return [];
  for (const [map, fields] of Object.entries(STAT_MAPS) as [keyof typeof STAT_MAPS, readonly string[]][]) {
    if (!pins.has(map)) continue;
    const zero = Object.fromEntries(fields.map((f) => [f, 0n]));
    pins.withMaps([map], (maps) => {
      for (const slot of moved) maps.get(map)!.set(slot, zero);
    });
  }
  return moved;
}

/** Connections waiting for the proxy's accept (records), and the limit past which connect fails. */
export function pending(pins: Pins): { pending: number; limit: number } {
  return pins.withMaps(['mr_gauges'], (maps) => {
    const g = maps.get('mr_gauges')! as BpfMap<number, bigint>;
    return { pending: Number(BigInt.asIntN(64, g.get(Gauge.PENDING) ?? 0n)), limit: Number(g.get(Gauge.LIMIT) ?? 0n) };
  });
}

/** Per policy slot: its handshakes in flight now (mr_pending) and its budget (mr_policies.pending_max);
 * empty where mr_pending is not pinned (an installation made before it existed). */
export function pendingBySlot(pins: Pins): Map<number, { now: number; limit: number }> {
  if (!pins.has('mr_pending')) return new Map();
  return pins.withMaps(['mr_pending', 'mr_policies', 'mr_slots'], (maps) =>
    slotPending(maps.get('mr_pending')!, maps.get('mr_policies')!, maps.get('mr_slots')!.keys() as number[]),
  );
}

/**
 * The pending-record gauge against the records really in mr_orig. The programs keep the gauge exact
 * (+1 per record added, -1 per record really deleted); only deletions from outside (bpftool) make them
 * disagree, and only a program may change the gauge (a write from here would race theirs).
 */
export function pendingDrift(pins: Pins): { gauge: bigint; records: number } {
  return pins.withMaps(['mr_gauges', 'mr_orig'], (maps) => ({
    gauge: BigInt.asIntN(64, (maps.get('mr_gauges')! as BpfMap<number, bigint>).get(Gauge.PENDING) ?? 0n),
    records: maps.get('mr_orig')!.count(),
  }));
}

/** Entry counts of the maps that have entries (not arrays), for fill levels: those pinned (the fast path's
 * are absent where it cannot load). */
export function fill(pins: Pins): { map: string; entries: number; max: number }[] {
  // Those pinned: the fast path's are absent where it cannot load, and the inbound maps of an install that
  // predates them are not pinned until its next load.
  const names = ([...Object.keys(MAPS), ...Object.keys(INBOUND_MAPS)] as AnyMapName[]).filter((n) => pins.has(n));
  return pins.withMaps(names, (maps) =>
    [...maps.values()]
      .filter((m) => m.info.type !== MapType.ARRAY && m.info.type !== MapType.PERCPU_ARRAY)
      .map((m) => ({ map: m.name, entries: m.count(), max: m.info.maxEntries })),
  );
}

/**
 * Whether `accelerate` can be applied here, and if not why: the sk_msg program is attached (sk_msg links:
 * kernel >= 6.10) and the kernel lets it see a peer's unread fast-path bytes (the psock's msg_tot_len, its
 * only flow control; without it a slow reader would let a sender queue without bound).
 */
export function fastPath(pins: Pins): { usable: boolean; why?: string } {
  if (!pins.links().some((l) => l.name === 'mr_skmsg' && l.attached)) {
    return { usable: false, why: 'no sk_msg link (kernel < 6.10, or not attached)' };
  }
  if (!psockQueueLen()) {
    return {
      usable: false,
      why: "the kernel's psock has no msg_tot_len: the fast path could not bound a slow reader's queue",
    };
  }
  return { usable: true };
}

let queueLen: boolean | undefined;
/** Whether the kernel's psock counts unread fast-path bytes: read from its BTF once (~15 ms a read; it
 * cannot change while we run, and every plan and scrape asks). */
function psockQueueLen(): boolean {
  queueLen ??= kernelHasMember('sk_psock', 'msg_tot_len') === true;
  return queueLen;
}

/** The handshakes-in-flight gauge against the records in mr_orig, at each apply. Records come and go
 * between the two reads: only a gap seen twice in a row is reported. */
export class DriftWatch {
  private last = 0n;

  notes(pins: Pins): Note[] {
    const drift = pendingDrift(pins);
    const gap = drift.gauge - BigInt(drift.records);
    const seen = gap !== 0n && this.last === gap;
    this.last = gap;
    if (!seen) return [];
    return [
      {
        level: 'error',
        event: 'drift',
        message: `the count of handshakes in flight (${drift.gauge}) disagrees with the records in mr_orig (${drift.records}): records were deleted from outside; connects are refused past --max-connections by that count until 'meshredir cleanup' and a restart`,
        fields: { map: 'mr_gauges', gauge: String(drift.gauge), records: drift.records },
      },
    ];
  }
}
