// trace-event.ts — what one mr_trace_ring record says, for people and for --json: the decision and its
// reason under the metric's own names (an event's reason is the counter its decision incremented), the
// original destination and where the connection went. Pure: unit-tested without a kernel.
import {
  AF_INET,
  AF_INET6,
  DNS_STAT_FIELDS,
  IN_STAT_FIELDS,
  STAT_FIELDS,
  TraceHook,
  TraceTable,
  TraceVerdict,
  traceEvent,
  type TraceEvent,
} from '../../bpf/abi.js';
import { DNS_STAT_METRICS, IN_STAT_METRICS, STAT_METRICS, type StatMetric } from './stat-metrics.js';

export type Decision = 'redirect' | 'bypass' | 'refuse' | 'served' | 'relabel' | 'unknown';

/** One decision as `trace` prints it (one JSON object per line with --json). */
export interface TraceRecord {
  time: string;
  pid: number;
  comm: string;
  cgroup: string;
  cgroupId: string;
  policy: string | null;
  slot: number;
  hook: 'connect4' | 'connect6' | 'getsockopt' | 'sendmsg4' | 'sendmsg6' | 'recvmsg4' | 'recvmsg6' | 'sk_lookup';
  decision: Decision;
  /** The metric's label value (`reason`, `kind` or `call`), or the counter's name when its metric has none. */
  reason: string;
  /** The metric the decision was counted in, e.g. meshredir_connections_bypassed_total. */
  metric: string | null;
  /** The connect: the destination as the application gave it; getsockopt: the original destination answered;
   * recvmsg: the reply's real source (the DNS proxy). */
  original: string | null;
  /** The connect: where the connection went; getsockopt: the proxy socket's own address; recvmsg: the source
   * the application is shown (the nameserver its query was sent to). */
  to: string | null;
  /** sk_lookup (inbound): the client's address and port; null for the other hooks. */
  from: string | null;
  cookie: string;
}

const HOOKS: Record<number, TraceRecord['hook']> = {
  [TraceHook.CONNECT4]: 'connect4',
  [TraceHook.CONNECT6]: 'connect6',
  [TraceHook.GETSOCKOPT]: 'getsockopt',
  [TraceHook.SENDMSG4]: 'sendmsg4',
  [TraceHook.SENDMSG6]: 'sendmsg6',
  [TraceHook.RECVMSG4]: 'recvmsg4',
  [TraceHook.RECVMSG6]: 'recvmsg6',
  [TraceHook.SKLOOKUP]: 'sk_lookup',
};
const DECISIONS: Record<number, Decision> = {
  [TraceVerdict.PASS]: 'bypass',
  [TraceVerdict.REDIRECT]: 'redirect',
  [TraceVerdict.REFUSE]: 'refuse',
  [TraceVerdict.ANSWER]: 'served',
  [TraceVerdict.UNKNOWN]: 'unknown',
  [TraceVerdict.RELABEL]: 'relabel',
};

export function decodeEvent(buf: Buffer): TraceEvent {
  if (buf.length < traceEvent.size) throw new Error(`trace record of ${buf.length} bytes, ${traceEvent.size} expected`);
  return traceEvent.decode(buf);
}

/** The counter an event names, with its metric: null when the run's note was lost (table 0). */
export function counterOf(ev: Pick<TraceEvent, 'table' | 'field'>): { counter: string; metric: StatMetric } | null {
  if (ev.table === TraceTable.STATS) {
    const c = STAT_FIELDS[ev.field];
    return c ? { counter: c, metric: STAT_METRICS[c] } : null;
  }
  if (ev.table === TraceTable.DNS) {
    const c = DNS_STAT_FIELDS[ev.field];
    return c ? { counter: `dns_${c}`, metric: DNS_STAT_METRICS[c] } : null;
  }
  if (ev.table === TraceTable.INBOUND) {
    const c = IN_STAT_FIELDS[ev.field];
    return c ? { counter: `inbound_${c}`, metric: IN_STAT_METRICS[c] } : null;
  }
  return null;
}

/** An address and port: 10.0.0.7:8080, [2001:db8::1]:443; null for none (family 0). */
export function endpoint(family: number, addr: Buffer, port: number): string | null {
  if (family === AF_INET) return `${[...addr.subarray(0, 4)].join('.')}:${port}`;
  if (family !== AF_INET6) return null;
  if (addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff && addr[11] === 0xff)
    return `[::ffff:${[...addr.subarray(12, 16)].join('.')}]:${port}`;
  const groups = Array.from({ length: 8 }, (_, i) => addr.readUInt16BE(i * 2).toString(16));
  // The longest run of two or more zero groups becomes "::" (RFC 5952).
  let best = { at: -1, len: 1 };
  for (let i = 0; i < 8;) {
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > best.len) best = { at: i, len: j - i };
    i = j === i ? i + 1 : j;
  }
  const text =
    best.at < 0
      ? groups.join(':')
      : `${groups.slice(0, best.at).join(':')}::${groups.slice(best.at + best.len).join(':')}`;
  return `[${text}]:${port}`;
}

export interface Naming {
  /** Policy name of a slot (mr_slots). */
  policy(slot: number): string | null;
  /** Cgroup path of an id ("/pods/a"), or null when it is gone. */
  cgroup(id: bigint): string | null;
  /** Wall-clock milliseconds of a bpf_ktime_get_ns() (CLOCK_MONOTONIC) value. */
  wallMs(monoNs: bigint): number;
}

export function describe(ev: TraceEvent, names: Naming): TraceRecord {
  const c = counterOf(ev);
  const labels = c?.metric.labels ?? {};
  const label = labels.reason ?? labels.kind ?? labels.call ?? labels.action;
  // sk_lookup runs for a packet, outside any process: no pid, comm or cgroup (all 0 in the event).
  const inbound = ev.hook === TraceHook.SKLOOKUP;
  return {
    time: new Date(names.wallMs(ev.ts_ns)).toISOString(),
    pid: ev.pid,
    comm: ev.comm.toString('utf8').replace(/\0.*$/s, ''),
    cgroup: inbound ? '-' : (names.cgroup(ev.cgroup_id) ?? `id ${ev.cgroup_id}`),
    cgroupId: String(ev.cgroup_id),
    policy: ev.slot === 0 ? null : names.policy(ev.slot),
    slot: ev.slot,
    hook: HOOKS[ev.hook] ?? 'connect4',
    decision: DECISIONS[ev.verdict] ?? 'unknown',
    reason: c ? (label ?? c.counter) : 'unknown',
    metric: c?.metric.family.name ?? null,
    original: endpoint(ev.family, ev.addr, ev.port),
    to: endpoint(ev.to_family, ev.to_addr, ev.to_port),
    from: inbound ? endpoint(ev.family, ev.from_addr, ev.from_port) : null,
    cookie: String(ev.cookie),
  };
}

/** One line for people: time, process, cgroup, policy, hook, original destination, decision and where. */
export function formatLine(r: TraceRecord): string {
  const t = r.time.slice(11, 23);
  const where =
    r.hook === 'getsockopt'
      ? `${r.decision === 'served' ? `answered ${r.original ?? '?'}` : 'unknown connection'} on ${r.to ?? '?'}`
      : r.decision === 'relabel'
        ? `reply from ${r.original ?? '?'} shown as from ${r.to ?? '?'}`
        : r.hook === 'sk_lookup'
          ? `${r.from ?? '?'} → ${r.original ?? '?'} ${r.decision === 'redirect' ? `→ ${r.to}` : r.decision === 'refuse' ? '✗ dropped' : 'direct'}`
          : `${r.original ?? '?'} ${r.decision === 'redirect' ? `→ ${r.to}` : r.decision === 'refuse' ? '✗ EPERM' : 'direct'}`;
  return `${t} ${r.pid} ${r.comm} ${r.cgroup} ${r.policy ?? '-'} ${r.hook} ${r.decision}(${r.reason}) ${where}`;
}
