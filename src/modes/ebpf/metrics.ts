// metrics.ts — the eBPF mode's metrics, read from the pins at scrape time: per-policy counters (mr_stats,
// summed over CPUs), handshakes in flight against their limit, map entries and capacity, which links are
// attached, whether the fast path is usable. STAT_METRICS names the metric of every field of struct
// mr_stats, DNS_STAT_METRICS of struct mr_dns_stats: a field added to abi.ts's STAT_FIELDS or
// DNS_STAT_FIELDS is one line here (the compiler insists); IN_STAT_METRICS likewise for struct mr_in_stats
// (inbound), with whether each policy's proxy listener is registered.
import { REDIRECTING, REDIRECT_NEEDS, type DnsStatName, type InStatName, type StatName } from '../../bpf/abi.js';
import type { Readiness } from '../mode.js';
import { COMMON, Families, type FamilyDef, type Labels, type MetricFamily } from '../metrics.js';
import {
  stats,
  dnsStats,
  pending,
  pendingBySlot,
  fill,
  fastPath,
  type Counters,
  type DnsCounters,
} from './counters.js';
import type { Pins } from './pins.js';
import { inboundPolicies } from './inbound-status.js';

export interface StatMetric {
  family: FamilyDef;
  /** Labels of this field within its family (besides `policy`). */
  labels?: Labels;
  /** 'node': counted in slot 0 (tied to no policy), exposed without a policy label. */
  scope?: 'node';
}

const f = (
  name: string,
  help: string,
  labelNames: string[] = [],
  type: 'counter' | 'gauge' = 'counter',
): FamilyDef => ({
  name,
  type,
  help,
  labelNames: ['policy', ...labelNames],
});
const REFUSED = f(
  'meshredir_connections_refused_total',
  'connect() calls of the policy refused (EPERM, fail closed) instead of redirected without a record, by reason.',
  ['reason'],
);
const ERRORS = f('meshredir_errors_total', 'Failures of the BPF programs for connections of the policy, by kind.', [
  'kind',
]);
const FP_MESSAGES = f(
  'meshredir_fastpath_messages_total',
  'Messages of fast-path sockets: sent straight to the peer socket (path="fast") or by TCP (path="tcp": a detour, while the peer is missing, behind, or has unread TCP bytes).',
  ['path'],
);
const FP_SKIPPED = f(
  'meshredir_fastpath_skipped_total',
  'Application sockets of an accelerated policy left on TCP, by reason.',
  ['reason'],
);

export const STAT_METRICS: Record<StatName, StatMetric> = {
  redirected: { family: COMMON.redirected },
  bypass_cgroup: { family: COMMON.bypassed, labels: { reason: 'proxy_cgroup' } },
  bypass_owner: { family: COMMON.bypassed, labels: { reason: 'owner' } },
  bypass_mark: { family: COMMON.bypassed, labels: { reason: 'mark' } },
  bypass_port: { family: COMMON.bypassed, labels: { reason: 'port' } },
  bypass_cidr: { family: COMMON.bypassed, labels: { reason: 'cidr' } },
  bypass_loopback: { family: COMMON.bypassed, labels: { reason: 'loopback' } },
  bypass_family: { family: COMMON.bypassed, labels: { reason: 'no_proxy_for_family' } },
  bypass_proxy: { family: COMMON.bypassed, labels: { reason: 'destination_is_proxy' } },
  err_storage: { family: REFUSED, labels: { reason: 'no_socket_storage' } },
  err_full: { family: REFUSED, labels: { reason: 'table_full' } },
  err_netns: { family: REFUSED, labels: { reason: 'wrong_netns' } },
  err_orig: { family: ERRORS, labels: { kind: 'record_not_published' } },
  err_conflict: { family: ERRORS, labels: { kind: 'record_conflict' } },
  established: {
    family: f('meshredir_connections_established_total', 'Redirected connections whose handshake completed.'),
  },
  origdst_served: {
    family: f(
      'meshredir_original_destinations_served_total',
      "SO_ORIGINAL_DST (IPv4) and IP6T_SO_ORIGINAL_DST (IPv6) answered from meshredir's records on the proxy's sockets.",
    ),
  },
  origdst_denied: {
    family: f(
      'meshredir_original_destinations_denied_total',
      "SO_ORIGINAL_DST asked, or a record claimed at the handshake, by a socket outside the policy's bypass cgroups (left to the kernel's answer).",
    ),
  },
  origdst_unknown: {
    scope: 'node',
    family: {
      name: 'meshredir_original_destinations_unknown_total',
      type: 'counter',
      help: 'SO_ORIGINAL_DST asked on a socket meshredir did not redirect (the answer is left to the kernel).',
      labelNames: [],
    },
  },
  guard_refused: {
    scope: 'node',
    family: {
      name: 'meshredir_guard_refused_total',
      type: 'counter',
      help: 'connect() calls refused (EPERM) by the Kubernetes guard: from a pod cgroup under the kubepods parents that the agent had not classified yet.',
      labelNames: [],
    },
  },
  accel_sockets: { family: f('meshredir_fastpath_sockets_total', 'Sockets put on the sk_msg fast path (both ends).') },
  accel_open: {
    family: f('meshredir_fastpath_sockets', 'Sockets on the sk_msg fast path now.', [], 'gauge'),
  },
  accel_blocking: { family: FP_SKIPPED, labels: { reason: 'blocking_socket' } },
  msg_fast: { family: FP_MESSAGES, labels: { path: 'fast' } },
  msg_slow: { family: FP_MESSAGES, labels: { path: 'tcp' } },
  msg_resumed: {
    family: f(
      'meshredir_fastpath_resumed_total',
      'Times a fast-path socket went back to the fast path after a detour.',
    ),
  },
  msg_backoff: {
    family: f(
      'meshredir_fastpath_backoffs_total',
      'Times a fast-path socket backed off to TCP for a while: a one-way stream that outran its reader.',
    ),
  },
  accel_left: {
    family: f(
      'meshredir_fastpath_left_total',
      'Fast-path sockets that left the sockhash for good (a one-way stream): TCP with its own send path again.',
    ),
  },
  ulp_refused: {
    family: f('meshredir_fastpath_ulp_refused_total', 'setsockopt(TCP_ULP) (kTLS) refused on fast-path sockets.'),
  },
};

const DNS_CAPTURED = f(
  'meshredir_dns_captured_total',
  'Port-53 calls of the policy sent to its DNS proxy, by call: connect_udp, sendmsg_udp (unconnected sendto/sendmsg), connect_tcp.',
  ['call'],
);
const DNS_BYPASSED = f('meshredir_dns_bypassed_total', 'Port-53 calls of the policy left to go direct, by reason.', [
  'reason',
]);

/** The metric of every field of struct mr_dns_stats (DNS capture), as STAT_METRICS for mr_stats. */
export const DNS_STAT_METRICS: Record<DnsStatName, StatMetric> = {
  udp_connect: { family: DNS_CAPTURED, labels: { call: 'connect_udp' } },
  udp_sendmsg: { family: DNS_CAPTURED, labels: { call: 'sendmsg_udp' } },
  tcp_connect: { family: DNS_CAPTURED, labels: { call: 'connect_tcp' } },
  replies: {
    family: f(
      'meshredir_dns_replies_relabelled_total',
      'Datagrams from the DNS proxy shown to the application as from the nameserver it asked.',
    ),
  },
  peername: {
    family: f(
      'meshredir_dns_peernames_answered_total',
      'getpeername() of captured sockets answered with the nameserver asked.',
    ),
  },
  bypass_cgroup: { family: DNS_BYPASSED, labels: { reason: 'proxy_cgroup' } },
  bypass_owner: { family: DNS_BYPASSED, labels: { reason: 'owner' } },
  bypass_mark: { family: DNS_BYPASSED, labels: { reason: 'mark' } },
  bypass_dest: { family: DNS_BYPASSED, labels: { reason: 'destination' } },
  err_full: {
    family: f(
      'meshredir_dns_refused_total',
      'Port-53 calls of the policy failed with EPERM (fail closed), by reason.',
      ['reason'],
    ),
    labels: { reason: 'table_full' },
  },
};

const NO_PROXY = f(
  'meshredir_inbound_no_proxy_total',
  "Inbound connections of the policy's pod that arrived while no proxy listener was registered, by what was done (spec.inbound.whenNoProxy): refused or passed to the application.",
  ['action'],
);

/** The metric of every field of struct mr_in_stats (inbound sk_lookup and mr_in_origdst), as STAT_METRICS. */
export const IN_STAT_METRICS: Record<InStatName, StatMetric> = {
  intercepted: { family: COMMON.inboundRedirected },
  bypass_local: { family: COMMON.inboundBypassed, labels: { reason: 'loopback' } },
  bypass_port: { family: COMMON.inboundBypassed, labels: { reason: 'port' } },
  bypass_source: { family: COMMON.inboundBypassed, labels: { reason: 'source' } },
  no_proxy_refused: { family: NO_PROXY, labels: { action: 'refused' } },
  no_proxy_passed: { family: NO_PROXY, labels: { action: 'passed' } },
  err_assign: {
    family: f(
      'meshredir_inbound_errors_total',
      "Failures of the sk_lookup program for the policy's inbound connections, by kind.",
      ['kind'],
    ),
    labels: { kind: 'assign_failed' },
  },
  origdst_served: {
    family: f(
      'meshredir_inbound_original_destinations_served_total',
      "SO_ORIGINAL_DST asked on an inbound proxy's accepted socket, answered with its local address.",
    ),
  },
};

const LISTENER = f(
  'meshredir_inbound_listener_registered',
  "Whether the inbound proxy's listening socket is registered for the policy's sk_lookup program (1) or not (0: connections refused or passed), by address family.",
  ['family'],
  'gauge',
);

/** The inbound families from counters and registered listeners by policy name (pure). */
export function inboundFamilies(
  byPolicy: Map<
    string,
    { counters: Record<InStatName, number>; listeners: { ipv4: string | null; ipv6: string | null } }
  >,
  out = new Families(),
): Families {
  tableFamilies(IN_STAT_METRICS, new Map([...byPolicy].map(([p, v]) => [p, v.counters])), undefined, out);
  out.declare(LISTENER);
  for (const [policy, v] of byPolicy)
    for (const family of ['ipv4', 'ipv6'] as const) out.add(LISTENER, { policy, family }, v.listeners[family] ? 1 : 0);
  return out;
}

/** The per-policy counter families from counters by policy name and slot 0's (pure). */
export function statFamilies(
  byPolicy: Map<string, Counters>,
  node: Counters | undefined,
  out = new Families(),
): Families {
  return tableFamilies(STAT_METRICS, byPolicy, node, out);
}

/** The same for DNS capture's counters (pure). */
export function dnsFamilies(byPolicy: Map<string, DnsCounters>, out = new Families()): Families {
  return tableFamilies(DNS_STAT_METRICS, byPolicy, undefined, out);
}

function tableFamilies<F extends string>(
  table: Record<F, StatMetric>,
  byPolicy: Map<string, Record<F, bigint | number>>,
  node: Record<F, bigint | number> | undefined,
  out: Families,
): Families {
  const rows = Object.entries(table) as [F, StatMetric][];
  for (const [, m] of rows) out.declare(m.family);
  for (const [field, m] of rows) {
    if (m.scope === 'node') {
      out.add(m.family, { ...m.labels }, Number(node?.[field] ?? 0));
      continue;
    }
    for (const [policy, c] of byPolicy) out.add(m.family, { policy, ...m.labels }, Number(c[field]));
  }
  return out;
}

const gauge = (name: string, help: string, labelNames: string[] = []): FamilyDef => ({
  name,
  type: 'gauge',
  help,
  labelNames,
});
const MAP_ENTRIES = gauge('meshredir_map_entries', 'Entries in a BPF map of meshredir (hash, LPM and socket maps).', [
  'map',
]);
const MAP_CAPACITY = gauge('meshredir_map_capacity', 'Maximum entries of a BPF map of meshredir.', ['map']);
const IN_FLIGHT = gauge(
  'meshredir_handshakes_in_flight',
  "Redirected handshakes not yet completed by the proxy's kernel (records in mr_orig).",
);
const IN_FLIGHT_LIMIT = gauge(
  'meshredir_handshakes_in_flight_limit',
  'Handshakes in flight past which connect() is refused (--max-connections).',
);
const POLICY_IN_FLIGHT = gauge(
  'meshredir_policy_handshakes_in_flight',
  "The policy's redirected handshakes not yet completed by its proxy's kernel (its records in mr_orig).",
  ['policy'],
);
const POLICY_IN_FLIGHT_LIMIT = gauge(
  'meshredir_policy_handshakes_in_flight_limit',
  "The policy's budget of handshakes in flight, past which its connects are refused (--max-pending-per-policy).",
  ['policy'],
);
const ATTACHED = gauge(
  'meshredir_program_attached',
  'Whether the pinned link of a BPF program is attached (1) or detached (0).',
  ['program'],
);
const FASTPATH = gauge(
  'meshredir_fastpath_available',
  'Whether the sk_msg fast path can be used on this kernel (spec.accelerate is applied).',
);

/** The families besides the per-policy counters (docs and tests list them). */
export const NODE_FAMILIES: readonly FamilyDef[] = [
  IN_FLIGHT,
  IN_FLIGHT_LIMIT,
  POLICY_IN_FLIGHT,
  POLICY_IN_FLIGHT_LIMIT,
  MAP_ENTRIES,
  MAP_CAPACITY,
  ATTACHED,
  FASTPATH,
];

/** Every family, read from the pins now; none when nothing is installed. */
export function ebpfMetrics(pins: Pins): MetricFamily[] {
  if (!pins.installed()) return [];
  const out = new Families();
  const slots = pins.slots();
  const named = <C>(bySlot: Map<number, C>) =>
    new Map([...slots].flatMap(([name, slot]) => (bySlot.has(slot) ? [[name, bySlot.get(slot)!] as [string, C]] : [])));
  const counters = stats(pins);
  statFamilies(named(counters), counters.get(0), out);
  const dns = dnsStats(pins);
  if (dns.size) dnsFamilies(named(dns), out);
  // Inbound: the policies with an sk_lookup link or pod addresses (none before the inbound maps are pinned).
  const inbound = inboundPolicies(pins).filter((p) => !p.policy.startsWith('slot '));
  if (inbound.length) inboundFamilies(new Map(inbound.map((p) => [p.policy, p])), out);
  const p = pending(pins);
  out.add(IN_FLIGHT, {}, p.pending);
  out.add(IN_FLIGHT_LIMIT, {}, p.limit);
  out.declare(POLICY_IN_FLIGHT);
  out.declare(POLICY_IN_FLIGHT_LIMIT);
  for (const [policy, b] of named(pendingBySlot(pins))) {
    out.add(POLICY_IN_FLIGHT, { policy }, b.now);
    out.add(POLICY_IN_FLIGHT_LIMIT, { policy }, b.limit);
  }
  for (const m of fill(pins)) {
    out.add(MAP_ENTRIES, { map: m.map }, m.entries);
    out.add(MAP_CAPACITY, { map: m.map }, m.max);
  }
  for (const l of pins.links()) out.add(ATTACHED, { program: l.name }, l.attached ? 1 : 0);
  out.add(FASTPATH, {}, fastPath(pins).usable ? 1 : 0);
  return out.list();
}

/** Ready when every program that redirects, and every one that answers for a redirected connection, is
 * attached, and no pinned link is detached. */
export function ebpfReadiness(pins: Pins): Readiness {
  const links = pins.links();
  const missing = [...REDIRECT_NEEDS, ...REDIRECTING].filter((n) => !links.some((l) => l.name === n));
  const detached = links.filter((l) => !l.attached).map((l) => l.name);
  if (missing.length) return { ready: false, reason: `not attached: ${missing.join(', ')}` };
  if (detached.length) return { ready: false, reason: `detached: ${detached.join(', ')}` };
  return { ready: true, reason: `${links.length} programs attached` };
}
