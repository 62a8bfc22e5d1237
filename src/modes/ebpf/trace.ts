// trace.ts — a live trace of the programs' decisions (docs/trace.md): takes the lease in mr_trace_ctl (the
// programs write to mr_trace_ring only while a lease is live), renews it, reads the ring, and gives the
// lease back when it stops. One tracer per installation: the ring has one consumer position.
import { BpfMap } from '../../bpf/map.js';
import { BpfError } from '../../bpf/errors.js';
import { closeFd, openPinned } from '../../bpf/fd.js';
import { TRACE_RING, TraceFilter, traceCpu, traceCtl, u32, type TraceEvent } from '../../bpf/abi.js';
import { ringBuffer, errno } from '../../sys/libbpf.js';
import { cgroupId, cgroupPathOf, resolveCgroupArg } from '../../util/host.js';
import { cgroupPathById } from '../../util/cgroups.js';
import { decodeEvent, describe, type Naming, type TraceRecord } from './trace-event.js';
import type { Pins } from './pins.js';

/** How long a lease lasts without renewal: a tracer that died stops the events this long after. */
export const LEASE_MS = 5000;
const RENEW_MS = 1000;
const READ_MS = 100;

export interface TraceFilters {
  policy?: string;
  cgroup?: string;
  pid?: number;
}

type Ctl = ReturnType<typeof traceCtl.decode>;
const monoNs = (): bigint => process.hrtime.bigint(); // CLOCK_MONOTONIC, as bpf_ktime_get_ns()
const OFF: Ctl = {
  on: 0,
  filters: 0,
  expires_ns: 0n,
  cgroup_id: 0n,
  cgroup_level: 0,
  slot: 0,
  pid: 0,
  tracer: 0,
};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Whether the lease in `c` is held by a live tracer (not lapsed, its process there). */
export function leaseLive(c: Ctl, now = monoNs()): boolean {
  return c.on !== 0 && c.expires_ns > now && c.tracer !== 0 && alive(c.tracer);
}

function openCtl(pins: Pins): BpfMap<number, Ctl> {
  return BpfMap.open(pins.mapPin('mr_trace_ctl'), 'mr_trace_ctl', u32, traceCtl);
}

/**
 * Clears a lease that lapsed (its tracer was killed before it could give it back): the programs already
 * stopped emitting when it lapsed, and now stop looking at the clock too. The agent calls this at every
 * pass. By the expiry alone, not the tracer's pid: a tracer in another pid namespace than the agent's would
 * look dead. True if cleared.
 */
export function clearLapsedLease(pins: Pins): boolean {
  if (!pins.has('mr_trace_ctl')) return false;
  const m = openCtl(pins);
  try {
    const c = m.get(0);
    if (!c || c.on === 0 || c.expires_ns > monoNs()) return false;
    m.set(0, OFF);
    return true;
  } finally {
    m.close();
  }
}

/** The trace's state for status: who holds the lease, and the programs' counters summed over CPUs. */
export function traceState(pins: Pins): { tracer: number | null; emitted: bigint; lost: bigint } | null {
  if (!pins.has('mr_trace_ctl') || !pins.has('mr_trace_cpu')) return null;
  const c = pins.withMaps(['mr_trace_ctl'], (m) => m.get('mr_trace_ctl')!.get(0) as Ctl | undefined);
  return { tracer: c && leaseLive(c) ? c.tracer : null, ...cpuCounters(pins) };
}

function cpuCounters(pins: Pins): { emitted: bigint; lost: bigint } {
  return pins.withMaps(['mr_trace_cpu'], (m) => sumCpu(m.get('mr_trace_cpu')! as BpfMap<number, Cpu>));
}

type Cpu = ReturnType<typeof traceCpu.decode>;
function sumCpu(m: BpfMap<number, Cpu>): { emitted: bigint; lost: bigint } {
  const per = m.getPerCpu(0) as Cpu[] | undefined;
  let emitted = 0n;
  let lost = 0n;
  for (const c of per ?? []) {
    emitted += c.emitted;
    lost += c.lost;
  }
  return { emitted, lost };
}

export interface TraceSession {
  /** Why the trace cannot go on (its maps were unpinned: cleanup, or a new load), or null. */
  gone(): string | null;
  /** Events the programs could not write since this trace started (the ring was full). */
  lost(): bigint;
  /** Why the lease was lost (this tracer was stopped past its expiry and another took it), or null. */
  leaseLost(): string | null;
  /** Gives the lease back, reads what is left in the ring, releases everything. Idempotent. */
  stop(): { events: number; lost: bigint };
}

/**
 * Starts a trace: every decision that passes the filters is described and handed to `onRecord`. Throws
 * when the installation has no trace maps (an agent from before trace) or another tracer holds the lease.
 */
export function startTrace(pins: Pins, filters: TraceFilters, onRecord: (r: TraceRecord, ev: TraceEvent) => void) {
  if (!pins.installed())
    throw new Error(`meshredir is not installed under ${pins.bpffs} (no pins): is the agent running?`);
  for (const m of ['mr_trace_ctl', 'mr_trace_cpu', TRACE_RING])
    if (!pins.has(m))
      throw new Error(
        `${pins.mapPin(m)} is not pinned: the installed programs predate trace; restart the agent with this version`,
      );
  let slots = pins.slots();
  const ctl: { -readonly [K in keyof Ctl]: Ctl[K] } = { ...OFF, on: 1, tracer: process.pid };
  if (filters.policy !== undefined) {
    const slot = slots.get(filters.policy);
    if (slot === undefined) throw new Error(`no policy named ${filters.policy} is applied (mr_slots)`);
    ctl.filters |= TraceFilter.SLOT;
    ctl.slot = slot;
  }
  if (filters.cgroup !== undefined) {
    const dir = resolveCgroupArg(filters.cgroup);
    const path = cgroupPathOf(dir);
    ctl.filters |= TraceFilter.CGROUP;
    ctl.cgroup_id = cgroupId(dir)!;
    ctl.cgroup_level = path === '/' ? 0 : path.split('/').length - 1;
  }
  if (filters.pid !== undefined) {
    ctl.filters |= TraceFilter.PID;
    ctl.pid = filters.pid;
  }

  const ctlMap = openCtl(pins);
  const cur = ctlMap.get(0);
  if (cur && leaseLive(cur) && cur.tracer !== process.pid) {
    ctlMap.close();
    throw new Error(`another trace is running (pid ${cur.tracer}): the ring buffer has one reader`);
  }
  // Held open for the whole trace: pins can be removed under it (cleanup), the maps stay readable.
  const cpuMap = BpfMap.open(pins.mapPin('mr_trace_cpu'), 'mr_trace_cpu', u32, traceCpu);
  const base = sumCpu(cpuMap);
  const cgroups = new Map<bigint, string | null>();
  let slotsAt = Date.now();
  const offsetMs = Date.now() - Number(monoNs()) / 1e6;
  const names: Naming = {
    policy: (slot) => {
      let n = [...slots].find(([, s]) => s === slot)?.[0];
      if (n === undefined && Date.now() - slotsAt > 1000) {
        slots = pins.slots();
        slotsAt = Date.now();
        n = [...slots].find(([, s]) => s === slot)?.[0];
      }
      return n ?? null;
    },
    cgroup: (id) => {
      if (!cgroups.has(id)) cgroups.set(id, cgroupPathById(id));
      return cgroups.get(id)!;
    },
    wallMs: (ns) => offsetMs + Number(ns) / 1e6,
  };
  let events = 0;
  const ringFd = openPinned(pins.mapPin(TRACE_RING), `open the trace ring ${pins.mapPin(TRACE_RING)}`);
  let failed: unknown = null;
  const since = monoNs();
  const ring = ringBuffer(ringFd, (data) => {
    // Called from inside libbpf: an exception must not unwind through C; it is rethrown after consume.
    try {
      const ev = decodeEvent(data);
      // Records a tracer killed earlier left unread (written before its lease lapsed) are not this trace's.
      if (ev.ts_ns < since) return;
      events++;
      onRecord(describe(ev, names), ev);
    } catch (e) {
      failed ??= e;
    }
  });
  if (!ring) {
    closeFd(ringFd);
    ctlMap.close();
    cpuMap.close();
    throw new BpfError(`read the trace ring ${pins.mapPin(TRACE_RING)}`, 'ring_buffer__new', -errno());
  }
  let taken: string | null = null;
  const renew = () => {
    // Stopped (SIGSTOP) past the expiry, this tracer may find another holding the lease: it must not
    // overwrite that one's filters, and its own events are gone.
    const now = ctlMap.get(0);
    if (now && now.on !== 0 && now.tracer !== process.pid && now.tracer !== 0) {
      taken ??= `the trace lease was taken by pid ${now.tracer} while this trace was not renewing it`;
      return;
    }
    ctlMap.set(0, { ...ctl, expires_ns: monoNs() + BigInt(LEASE_MS) * 1_000_000n });
  };
  ctlMap.set(0, { ...ctl, expires_ns: monoNs() + BigInt(LEASE_MS) * 1_000_000n });
  const read = () => {
    const r = ring.consume();
    if (failed) throw failed;
    if (r < 0) throw new BpfError('read the trace ring', 'ring_buffer__consume', r);
  };
  const timers = [setInterval(renew, RENEW_MS), setInterval(read, READ_MS)];
  let done: { events: number; lost: bigint } | null = null;
  const lost = () => (done ? done.lost : sumCpu(cpuMap).lost - base.lost);
  const ctlId = ctlMap.info.id;
  const ringId = pins.mapIds().get(TRACE_RING);
  return {
    lost,
    leaseLost: () => taken,
    gone: () => {
      const ids = pins.mapIds();
      return ids.get('mr_trace_ctl') === ctlId && ids.get(TRACE_RING) === ringId
        ? null
        : `the trace maps under ${pins.bpffs} were removed or replaced (meshredir cleanup, or the programs loaded anew)`;
    },
    stop() {
      if (done) return done;
      done = { events, lost: 0n };
      for (const t of timers) clearInterval(t);
      try {
        const now = ctlMap.get(0);
        if (now && now.tracer === process.pid) ctlMap.set(0, OFF);
        read(); // what the programs wrote before the lease ended
        done.lost = sumCpu(cpuMap).lost - base.lost;
      } finally {
        done.events = events;
        ring.free();
        closeFd(ringFd);
        ctlMap.close();
        cpuMap.close();
      }
      return done;
    },
  } satisfies TraceSession;
}
