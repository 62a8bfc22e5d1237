// abi/outbound.ts — outbound redirection's enums, codecs, counters and maps (bpf/mr_abi.h).
import { struct, u8, u32, u64 } from '../codec.js';
import { cidrKey, MAX_MARKS, portKey } from './common.js';
import { cEnum } from './enum.js';

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
/** Bits of mr_orig.flags. */
export const OrigFlag = cEnum('mr_orig_flag', 'MR_O_', { ACCEL: 1 << 0, CONFLICT: 1 << 1 });
/** Bits of mr_sk.flags (per-socket storage; no map user space reads). */
export const SkFlag = cEnum('mr_sk_flag', 'MR_SK_', {
  RECORDED: 1 << 0,
  APP: 1 << 1,
  SERVED: 1 << 2,
  ACCEL: 1 << 3,
  DNS: 1 << 7,
});
/** Bits of mr_fast.flags (the fast path's per-socket storage; no map user space reads). */
export const FastFlag = cEnum('mr_fast_flag', 'MR_FP_', {
  SLOWPATH: 1 << 0,
  FRESH: 1 << 1,
  PEER: 1 << 2,
  BACKOFF: 1 << 3,
  PEER_LEFT: 1 << 4,
});
/** Indexes of mr_gauges; MAX is their number. */
export const Gauge = cEnum('mr_gauge', 'MR_G_', { PENDING: 0, LIMIT: 1, MAX: 2 });

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
export const tupleKey = struct('mr_tuple_key', {
  netns: 'u64',
  saddr: { bytes: 16 },
  daddr: { bytes: 16 },
  sport: 'be16',
  dport: 'be16',
  family: 'u8',
  pad: { bytes: 3 },
});
export const peerValue = struct('mr_peer', { sk: 'u64', psock: 'u64', limit: 'u32', pad: 'u32', fast: 'u64' });
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
  'msg_backoff',
  'accel_left',
] as const;
export type StatName = (typeof STAT_FIELDS)[number];
export const statsValue = struct(
  'mr_stats',
  Object.fromEntries(STAT_FIELDS.map((f) => [f, 'u64'])) as Record<StatName, 'u64'>,
);

/** Room for the longest metadata.name the schema allows (253) and a NUL, so slots are found by name. */
export const SLOT_NAME_BYTES = 256;
export const slotMeta = struct('mr_slot_meta', { cgroup_id: 'u64', name: { bytes: SLOT_NAME_BYTES } });

/** The outbound maps in MAPS's order before the DNS and trace maps (abi.ts: MAPS); mr_pending follows
 * those. */
export const OUTBOUND_MAPS = {
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
} as const;
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

/** Default limit of redirected handshakes in flight on the node (mr_orig holds twice as many). */
export const DEFAULT_MAX_CONNECTIONS = 16_384;
/** Default budget of handshakes in flight per policy: 1024, or a quarter of the node's limit if that is
 * less, so that one stalled pod never takes the whole node's (--max-pending-per-policy overrides it). */
export function defaultPendingBudget(maxConnections = DEFAULT_MAX_CONNECTIONS): number {
  return Math.min(1024, Math.max(1, Math.floor(maxConnections / 4)));
}

export const OUTBOUND_CODECS = [
  cgEntry,
  policyValue,
  ownerKey,
  proxyKey,
  tupleKey,
  origValue,
  peerValue,
  statsValue,
  slotMeta,
  pendingValue,
];
