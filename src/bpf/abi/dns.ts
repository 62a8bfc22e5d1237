// abi/dns.ts — DNS capture's enums, codecs, counters, maps and programs (bpf/mr_dns.h, docs/dns-design.md).
import { struct, u8, u32, u64 } from '../codec.js';
import { cEnum } from './enum.js';

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
 * DNS capture's own programs, in attach order: sock_release first (no entry is ever made without it: it is
 * attached on demand, before the first mr_dns_pol entry, modes/ebpf/release.ts), recvmsg before sendmsg
 * (no reply from the proxy is ever shown unrelabelled), and detach in reverse.
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
/** What DNS capture needs attached before its entries are written (connect4/6 capture UDP connects as soon
 * as mr_dns_pol has an entry): the release hook (no entry without its deletion) and recvmsg (no reply
 * shown as from the proxy). sendmsg is attached only after them. */
export const DNS_NEEDS: readonly DnsProgramName[] = ['mr_dns_release', 'mr_dns_recv4', 'mr_dns_recv6'];

export const DNS_CODECS = [dnsPolicyValue, dnsNsKey, dnsEp, dnsLast, dnsSockValue, dnsStatsValue];
