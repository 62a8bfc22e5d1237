// abi.ts — TypeScript mirror of bpf/mr_abi.h: each part's constants and codecs (abi/*.ts) and what spans the
// parts: every map, every program in attach order, and the codecs and enums checked at load.
// Each struct codec and each enum mirror is checked against the object's BTF at load (src/bpf/mirror.ts),
// so the two sides cannot drift apart silently.
import { u8, u32, u64 } from './codec.js';
import type { AbiEnums } from './mirror.js';
import { cidrKey, portKey } from './abi/common.js';
import { DNS_CODECS, DNS_MAPS, DNS_PROGRAMS, type DnsProgramName } from './abi/dns.js';
import { mirrors } from './abi/enum.js';
import { INBOUND_CODECS } from './abi/inbound.js';
import { OUTBOUND_CODECS, OUTBOUND_MAPS, pendingValue } from './abi/outbound.js';
import { TRACE_CODECS, TRACE_MAPS } from './abi/trace.js';

export * from './abi/common.js';
export * from './abi/outbound.js';
export * from './abi/inbound.js';
export * from './abi/dns.js';
export * from './abi/trace.js';
export { u8, u32, u64 };

/** Every enum mirror of the parts; struct mr_abi (bpf/mr_abi.h) has a field of each enum, which puts them
 * in BTF. */
export const ABI_ENUMS: AbiEnums = { anchor: 'mr_abi', mirrors };

/** Every map of meshredir.bpf.o with its codecs, but the inbound ones (abi/inbound.ts: INBOUND_MAPS): the
 * single source of truth for user space. */
export const MAPS = {
  ...OUTBOUND_MAPS,
  ...DNS_MAPS,
  ...TRACE_MAPS,
  mr_pending: { key: u32, value: pendingValue },
} as const;
export type MapName = keyof typeof MAPS;

export const STRUCT_CODECS = [portKey, cidrKey, ...OUTBOUND_CODECS, ...INBOUND_CODECS, ...DNS_CODECS, ...TRACE_CODECS];

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
export type ProgramName = keyof typeof PROGRAMS;
/** The sockops program without any reference to the fast path (sockhash, mr_peers): loaded in place of
 * mr_sockops, under its link name, when the fast path cannot load here. */
export const SOCKOPS_BASE = 'mr_sockops_base';
/** The optional part: loaded with everything else, or, where that load fails, left out (these programs
 * and maps) with SOCKOPS_BASE loaded instead. WITHOUT_FAST_PATH is left out of the full load. */
export const FAST_PATH = {
  programs: ['mr_skmsg', 'mr_sockops'],
  maps: ['mr_sockhash', 'mr_peers', 'mr_fast'],
} as const;
export const WITHOUT_FAST_PATH = [SOCKOPS_BASE] as const;
/** The program that runs under a link's name with or without the fast path. */
export const programFor = (link: ProgramName, fast: boolean): string =>
  link === 'mr_sockops' && !fast ? SOCKOPS_BASE : link;
/** Programs that redirect, and what must be attached before them. */
export const REDIRECTING: readonly ProgramName[] = ['mr_connect4', 'mr_connect6'];
export const REDIRECT_NEEDS: readonly ProgramName[] = ['mr_sockops', 'mr_getsockopt'];
/**
 * Programs attached only while they are needed, not by every load (a load re-adopts their pinned link):
 * mr_setsockopt, the kTLS guard of fast-path sockets, while a policy accelerates or an accelerated socket
 * is open (modes/ebpf/ulp-guard.ts) — its hook costs every setsockopt() below the root far more than the
 * program itself (the kernel copies optval and locks the socket around it); mr_dns_release, which deletes a
 * captured socket's entry as it closes, while a policy captures DNS or a captured socket is open
 * (modes/ebpf/release.ts) — it runs on every inet socket close below the root.
 */
export const ON_DEMAND_PROGRAMS: readonly ProgramName[] = ['mr_setsockopt', 'mr_dns_release'];
/**
 * Programs a kernel may lack without losing the eBPF mode (their feature is then off, and status says
 * so): the fast path's sk_msg, and DNS capture's own hooks.
 */
export const OPTIONAL_PROGRAMS: readonly ProgramName[] = [
  'mr_skmsg',
  ...(Object.keys(DNS_PROGRAMS) as DnsProgramName[]),
];
