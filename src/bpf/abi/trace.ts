// abi/trace.ts — the trace's enums, control and event codecs and maps (bpf/mr_trace.h, docs/trace.md).
import { struct, u32 } from '../codec.js';
import { cEnum } from './enum.js';

/** Bits of mr_trace_ctl.filters: the filters the programs apply before reserving an event. */
export const TraceFilter = cEnum('mr_trace_filter', 'MR_TRACE_F_', { SLOT: 1 << 0, CGROUP: 1 << 1, PID: 1 << 2 });
export const TraceHook = cEnum('mr_trace_hook', 'MR_TRACE_H_', {
  CONNECT4: 1,
  CONNECT6: 2,
  GETSOCKOPT: 3,
  SENDMSG4: 4,
  SENDMSG6: 5,
  RECVMSG4: 6,
  RECVMSG6: 7,
  SKLOOKUP: 8,
});
export const TraceVerdict = cEnum('mr_trace_verdict', 'MR_TRACE_V_', {
  PASS: 1,
  REDIRECT: 2,
  REFUSE: 3,
  ANSWER: 4,
  UNKNOWN: 5,
  RELABEL: 6,
});
/** Which counter struct an event's `field` indexes (its reason): STAT_FIELDS, DNS_STAT_FIELDS or IN_STAT_FIELDS. */
export const TraceTable = cEnum('mr_trace_table', 'MR_TRACE_T_', { STATS: 1, DNS: 2, INBOUND: 3 });
export const traceCtl = struct('mr_trace_ctl', {
  on: 'u32',
  filters: 'u32',
  expires_ns: 'u64',
  cgroup_id: 'u64',
  cgroup_level: 'u32',
  slot: 'u32',
  pid: 'u32',
  tracer: 'u32',
});
export const traceCpu = struct('mr_trace_cpu', {
  emitted: 'u64',
  lost: 'u64',
  owner: 'u64',
  armed: 'u32',
  slot: 'u32',
  table: 'u8',
  field: 'u8',
  pad: { bytes: 6 },
});
export const traceEvent = struct('mr_trace_event', {
  ts_ns: 'u64',
  cgroup_id: 'u64',
  cookie: 'u64',
  pid: 'u32',
  slot: 'u32',
  hook: 'u8',
  verdict: 'u8',
  table: 'u8',
  field: 'u8',
  family: 'u8',
  to_family: 'u8',
  port: 'be16',
  to_port: 'be16',
  from_port: 'be16',
  addr: { bytes: 16 },
  to_addr: { bytes: 16 },
  from_addr: { bytes: 16 },
  comm: { bytes: 16 },
  pad2: 'u32',
});
export type TraceEvent = ReturnType<typeof traceEvent.decode>;
/** The trace's maps with codecs (in MAPS, so the agent pins and re-adopts them); the ring buffer
 * mr_trace_ring has no entries to type and is pinned beside them (pins.ts: ALL_MAPS). */
export const TRACE_MAPS = {
  mr_trace_ctl: { key: u32, value: traceCtl },
  mr_trace_cpu: { key: u32, value: traceCpu },
} as const;
export const TRACE_RING = 'mr_trace_ring';

export const TRACE_CODECS = [traceCtl, traceCpu, traceEvent];
