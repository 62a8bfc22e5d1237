// stat-metrics.ts — the metric of every counter field the eBPF programs keep: STAT_METRICS for struct
// mr_stats, DNS_STAT_METRICS for struct mr_dns_stats, IN_STAT_METRICS for struct mr_in_stats (inbound).
// A field added to abi.ts's STAT_FIELDS, DNS_STAT_FIELDS or IN_STAT_FIELDS is one line here (the compiler
// insists). metrics.ts reads them from the pins; trace events name their reasons by them.
import type { DnsStatName, InStatName, StatName } from '../../bpf/abi.js';
import { COMMON, type FamilyDef, type Labels } from '../metrics.js';

export interface StatMetric {
  family: FamilyDef;
  /** Labels of this field within its family (besides `policy`). */
  labels?: Labels;
  /** 'node': counted in slot 0 (tied to no policy), exposed without a policy label. */
  scope?: 'node';
}

/** A per-policy family (`policy` label first). */
export const f = (
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
