// abi.ts — TypeScript mirror of bpf/mr_abi.h: constants and the codec of every map's key and value.
// Each struct codec and each enum mirror is checked against the object's BTF at load (src/bpf/mirror.ts),
// so the two sides cannot drift apart silently.
import { struct, u8, u32, u64 } from './codec.js';
import type { AbiEnums, EnumMirror } from './mirror.js';

const mirrors: EnumMirror[] = [];
/** Declares `values` as the mirror of C `enum cName`, whose enumerators are `${prefix}${key}`. */
function cEnum<const V extends Record<string, number>>(cName: string, prefix: string, values: V): Readonly<V> {
  mirrors.push({ cName, prefix, values });
  return Object.freeze(values);
}

export const Limit = cEnum('mr_limit', 'MR_', { MAX_POLICIES: 4096, MAX_CGROUP_DEPTH: 32, MAX_MARKS: 8 });
export const MAX_POLICIES = Limit.MAX_POLICIES;
/** Bypass marks a policy can hold (mr_policy.marks). */
export const MAX_MARKS = Limit.MAX_MARKS;
// Linux's, not ours: not in BTF (the programs take them from their own defines).
export const AF_INET = 2;
export const AF_INET6 = 10;

/** mr_cgroups kinds: GUARD refuses connects from a cgroup below it that has no entry of its own (an
 * unclassified pod), PASS marks a classified pod that is not enrolled. */
export const CgKind = cEnum('mr_cg_kind', 'MR_CG_', { POLICY: 1, BYPASS: 2, GUARD: 3, PASS: 4 });
/** Bits of mr_policy.flags. */
export const PolicyFlag = cEnum('mr_policy_flag', 'MR_F_', {
  PROXY4: 1 << 0,
  PROXY6: 1 << 1,
  INCLUDE_PORTS: 1 << 2,
  INCLUDE_CIDRS: 1 << 3,
  REDIRECT_LOOPBACK: 1 << 4,
  ACCELERATE: 1 << 5,
  BYPASS_MARKS: 1 << 6,
  OWNERS: 1 << 7,
  PORTS: 1 << 8,
  CIDRS: 1 << 9,
});
export const OwnerKind = cEnum('mr_owner_kind', 'MR_OWNER_', { UID: 1, GID: 2 });
export const Action = cEnum('mr_action', 'MR_ACT_', { INCLUDE: 1, EXCLUDE: 2 });
/** Bits of mr_orig.flags. */
export const OrigFlag = cEnum('mr_orig_flag', 'MR_O_', { ACCEL: 1 << 0, CONFLICT: 1 << 1 });
/** Bits of mr_sk.flags (per-socket storage; no map user space reads). */
export const SkFlag = cEnum('mr_sk_flag', 'MR_SK_', {
  RECORDED: 1 << 0,
  APP: 1 << 1,
  SERVED: 1 << 2,
  ACCEL: 1 << 3,
  SLOWPATH: 1 << 4,
  FRESH: 1 << 5,
  PEER: 1 << 6,
  DNS: 1 << 7,
});
/** Indexes of mr_gauges; MAX is their number. */
export const Gauge = cEnum('mr_gauge', 'MR_G_', { PENDING: 0, LIMIT: 1, MAX: 2 });
/** Bits of mr_in_dest.flags (inbound, sk_lookup). */
export const InFlag = cEnum('mr_in_flag', 'MR_IN_F_', { PASS: 1 << 0, INCLUDE_PORTS: 1 << 1, BYPASS_SRCS: 1 << 2 });
/** Bits of mr_in_sk.flags (storage on a registered inbound listener, copied to its accepted sockets). */
export const InSkFlag = cEnum('mr_in_sk_flag', 'MR_IN_SK_', { LISTENER: 1 << 0 });
/** Every enum mirror above; struct mr_abi (bpf/mr_abi.h) has a field of each enum, which puts them in BTF. */
export const ABI_ENUMS: AbiEnums = { anchor: 'mr_abi', mirrors };

export const cgEntry = struct('mr_cg_entry', { kind: 'u32', slot: 'u32' });
export const policyValue = struct('mr_policy', {
  flags: 'u32',
  proxy4_addr: { bytes: 4 },
  proxy6_addr: { bytes: 16 },
  proxy4_port: 'be16',
  proxy6_port: 'be16',
  // struct mr_mark marks[MR_MAX_MARKS]: { u32 value, u32 mask } each, little-endian (policyMarks encodes it).
  marks: { bytes: 8 * MAX_MARKS },
  pending_max: 'u32',
  netns_ino: 'u32',
});
export const ownerKey = struct('mr_owner_key', { slot: 'u32', kind: 'u32', id: 'u32' });
export const proxyKey = struct('mr_proxy_key', { cgroup_id: 'u64', slot: 'u32', pad: 'u32' });
export const portKey = struct('mr_port_key', { slot: 'u32', port: 'u16', pad: 'u16' });
export const cidrKey = struct('mr_cidr_key', {
  prefixlen: 'u32',
  slot: 'be32',
  family: 'u8',
  addr: { bytes: 16 },
  pad: { bytes: 3 },
});
export const tupleKey = struct('mr_tuple_key', {
  netns: 'u64',
  saddr: { bytes: 16 },
  daddr: { bytes: 16 },
  sport: 'be16',
  dport: 'be16',
  family: 'u8',
  pad: { bytes: 3 },
});
export const peerValue = struct('mr_peer', { sk: 'u64', psock: 'u64', limit: 'u32', pad: 'u32' });
export const origValue = struct('mr_orig', {
  family: 'u8',
  flags: 'u8',
  port: 'be16',
  slot: 'u32',
  addr: { bytes: 16 },
  cookie: 'u64',
});
/** One cache line per policy slot: its handshakes in flight (signed; read with BigInt.asIntN). */
export const pendingValue = struct('mr_pending', { now: 'u64', pad: { bytes: 56 } });

export const STAT_FIELDS = [
  'redirected',
  'bypass_cgroup',
  'bypass_owner',
  'bypass_port',
  'bypass_cidr',
  'bypass_loopback',
  'bypass_family',
  'bypass_proxy',
  'err_storage',
  'err_orig',
  'err_full',
  'established',
  'origdst_served',
  'origdst_unknown',
  'accel_sockets',
  'accel_open',
  'accel_blocking',
  'msg_fast',
  'msg_slow',
  'msg_resumed',
  'ulp_refused',
  'bypass_mark',
  'guard_refused',
  'err_netns',
  'err_conflict',
  'origdst_denied',
] as const;
export type StatName = (typeof STAT_FIELDS)[number];
export const statsValue = struct(
  'mr_stats',
  Object.fromEntries(STAT_FIELDS.map((f) => [f, 'u64'])) as Record<StatName, 'u64'>,
);

/** Room for the longest metadata.name the schema allows (253) and a NUL, so slots are found by name. */
export const SLOT_NAME_BYTES = 256;
export const slotMeta = struct('mr_slot_meta', { cgroup_id: 'u64', name: { bytes: SLOT_NAME_BYTES } });

// ---- DNS capture (bpf/mr_dns.h, docs/dns-design.md) ----
export const DnsFlag = cEnum('mr_dns_flag', 'MR_DNS_F_', { PROXY4: 1 << 0, PROXY6: 1 << 1, ALL: 1 << 2, TCP: 1 << 3 });
export const DnsSockFlag = cEnum('mr_dns_sock_flag', 'MR_DNS_S_', {
  CONNECTED: 1 << 0,
  LAST4: 1 << 1,
  LAST6: 1 << 2,
  TCP: 1 << 3,
});
export const dnsPolicyValue = struct('mr_dns_policy', {
  flags: 'u32',
  proxy4_addr: { bytes: 4 },
  proxy6_addr: { bytes: 16 },
  proxy4_port: 'be16',
  proxy6_port: 'be16',
});
export const dnsNsKey = struct('mr_dns_ns_key', { slot: 'u32', family: 'u8', pad: { bytes: 3 }, addr: { bytes: 16 } });
export const dnsEp = struct('mr_dns_ep', { family: 'u8', pad: 'u8', port: 'be16', addr: { bytes: 16 } });
// Nested structs are raw bytes here (the codec aligns a nested struct by its widest field, C by its
// members' alignment: 2 for these); dnsEp decodes them.
export const dnsLast = struct('mr_dns_last', { orig: { bytes: dnsEp.size }, proxy: { bytes: dnsEp.size } });
/** `last` is struct mr_dns_last[2] (index 0: the IPv4 proxy, 1: the IPv6 proxy); see dnsLastOf. */
export const dnsSockValue = struct('mr_dns_sock', {
  slot: 'u32',
  flags: 'u32',
  conn: { bytes: dnsEp.size },
  last: { bytes: 2 * dnsLast.size },
});
export const dnsLastOf = (v: { last: Buffer }, i: 0 | 1) => {
  const l = dnsLast.decode(v.last, i * dnsLast.size);
  return { orig: dnsEp.decode(l.orig), proxy: dnsEp.decode(l.proxy) };
};
export const DNS_STAT_FIELDS = [
  'udp_connect',
  'udp_sendmsg',
  'tcp_connect',
  'replies',
  'peername',
  'bypass_cgroup',
  'bypass_owner',
  'bypass_dest',
  'err_full',
  'bypass_mark',
] as const;
export type DnsStatName = (typeof DNS_STAT_FIELDS)[number];
export const dnsStatsValue = struct(
  'mr_dns_stats',
  Object.fromEntries(DNS_STAT_FIELDS.map((f) => [f, 'u64'])) as Record<DnsStatName, 'u64'>,
);
/** DNS maps; in MAPS too, so that the agent pins and re-adopts them (connect4/6 use them). */
export const DNS_MAPS = {
  mr_dns_pol: { key: u32, value: dnsPolicyValue },
  mr_dns_ns: { key: dnsNsKey, value: u8 },
  mr_dns_socks: { key: u64, value: dnsSockValue },
  mr_dns_stats: { key: u32, value: dnsStatsValue },
} as const;
/** Maps of DNS capture whose whole content is desired state (the rest the programs write). */
export const DNS_POLICY_MAPS = ['mr_dns_pol', 'mr_dns_ns'] as const;
/**
 * DNS capture's own programs, in attach order: sock_release first (no entry is ever made without it),
 * recvmsg before sendmsg (no reply from the proxy is ever shown unrelabelled), and detach in reverse.
 * connect4/6 and getpeername4/6 (PROGRAMS) carry the rest of DNS capture.
 */
export const DNS_PROGRAMS = {
  mr_dns_release: { attach: 'cgroup/sock_release' },
  mr_dns_recv4: { attach: 'cgroup/recvmsg4' },
  mr_dns_recv6: { attach: 'cgroup/recvmsg6' },
  mr_dns_send4: { attach: 'cgroup/sendmsg4' },
  mr_dns_send6: { attach: 'cgroup/sendmsg6' },
} as const;
export type DnsProgramName = keyof typeof DNS_PROGRAMS;

// ---- Trace (bpf/mr_trace.h, docs/trace.md) ----
/** Bits of mr_trace_ctl.filters: the filters the programs apply before reserving an event. */
export const TraceFilter = cEnum('mr_trace_filter', 'MR_TRACE_F_', { SLOT: 1 << 0, CGROUP: 1 << 1, PID: 1 << 2 });
export const TraceHook = cEnum('mr_trace_hook', 'MR_TRACE_H_', {
  CONNECT4: 1,
  CONNECT6: 2,
  GETSOCKOPT: 3,
  SENDMSG4: 4,
  SENDMSG6: 5,
});
export const TraceVerdict = cEnum('mr_trace_verdict', 'MR_TRACE_V_', {
  PASS: 1,
  REDIRECT: 2,
  REFUSE: 3,
  ANSWER: 4,
  UNKNOWN: 5,
});
/** Which counter struct an event's `field` indexes (its reason): STAT_FIELDS or DNS_STAT_FIELDS. */
export const TraceTable = cEnum('mr_trace_table', 'MR_TRACE_T_', { STATS: 1, DNS: 2 });
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
  pad: 'u16',
  addr: { bytes: 16 },
  to_addr: { bytes: 16 },
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

export { u8, u32, u64 };

/** Every map of meshredir.bpf.o with its codecs: the single source of truth for user space. */
export const MAPS = {
  mr_cgroups: { key: u64, value: cgEntry },
  mr_policies: { key: u32, value: policyValue },
  mr_owners: { key: ownerKey, value: u8 },
  mr_proxies: { key: proxyKey, value: u8 },
  mr_ports: { key: portKey, value: u8 },
  mr_cidrs: { key: cidrKey, value: u8 },
  mr_orig: { key: tupleKey, value: origValue },
  mr_stats: { key: u32, value: statsValue },
  mr_slots: { key: u32, value: slotMeta },
  mr_sockhash: { key: tupleKey, value: u64 },
  mr_peers: { key: tupleKey, value: peerValue },
  mr_gauges: { key: u32, value: u64 },
  ...DNS_MAPS,
  ...TRACE_MAPS,
  mr_pending: { key: u32, value: pendingValue },
} as const;
/** Default limit of redirected handshakes in flight on the node (mr_orig holds twice as many). */
export const DEFAULT_MAX_CONNECTIONS = 16_384;
/** Default budget of handshakes in flight per policy: 1024, or a quarter of the node's limit if that is
 * less, so that one stalled pod never takes the whole node's (--max-pending-per-policy overrides it). */
export function defaultPendingBudget(maxConnections = DEFAULT_MAX_CONNECTIONS): number {
  return Math.min(1024, Math.max(1, Math.floor(maxConnections / 4)));
}
export type MapName = keyof typeof MAPS;
/** Maps whose whole content is desired state written by the agent (the rest the programs write). */
export const POLICY_MAPS = [
  'mr_cgroups',
  'mr_policies',
  'mr_owners',
  'mr_proxies',
  'mr_ports',
  'mr_cidrs',
  'mr_slots',
] as const;
// ---- Inbound (sk_lookup): bpf/mr_inbound.h. Kept apart from MAPS, whose whole content the outbound
// part writes; the inbound part (src/modes/ebpf/inbound*.ts) owns these. ----
export const inAddrKey = struct('mr_in_addr_key', { family: 'u32', addr: { bytes: 16 } });
export const inDest = struct('mr_in_dest', { slot: 'u32', flags: 'u32' });
export const inSockKey = struct('mr_in_sock_key', { slot: 'u32', family: 'u32' });
export const inSk = struct('mr_in_sk', { slot: 'u32', flags: 'u32' });
export const IN_STAT_FIELDS = [
  'intercepted',
  'bypass_local',
  'bypass_port',
  'bypass_source',
  'no_proxy_refused',
  'no_proxy_passed',
  'err_assign',
  'origdst_served',
] as const;
export type InStatName = (typeof IN_STAT_FIELDS)[number];
export const inStatsValue = struct(
  'mr_in_stats',
  Object.fromEntries(IN_STAT_FIELDS.map((f) => [f, 'u64'])) as Record<InStatName, 'u64'>,
);
/** The inbound maps (mr_in_sk, socket storage keyed by a socket fd, is typed by inSk). */
export const INBOUND_MAPS = {
  mr_in_addrs: { key: inAddrKey, value: inDest },
  mr_in_ports: { key: portKey, value: u8 },
  mr_in_srcs: { key: cidrKey, value: u8 },
  mr_in_socks: { key: inSockKey, value: u64 },
  mr_in_stats: { key: u32, value: inStatsValue },
} as const;
export type InboundMapName = keyof typeof INBOUND_MAPS;
/** mr_sklookup attaches to each pod's netns (mr_in_origdst, at the cgroup root, is in PROGRAMS). */
export const INBOUND_PROGRAMS = {
  mr_sklookup: { attach: 'sk_lookup' },
} as const;

export const STRUCT_CODECS = [
  cgEntry,
  policyValue,
  ownerKey,
  proxyKey,
  portKey,
  cidrKey,
  tupleKey,
  origValue,
  peerValue,
  statsValue,
  slotMeta,
  inAddrKey,
  inDest,
  inSockKey,
  inSk,
  inStatsValue,
  dnsPolicyValue,
  dnsNsKey,
  dnsEp,
  dnsLast,
  dnsSockValue,
  dnsStatsValue,
  traceCtl,
  traceCpu,
  traceEvent,
  pendingValue,
];

/**
 * Every program, in attach order: whatever answers for a redirected connection (sockops publishing the
 * record, getsockopt serving SO_ORIGINAL_DST, getpeername) before the connect hooks that redirect, so an
 * attach that fails or a crash in between never leaves connections redirected with nothing answering
 * the proxy.
 */
export const PROGRAMS = {
  mr_sockops: { attach: 'sockops' },
  mr_getsockopt: { attach: 'cgroup/getsockopt' },
  // Inbound: SO_ORIGINAL_DST of sockets accepted from a registered listener, after outbound's answer.
  // Inert without such sockets, so always attached.
  mr_in_origdst: { attach: 'cgroup/getsockopt' },
  mr_setsockopt: { attach: 'cgroup/setsockopt' },
  mr_getpeername4: { attach: 'cgroup/getpeername4' },
  mr_getpeername6: { attach: 'cgroup/getpeername6' },
  // DNS capture (optional: a kernel without these hooks keeps the rest), in DNS_PROGRAMS's order, after
  // getpeername and before the connect hooks, which capture UDP connects to port 53 too.
  ...DNS_PROGRAMS,
  mr_skmsg: { attach: 'sk_msg' }, // on mr_sockhash, not a cgroup
  mr_connect4: { attach: 'cgroup/connect4' },
  mr_connect6: { attach: 'cgroup/connect6' },
} as const;
/** The sockops program without any reference to the fast path (sockhash, mr_peers): loaded in place of
 * mr_sockops, under its link name, when the fast path cannot load here. */
export const SOCKOPS_BASE = 'mr_sockops_base';
/** The optional part: loaded with everything else, or, where that load fails, left out (these programs
 * and maps) with SOCKOPS_BASE loaded instead. WITHOUT_FAST_PATH is left out of the full load. */
export const FAST_PATH = { programs: ['mr_skmsg', 'mr_sockops'], maps: ['mr_sockhash', 'mr_peers'] } as const;
export const WITHOUT_FAST_PATH = [SOCKOPS_BASE] as const;
/** The program that runs under a link's name with or without the fast path. */
export const programFor = (link: ProgramName, fast: boolean): string =>
  link === 'mr_sockops' && !fast ? SOCKOPS_BASE : link;
/** Programs that redirect, and what must be attached before them. */
export const REDIRECTING: readonly ProgramName[] = ['mr_connect4', 'mr_connect6'];
export const REDIRECT_NEEDS: readonly ProgramName[] = ['mr_sockops', 'mr_getsockopt'];
/**
 * Programs a kernel may lack without losing the eBPF mode (their feature is then off, and status says
 * so): the fast path's sk_msg, and DNS capture's own hooks.
 */
export const OPTIONAL_PROGRAMS: readonly ProgramName[] = [
  'mr_skmsg',
  ...(Object.keys(DNS_PROGRAMS) as DnsProgramName[]),
];
/** What DNS capture needs attached before its entries are written (connect4/6 capture UDP connects as soon
 * as mr_dns_pol has an entry): the release hook (no entry without its deletion) and recvmsg (no reply
 * shown as from the proxy). sendmsg is attached only after them. */
export const DNS_NEEDS: readonly DnsProgramName[] = ['mr_dns_release', 'mr_dns_recv4', 'mr_dns_recv6'];
export type ProgramName = keyof typeof PROGRAMS;
