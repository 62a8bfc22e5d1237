// inbound.ts — the user-space side of the sk_lookup data path: register a proxy's listener (the
// sockhash entry the program assigns, and the storage mark its accepted sockets inherit), and run
// mr_sklookup on a made-up lookup with BPF_PROG_TEST_RUN.
import { AF_INET, AF_INET6, InSkFlag, inSk, u32, u64, inSockKey } from './abi.js';
import { struct } from './codec.js';
import { BpfMap } from './map.js';
import { testRun } from './prog.js';

/** struct bpf_sk_lookup (UAPI): the context of sk_lookup programs and of their test runs. */
export const skLookupCtx = struct('bpf_sk_lookup', {
  cookie: 'u64', // in: must be 0; out: the selected socket's cookie (SO_COOKIE), 0 for none
  family: 'u32',
  protocol: 'u32',
  remote_ip4: { bytes: 4 },
  remote_ip6: { bytes: 16 },
  remote_port: 'be16',
  pad: 'u16',
  local_ip4: { bytes: 4 },
  local_ip6: { bytes: 16 },
  local_port: 'u32', // host byte order
  ingress_ifindex: 'u32', // test runs: must be 0
});

export const SK_DROP = 0;
export const SK_PASS = 1;

export interface Lookup {
  family: 4 | 6;
  protocol?: number; // default TCP
  remote: number[]; // 4 or 16 bytes
  remotePort: number;
  local: number[];
  localPort: number;
}

/** Runs the sk_lookup program on a lookup: its verdict and the cookie of the socket it chose (0n: none). */
export function runSkLookup(progFd: number, l: Lookup): { verdict: number; cookie: bigint; duration: number } {
  const b = (bytes: number[], n: number) => {
    const out = Buffer.alloc(n);
    if (bytes.length === n) Buffer.from(bytes).copy(out);
    return out;
  };
  const ctx = skLookupCtx.encode({
    cookie: 0n,
    family: l.family === 4 ? AF_INET : AF_INET6,
    protocol: l.protocol ?? 6,
    remote_ip4: b(l.remote, 4),
    remote_ip6: b(l.remote, 16),
    remote_port: l.remotePort,
    pad: 0,
    local_ip4: b(l.local, 4),
    local_ip6: b(l.local, 16),
    local_port: l.localPort,
    ingress_ifindex: 0,
  });
  const r = testRun(progFd, ctx, `test run sk_lookup ${JSON.stringify(l)}`);
  return { verdict: r.retval, cookie: skLookupCtx.decode(r.ctxOut).cookie, duration: r.duration };
}

export type SockKey = ReturnType<typeof inSockKey.decode>;

/**
 * Makes `fd` (a listening socket of the pod's netns, e.g. a copy taken from the proxy) the inbound
 * listener of policy `slot` for `families`: marks it in mr_in_sk (its accepted sockets inherit the
 * mark: SO_ORIGINAL_DST answers their local address), then puts it in mr_in_socks. The caller
 * closes its fd afterwards: the maps do not keep the socket open.
 */
export function registerListener(
  socks: BpfMap<SockKey, bigint>,
  storage: BpfMap<number, ReturnType<typeof inSk.decode>>,
  slot: number,
  families: (4 | 6)[],
  fd: number,
): void {
  storage.set(fd, { slot, flags: InSkFlag.LISTENER });
  for (const f of families) socks.set({ slot, family: f === 4 ? AF_INET : AF_INET6 }, BigInt(fd));
}

/** The typed codecs of mr_in_sk (keyed by a socket fd from user space). */
export const inSkMap = { key: u32, value: inSk } as const;
export const inSocksMap = { key: inSockKey, value: u64 } as const;
