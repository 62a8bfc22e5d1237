// abi/inbound.ts — inbound interception's (sk_lookup) enums, codecs, counters, maps and program
// (bpf/mr_inbound.h). Kept apart from MAPS, whose whole content the outbound part writes; the inbound part
// (src/modes/ebpf/inbound*.ts) owns these.
import { struct, u8, u32, u64 } from '../codec.js';
import { cidrKey, portKey } from './common.js';
import { cEnum } from './enum.js';

/** Bits of mr_in_dest.flags (inbound, sk_lookup). */
export const InFlag = cEnum('mr_in_flag', 'MR_IN_F_', { PASS: 1 << 0, INCLUDE_PORTS: 1 << 1, BYPASS_SRCS: 1 << 2 });
/** Bits of mr_in_sk.flags (storage on a registered inbound listener, copied to its accepted sockets). */
export const InSkFlag = cEnum('mr_in_sk_flag', 'MR_IN_SK_', { LISTENER: 1 << 0 });

export const inAddrKey = struct('mr_in_addr_key', { family: 'u32', addr: { bytes: 16 } });
export const inDest = struct('mr_in_dest', { slot: 'u32', flags: 'u32' });
export const inSockKey = struct('mr_in_sock_key', { slot: 'u32', family: 'u32' });
export const inSk = struct('mr_in_sk', { slot: 'u32', flags: 'u32' });
/** mr_in_watch key ({0, port} or {netns cookie, 0}) and mr_in_ring's records (bpf/mr_inwatch.h). */
export const inWatchKey = struct('mr_in_watch_key', { netns: 'u64', port: 'u32', pad: 'u32' });
export const InEvent = cEnum('mr_in_event_kind', 'MR_IN_EV_', { LISTEN: 1, CLOSE: 2 });
export const inEvent = struct('mr_in_event', { kind: 'u32', slot: 'u32', port: 'u32', pad: 'u32', netns: 'u64' });
export const IN_RING = 'mr_in_ring';
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
  mr_in_watch: { key: inWatchKey, value: u32 },
} as const;
export type InboundMapName = keyof typeof INBOUND_MAPS;
/** mr_sklookup attaches to each pod's netns (mr_in_origdst, at the cgroup root, is in PROGRAMS). */
export const INBOUND_PROGRAMS = {
  mr_sklookup: { attach: 'sk_lookup' },
} as const;

export const INBOUND_CODECS = [inAddrKey, inDest, inSockKey, inSk, inStatsValue, inWatchKey, inEvent];
