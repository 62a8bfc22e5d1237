// inbound-plan.ts — the eBPF inbound part's desired state, read from the host and nothing written: each
// inbound policy's pod netns (spec.netns, or the one netns of its cgroup's processes; never the host's),
// the pod's addresses in it, the listeners on the proxy's inbound port there that a process of the policy
// holds, and the map entries (src/policy/inbound.ts). One function for the dry run and for apply.
import ipaddr from 'ipaddr.js';
import type { Policy } from '../../policy/schema.js';
import { inboundEntries, type InboundEntries, type InboundSpec } from '../../policy/inbound.js';
import { findListeners, parseTcpTables, tableListeners, type FoundListener } from '../../bpf/listeners.js';
import { cgroupDir, requireCgroup2 } from '../../util/host.js';
import { subtreePids } from '../../util/cgroups.js';
import { NetnsHandle, hostNetnsIds, resolvePolicyNetns, runIn } from '../netns.js';

export interface PodAddress {
  family: 4 | 6;
  bytes: number[];
  text: string;
}

export interface InboundTarget {
  policy: string;
  file: string;
  slot: number;
  netns: { path: string; id: string; ino: number };
  addresses: PodAddress[];
  /** The proxy's inbound listener: its port, and its exact address when the policy names one. */
  port: number;
  listenAddress?: { family: 4 | 6; bytes: number[] };
  /** Listeners that could serve each family, best first (a dual-stack IPv6 one for IPv4 is checked at apply). */
  candidates: { 4: FoundListener[]; 6: FoundListener[] };
  /** A process in the pod netns whose /proc/PID/net shows its sockets (the pulse reads it), if one is known. */
  tablePid?: number;
  spec: InboundSpec;
}

export interface InboundPlan {
  targets: InboundTarget[];
  /** Inbound policies not served now, with why (their entries and link are removed). */
  skipped: { policy: string; file: string; reason: string; inboundOnly: boolean }[];
  entries: InboundEntries;
  /** Addresses two pods claim (or that are not a pod's); only their first claimant keeps them. */
  conflicts: string[];
}

const HOST_REFUSAL =
  "inbound interception is never attached there (sk_lookup in the host netns would take the node's own connections)";

/** The pod's global-scope addresses, read inside its netns. */
export function podAddresses(ns: NetnsHandle): PodAddress[] {
  const links = JSON.parse(runIn(ns, ['ip', '-j', 'addr', 'show', 'scope', 'global']) || '[]') as {
    addr_info?: { family?: string; local?: string }[];
  }[];
  const out: PodAddress[] = [];
  for (const l of links) {
    for (const a of l.addr_info ?? []) {
      if ((a.family !== 'inet' && a.family !== 'inet6') || !a.local || !ipaddr.isValid(a.local)) continue;
      const ip = ipaddr.parse(a.local);
      const text = ip.kind() === 'ipv6' ? (ip as ipaddr.IPv6).toRFC5952String() : ip.toString();
      if (!out.some((o) => o.text === text))
        out.push({ family: ip.kind() === 'ipv4' ? 4 : 6, bytes: ip.toByteArray(), text });
    }
  }
  return out;
}

const zero = (b: number[]) => b.every((x) => x === 0);
const same = (a: number[], b: number[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Which found listeners could serve each family, given the exact address the policy may name. */
export function candidatesFor(
  found: FoundListener[],
  address?: { family: 4 | 6; bytes: number[] },
): InboundTarget['candidates'] {
  const fits = (l: FoundListener, f: 4 | 6) =>
    l.family === f && (!address || (address.family === f && (same(l.bytes, address.bytes) || zero(l.bytes))));
  return {
    // Without an exact address, a dual-stack IPv6 wildcard listener takes IPv4 too (checked at apply).
    4: [...found.filter((l) => fits(l, 4)), ...(address ? [] : found.filter((l) => l.family === 6 && zero(l.bytes)))],
    6: found.filter((l) => fits(l, 6)),
  };
}

/** The processes that may hold the proxy's listener: those of its bypass cgroups and of the policy's cgroup. */
function ownerPids(p: Policy): number[] {
  const mount = requireCgroup2();
  const pids = [...p.bypass.cgroups, p.cgroup].flatMap((cg) => subtreePids(cgroupDir(cg, mount)));
  return [...new Set(pids)];
}

export function planInbound(keep: Policy[], slots: Map<string, number>): InboundPlan {
  const inbound = keep.filter((p) => p.proxy.inbound);
  const plan: InboundPlan = { targets: [], skipped: [], entries: inboundEntries([]).entries, conflicts: [] };
  if (inbound.length === 0) return plan;
  const only = (p: Policy) => !p.proxy.outbound && !p.proxy.outbound6;
  const skip = (p: Policy, reason: string) =>
    plan.skipped.push({ policy: p.name, file: p.file, reason, inboundOnly: only(p) });
  const host = hostNetnsIds();
  const byNetns = new Map<string, { path: string; ps: Policy[] }>();
  for (const p of inbound) {
    let r;
    try {
      r = resolvePolicyNetns(p, host, HOST_REFUSAL);
    } catch (e) {
      r = { ok: false as const, reason: (e as Error).message };
    }
    if (!r.ok) {
      skip(p, r.reason);
      continue;
    }
    const e = byNetns.get(r.id) ?? { path: r.path, ps: [] };
    e.ps.push(p);
    byNetns.set(r.id, e);
  }
  for (const [id, { path, ps }] of byNetns) {
    if (ps.length > 1) {
      for (const p of ps)
        skip(
          p,
          `shares network namespace ${path} with ${ps
            .filter((o) => o !== p)
            .map((o) => o.name)
            .join(
              ', ',
            )}: inbound interception is per netns (the pod's addresses), one policy each; neither intercepts until one is removed`,
        );
      continue;
    }
    const p = ps[0]!;
    let ns: NetnsHandle;
    try {
      ns = NetnsHandle.open(path, id);
    } catch (e) {
      skip(p, `netns ${path}: ${(e as Error).message}`);
      continue;
    }
    try {
      const pid = /^\/proc\/(\d+)\/ns\/net$/.exec(path)?.[1];
      const addresses = podAddresses(ns);
      const table = pid
        ? tableListeners(Number(pid))
        : parseTcpTables(runIn(ns, ['cat', '/proc/net/tcp', '/proc/net/tcp6']));
      const port = p.proxy.inbound!.port;
      const listenAddress = p.proxy.inbound!.address;
      const found = findListeners({ table, ownerPids: ownerPids(p), port });
      plan.targets.push({
        policy: p.name,
        file: p.file,
        slot: slots.get(p.name)!,
        netns: { path, id, ino: Number(id.split(':')[1]) },
        addresses,
        port,
        ...(listenAddress ? { listenAddress: { family: listenAddress.family, bytes: listenAddress.bytes } } : {}),
        candidates: candidatesFor(found, listenAddress),
        ...(pid ? { tablePid: Number(pid) } : {}),
        spec: {
          slot: slots.get(p.name)!,
          name: p.name,
          addresses,
          includePorts: p.inbound.includePorts,
          excludePorts: p.inbound.excludePorts,
          bypassSources: p.inbound.bypassSources,
          whenNoProxy: p.inbound.whenNoProxy,
        },
      });
    } catch (e) {
      skip(p, `cannot read netns ${path}: ${(e as Error).message}`);
    } finally {
      ns.close();
    }
  }
  const { entries, conflicts } = inboundEntries(plan.targets.map((t) => t.spec));
  plan.entries = entries;
  plan.conflicts = conflicts;
  return plan;
}
