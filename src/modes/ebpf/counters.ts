// counters.ts — what the eBPF programs count and keep, read from the pins: per-policy counters summed
// over CPUs, the handshakes in flight against their limit, map fill levels, and whether the fast path
// can be used here.
import type { BpfMap } from '../../bpf/map.js';
import { MapType } from '../../bpf/fd.js';
import { kernelHasMember } from '../../bpf/btf.js';
import { Gauge, MAPS, INBOUND_MAPS, STAT_FIELDS, type StatName } from '../../bpf/abi.js';
import type { AnyMapName, Pins } from './pins.js';

export type Counters = Record<StatName, bigint>;

/** Per-slot counters summed over CPUs (slot 0: events not tied to a policy). */
export function stats(pins: Pins): Map<number, Counters> {
  return pins.withMaps(['mr_stats', 'mr_slots'], (maps) => {
    const out = new Map<number, Counters>();
    const slots = [0, ...(maps.get('mr_slots')!.keys() as number[])];
    for (const slot of slots) {
      const per = maps.get('mr_stats')!.getPerCpu(slot) as Counters[] | undefined;
      const sum = Object.fromEntries(STAT_FIELDS.map((f) => [f, 0n])) as Counters;
      for (const cpu of per ?? []) for (const f of STAT_FIELDS) sum[f] += cpu[f];
      // Per-CPU parts wrap (a gauge is decremented on another CPU than it was incremented on): the sum
      // modulo 2^64 is exact.
      for (const f of STAT_FIELDS) sum[f] = BigInt.asIntN(64, sum[f]);
      out.set(slot, sum);
    }
    return out;
  });
}

/** Connections waiting for the proxy's accept (records), and the limit past which connect fails. */
export function pending(pins: Pins): { pending: number; limit: number } {
  return pins.withMaps(['mr_gauges'], (maps) => {
    const g = maps.get('mr_gauges')! as BpfMap<number, bigint>;
    return { pending: Number(BigInt.asIntN(64, g.get(Gauge.PENDING) ?? 0n)), limit: Number(g.get(Gauge.LIMIT) ?? 0n) };
  });
}

/**
 * The pending-record gauge against the records really in mr_orig. The programs keep the gauge exact
 * (+1 per record added, -1 per record really deleted); only deletions from outside (bpftool) make them
 * disagree, and only a program may change the gauge (a write from here would race theirs).
 */
export function pendingDrift(pins: Pins): { gauge: bigint; records: number } {
  return pins.withMaps(['mr_gauges', 'mr_orig'], (maps) => ({
    gauge: BigInt.asIntN(64, (maps.get('mr_gauges')! as BpfMap<number, bigint>).get(Gauge.PENDING) ?? 0n),
    records: maps.get('mr_orig')!.rawKeys().length,
  }));
}

/** Entry counts of the maps that have entries (not arrays), for fill levels. */
export function fill(pins: Pins): { map: string; entries: number; max: number }[] {
  // The inbound maps of an install that predates them are not pinned yet (until its next load).
  const inbound = (Object.keys(INBOUND_MAPS) as AnyMapName[]).filter((n) => pins.has(n));
  return pins.withMaps([...(Object.keys(MAPS) as AnyMapName[]), ...inbound], (maps) =>
    [...maps.values()]
      .filter((m) => m.info.type !== MapType.ARRAY && m.info.type !== MapType.PERCPU_ARRAY)
      .map((m) => ({ map: m.name, entries: m.rawKeys().length, max: m.info.maxEntries })),
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
  if (kernelHasMember('sk_psock', 'msg_tot_len') !== true) {
    return {
      usable: false,
      why: "the kernel's psock has no msg_tot_len: the fast path could not bound a slow reader's queue",
    };
  }
  return { usable: true };
}
