// inbound-listeners.ts — the proxy's inbound listener: taken from its process (pidfd_getfd), checked (TCP,
// listening, in the pod's netns, the family) and registered in mr_in_socks; the copy closed at once, so a
// dead proxy leaves no live listener.
import type { BpfMap } from '../../bpf/map.js';
import { closeFd } from '../../bpf/fd.js';
import { AF_INET, AF_INET6 } from '../../bpf/abi.js';
import { registerListener, type SockKey } from '../../bpf/inbound.js';
import { socketFacts, takeFd } from '../../bpf/listeners.js';
import type { InboundTarget } from './inbound-plan.js';

export const af = (f: 4 | 6) => (f === 4 ? AF_INET : AF_INET6);

export interface Registration {
  registered: boolean;
  wrote: boolean;
  dropped: boolean;
  /** Why candidates were not used. */
  why: string[];
  /** The inodes of the candidates looked at (not retried until another appears). */
  tried: Set<number>;
  /** The pod netns's cookie, read from a candidate in it (what sock_release sees: mr_inwatch.h). */
  netnsCookie?: bigint;
}

/** Takes and checks the family's best listener; registers it unless it already is. */
export function register(
  t: InboundTarget,
  f: 4 | 6,
  socks: BpfMap<SockKey, bigint>,
  storage: BpfMap<number, { slot: number; flags: number }>,
): Registration {
  const key = { slot: t.slot, family: af(f) };
  const cur = socks.get(key);
  const why: string[] = [];
  const tried = new Set<number>();
  let netnsCookie: bigint | undefined;
  for (const l of t.candidates[f]) {
    tried.add(l.inode);
    let fd: number;
    try {
      fd = takeFd(l.pid, l.fd);
    } catch (e) {
      why.push((e as Error).message);
      continue;
    }
    try {
      const s = socketFacts(fd);
      if (s.netnsId === t.netns.id) netnsCookie = s.netnsCookie;
      const fits = f === 4 ? s.family === 4 || (s.family === 6 && !s.v6only) : s.family === 6;
      if (!s.tcp || !s.listening) why.push(`pid ${l.pid} fd ${l.fd} is not a listening TCP socket`);
      else if (s.netnsId !== t.netns.id)
        why.push(
          `pid ${l.pid} fd ${l.fd} lives in netns ${s.netnsId}, not the pod's: sk_lookup cannot hand it connections`,
        );
      else if (!fits) why.push(`pid ${l.pid} fd ${l.fd} is IPv6-only`);
      else if (cur === s.cookie) return { registered: true, wrote: false, dropped: false, why, tried, netnsCookie };
      else {
        registerListener(socks, storage, t.slot, [f], fd);
        return { registered: true, wrote: true, dropped: false, why, tried, netnsCookie };
      }
    } finally {
      closeFd(fd);
    }
  }
  // Nothing the policy names listens: an older socket (a port changed) must not keep taking connections.
  const dropped = cur !== undefined && socks.delete(key);
  return { registered: false, wrote: false, dropped, why, tried, netnsCookie };
}

/** Why connections of `t` (of one family) are refused or passed: no usable listener. */
export function noListener(t: InboundTarget, family?: 4 | 6): string {
  const where = t.listenAddress
    ? `the listener ${t.listenAddress.bytes.join('.')}:${t.port}`
    : `a listener on port ${t.port}`;
  const fam = family ? `IPv${family}: ` : '';
  return `${fam}no ${where.replace(/^a /, '')} in netns ${t.netns.path} held by a process of the policy's cgroups or bypass cgroups: inbound connections are ${t.spec.whenNoProxy === 'pass' ? 'passed to the app' : 'refused'} (whenNoProxy ${t.spec.whenNoProxy})`;
}
