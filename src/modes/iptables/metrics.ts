// metrics.ts — the iptables mode's metrics: the packet counters of our nat rules (iptables-save -c in each
// netns the state file remembers: outbound, inbound REDIRECT, DNS capture) and of the inbound TPROXY rule
// (mangle), summed per policy and rule kind. The nat table sees only the first packet of a connection, so a
// rule's packets are the connections (DNS: flows) it decided. Readiness: the state is readable and names
// where the rules are.
import { COMMON, Families, type BypassReason, type FamilyDef, type MetricFamily } from '../metrics.js';
import type { Readiness } from '../mode.js';
import { splitArgs } from './evaluate.js';
import { NetnsHandle, findNetns } from '../netns.js';
import { bin, type Runner } from './run.js';
import { appliedIn, fkey, readState, type Family } from './state.js';

/** What a rule of ours decides, as counted; jumps between our chains count nothing themselves. */
export type RuleKind =
  | { family: 'redirected' }
  | { family: 'bypassed'; reason: BypassReason }
  | { family: 'inboundRedirected' }
  | { family: 'inboundBypassed'; reason: 'port' | 'source' }
  | { family: 'dnsCaptured'; protocol: 'udp' | 'tcp' }
  | { family: 'dnsBypassed'; reason: 'proxy_cgroup' | 'mark' | 'owner' };

/** The loopback destinations the loopback rule names (rules.ts). */
const LOOPBACK_NET = new Set(['127.0.0.0/8', '::1/128', '::1']);

/** The kind of one of our rules, from its iptables-save form (`-A CHAIN …`); null for jumps. */
export function ruleKind(line: string): RuleKind | null {
  const args = splitArgs(line.replace(/^\[\d+:\d+\]\s*/, ''));
  if (args[0] !== '-A') return null;
  const chain = args[1];
  const value = (flag: string) => {
    const i = args.indexOf(flag);
    return i < 0 ? undefined : args[i + 1];
  };
  const target = value('-j');
  if (chain === 'MESHREDIR_DNS') {
    // DNS capture's nat chain: REDIRECT (a proxy on loopback) or DNAT (a node proxy), after the proxy's RETURNs.
    if (target === 'REDIRECT' || target === 'DNAT')
      return { family: 'dnsCaptured', protocol: value('-p') === 'tcp' ? 'tcp' : 'udp' };
    if (target !== 'RETURN') return null;
    if (value('--path') !== undefined) return { family: 'dnsBypassed', reason: 'proxy_cgroup' };
    if (value('--mark') !== undefined) return { family: 'dnsBypassed', reason: 'mark' };
    return { family: 'dnsBypassed', reason: 'owner' };
  }
  if (target === 'TPROXY' && chain === 'MESHREDIR_TPROXY') return { family: 'inboundRedirected' };
  if (target === 'REDIRECT') {
    if (chain === 'MESHREDIR_REDIRECT') return { family: 'redirected' };
    if (chain === 'MESHREDIR_IN_REDIRECT') return { family: 'inboundRedirected' };
    return null;
  }
  if (target !== 'RETURN' || !chain?.startsWith('MESHREDIR_')) return null;
  if (chain === 'MESHREDIR_INBOUND')
    return { family: 'inboundBypassed', reason: value('-s') !== undefined ? 'source' : 'port' };
  const bypass = (reason: BypassReason): RuleKind => ({ family: 'bypassed', reason });
  if (value('-s') !== undefined) return bypass('inbound_passthrough');
  if (value('--path') !== undefined) return bypass('proxy_cgroup');
  if (value('--mark') !== undefined) return bypass('mark');
  if (value('--uid-owner') !== undefined || value('--gid-owner') !== undefined) return bypass('owner');
  const dst = value('-d');
  if (dst !== undefined && value('--dport') !== undefined) return bypass('destination_is_proxy');
  if (value('--dport') !== undefined) return bypass('port');
  if (dst !== undefined) return bypass(LOOPBACK_NET.has(dst) ? 'loopback' : 'cidr');
  return null;
}

/** Packets of each of our rules in `iptables-save -c` output. */
export function ruleCounters(save: string): { line: string; packets: number }[] {
  const out: { line: string; packets: number }[] = [];
  for (const l of save.split('\n')) {
    const m = /^\[(\d+):\d+\]\s+(-A MESHREDIR_\S+ .*)$/.exec(l);
    if (m) out.push({ line: m[2]!, packets: Number(m[1]) });
  }
  return out;
}

const INBOUND_REDIRECTED = COMMON.inboundRedirected;
const INBOUND_BYPASSED = COMMON.inboundBypassed;
const DNS_CAPTURED: FamilyDef = {
  name: 'meshredir_dns_flows_captured_total',
  type: 'counter',
  help: "Port-53 flows of the policy's pod sent to its DNS proxy (nat sees a flow's first packet: a UDP conversation or a TCP connection), by protocol.",
  labelNames: ['policy', 'protocol'],
};
const DNS_BYPASSED: FamilyDef = {
  name: 'meshredir_dns_bypassed_total',
  type: 'counter',
  help: 'Port-53 calls of the policy left to go direct, by reason.',
  labelNames: ['policy', 'reason'],
};
/** The outbound reasons a rule of this mode can count (a family without a proxy has no rules at all). */
const REASONS: BypassReason[] = [
  'proxy_cgroup',
  'destination_is_proxy',
  'mark',
  'owner',
  'loopback',
  'port',
  'cidr',
  'inbound_passthrough',
];

/** The families the rule counters are summed into. */
const COUNTED: readonly FamilyDef[] = [
  COMMON.redirected,
  COMMON.bypassed,
  INBOUND_REDIRECTED,
  INBOUND_BYPASSED,
  DNS_CAPTURED,
  DNS_BYPASSED,
];

/** Sums rule counters per policy and kind into families (pure). */
export function natFamilies(byPolicy: Map<string, { line: string; packets: number }[]>): Families {
  const out = new Families();
  for (const d of COUNTED) out.declare(d);
  for (const [policy, rules] of byPolicy) {
    let redirected = 0;
    const bypassed = new Map<BypassReason, number>(REASONS.map((r) => [r, 0]));
    let inbound: number | undefined;
    const inboundBypassed = new Map<string, number>();
    const dnsCaptured = new Map<string, number>();
    const dnsBypassed = new Map<string, number>();
    const bump = (m: Map<string, number>, k: string, n: number) => m.set(k, (m.get(k) ?? 0) + n);
    for (const { line, packets } of rules) {
      const k = ruleKind(line);
      if (k?.family === 'redirected') redirected += packets;
      else if (k?.family === 'bypassed') bypassed.set(k.reason, (bypassed.get(k.reason) ?? 0) + packets);
      else if (k?.family === 'inboundRedirected') inbound = (inbound ?? 0) + packets;
      else if (k?.family === 'inboundBypassed') bump(inboundBypassed, k.reason, packets);
      else if (k?.family === 'dnsCaptured') bump(dnsCaptured, k.protocol, packets);
      else if (k?.family === 'dnsBypassed') bump(dnsBypassed, k.reason, packets);
    }
    out.add(COMMON.redirected, { policy }, redirected);
    for (const [reason, n] of bypassed) out.add(COMMON.bypassed, { policy, reason }, n);
    if (inbound !== undefined) out.add(INBOUND_REDIRECTED, { policy }, inbound);
    for (const [reason, n] of inboundBypassed) out.add(INBOUND_BYPASSED, { policy, reason }, n);
    for (const [protocol, n] of dnsCaptured) out.add(DNS_CAPTURED, { policy, protocol }, n);
    for (const [reason, n] of dnsBypassed) out.add(DNS_BYPASSED, { policy, reason }, n);
  }
  return out;
}

const READ_OK: FamilyDef = {
  name: 'meshredir_iptables_counters_readable',
  type: 'gauge',
  help: "Whether the nat counters of the policy's network namespace could be read at this scrape (0: the netns is gone or iptables failed; its counters are left out).",
  labelNames: ['policy'],
};

/** Every family this mode reports (docs and tests list them). */
export const IPTABLES_FAMILIES: readonly FamilyDef[] = [...COUNTED, READ_OK];

/** Every family, read from each remembered netns now (one iptables-save -c per family and netns). */
export function iptablesMetrics(run: Runner, stateFile: string): MetricFamily[] {
  const state = readState(stateFile);
  const byPolicy = new Map<string, { line: string; packets: number }[]>();
  const readable = new Map<string, boolean>();
  for (const e of Object.values(state.netns)) {
    const path = findNetns(e.id, e.path);
    let ok = path !== null;
    if (path) {
      try {
        const ns = NetnsHandle.open(path, e.id);
        try {
          for (const f of Object.keys(e.families).map((k) => Number(k) as Family)) {
            if (!e.families[fkey(f)]) continue;
            const rules = ruleCounters(run.run(ns, [bin(e.backend, f, 'save'), '-c', '-t', 'nat']));
            // Inbound TPROXY is in mangle, which sees every packet: only the TPROXY rule counts (a connection's
            // later packets are diverted before it, by the transparent-socket match).
            if (appliedIn(e.families[fkey(f)], 'mangle').some((l) => l.includes('-j TPROXY')))
              rules.push(
                ...ruleCounters(run.run(ns, [bin(e.backend, f, 'save'), '-c', '-t', 'mangle'])).filter((r) =>
                  r.line.includes('-j TPROXY'),
                ),
              );
            byPolicy.set(e.policy, [...(byPolicy.get(e.policy) ?? []), ...rules]);
          }
        } finally {
          ns.close();
        }
      } catch {
        ok = false;
        byPolicy.delete(e.policy);
      }
    }
    readable.set(e.policy, ok && (readable.get(e.policy) ?? true));
  }
  const out = natFamilies(byPolicy);
  for (const [policy, ok] of readable) out.add(READ_OK, { policy }, ok ? 1 : 0);
  return out.list();
}

/** Ready when the state file, which says where our rules are, can be read. */
export function iptablesReadiness(stateFile: string): Readiness {
  try {
    const s = readState(stateFile);
    return { ready: true, reason: `rules applied in ${Object.keys(s.netns).length} network namespace(s)` };
  } catch (e) {
    return { ready: false, reason: (e as Error).message };
  }
}
