// dns-rules.ts — a policy's DNS capture as iptables rules (iptables-restore input): pure, golden-tested.
// nat: OUTPUT → MESHREDIR_DNS, inserted first (TCP 53 must not reach MESHREDIR_OUTPUT's redirect to the
// outbound proxy): owner RETURN for the proxy's uids/gids, then UDP (and TCP) port 53 to the captured
// destinations → REDIRECT to a proxy on 127.0.0.1/::1, or DNAT to any other proxy address (a DNS proxy
// needs no SO_ORIGINAL_DST, so unlike outbound it may be a node address or another loopback address).
// raw, only for a proxy in the pod netns (loopback): conntrack zones as istio learnt (its
// addDNSConntrackZones) — the app↔proxy conversations in zone 2, every other port-53 conversation (the
// proxy's upstream queries first) in zone 1. Without them a UDP conntrack entry of an app's redirected
// query outlives its socket (30 s), and the proxy's upstream query that happens to reuse that 5-tuple is
// NATed by it back to the proxy itself (docs/dns-design.md shows it happen).
import type { Policy } from '../../policy/schema.js';
import { isLoopback, type Endpoint } from '../../policy/addr.js';
import { REDIRECT_TARGET, proxyMatches } from './rules.js';

export interface DnsRuleOptions {
  family: 4 | 6;
  /** The bypass cgroups to render (default: all of the policy's): those that exist (rules.ts, RuleOptions). */
  bypassCgroups?: readonly string[];
}

/** Our chains per table. */
export const DNS_CHAINS = { nat: ['MESHREDIR_DNS'], raw: ['MESHREDIR_DNS', 'MESHREDIR_DNS_IN'] } as const;

/** Conntrack zones (istio's numbers): captured app↔proxy conversations, and every other on port 53. */
export const ZONE_CAPTURED = 2;
export const ZONE_OTHER = 1;

const q = (s: string) => `"${s.replace(/(["\\])/g, '\\$1')}"`;

function proxyOf(p: Policy, family: 4 | 6): Endpoint | undefined {
  return family === 4 ? p.dns?.proxy : p.dns?.proxy6;
}

/** The destinations captured in this family: every one (null) or the listed nameservers' host routes. */
function destinations(p: Policy, family: 4 | 6): string[] | null {
  if (p.dns?.all) return null;
  return (p.dns?.nameservers ?? [])
    .filter((n) => n.family === family)
    .map((n) => `${n.text}/${family === 4 ? 32 : 128}`);
}

/** The families this policy captures DNS in: a proxy for the family and something to capture. */
export function dnsFamilies(p: Policy): (4 | 6)[] {
  return ([4, 6] as const).filter((f) => {
    const dests = destinations(p, f);
    return Boolean(proxyOf(p, f)) && (dests === null || dests.length > 0);
  });
}

/** Whether the proxy of this family is in the pod netns (loopback): its own upstream queries leave from
 * this netns's conntrack, so the zones are needed. */
export function needsZones(p: Policy, family: 4 | 6): boolean {
  const proxy = proxyOf(p, family);
  return Boolean(proxy && isLoopback(proxy));
}

/** REDIRECT where it reaches the proxy (it rewrites to 127.0.0.1 / ::1), DNAT to any other address. */
function target(proxy: Endpoint): string {
  const redirect = proxy.family === 4 ? proxy.bytes.join('.') === REDIRECT_TARGET[4] : isLoopback(proxy);
  return redirect ? `REDIRECT --to-ports ${proxy.port}` : `DNAT --to-destination ${proxy.text}`;
}

const hostOf = (e: Endpoint) =>
  `${e.text.replace(/:\d+$/, '').replace(/^\[(.*)\]$/, '$1')}/${e.family === 4 ? 32 : 128}`;

/** The DNS proxy as the outbound rules recognise the proxy: its cgroups, marks, uids and gids. */
function proxyOwn(p: Policy, bypassCgroups?: readonly string[]): string[] {
  const m = proxyMatches(p, bypassCgroups);
  return [...m.cgroups, ...m.marks, ...m.owners];
}

/** Rule lines with the policy's comment before the target, as rules.ts writes them. */
function adder(p: Policy, lines: string[]) {
  const c = `-m comment --comment ${q(`meshredir:${p.name}`.slice(0, 255))}`;
  return (chain: string, rule: string) => {
    const at = rule.lastIndexOf('-j ');
    lines.push(`-A ${chain} ${rule.slice(0, at)}${c} ${rule.slice(at)}`.replace(/\s+/g, ' ').trim());
  };
}

/** nat: MESHREDIR_DNS declared, flushed and filled. Empty when the family captures nothing. */
export function dnsNatChain(p: Policy, { family, bypassCgroups }: DnsRuleOptions): string[] {
  const proxy = proxyOf(p, family);
  if (!p.dns || !proxy || !dnsFamilies(p).includes(family)) return [];
  const lines = DNS_CHAINS.nat.flatMap((ch) => [`:${ch} - [0:0]`, `-F ${ch}`]);
  const add = adder(p, lines);
  const protos = p.dns.tcp ? ['udp', 'tcp'] : ['udp'];
  for (const m of proxyOwn(p, bypassCgroups)) add('MESHREDIR_DNS', `${m} -j RETURN`);
  // A proxy listening on port 53 itself is already where its queries would go.
  if (proxy.port === 53) {
    for (const pr of protos) add('MESHREDIR_DNS', `-d ${hostOf(proxy)} -p ${pr} --dport 53 -j RETURN`);
  }
  for (const d of destinations(p, family) ?? [null])
    for (const pr of protos) add('MESHREDIR_DNS', `${d ? `-d ${d} ` : ''}-p ${pr} --dport 53 -j ${target(proxy)}`);
  return lines;
}

/** raw: the conntrack zones (only for a proxy in the pod netns; UDP only, as TCP has no such race). */
export function dnsRawChains(p: Policy, { family, bypassCgroups }: DnsRuleOptions): string[] {
  const proxy = proxyOf(p, family);
  if (!p.dns || !proxy || !dnsFamilies(p).includes(family) || !needsZones(p, family)) return [];
  const lines = DNS_CHAINS.raw.flatMap((ch) => [`:${ch} - [0:0]`]).concat(DNS_CHAINS.raw.map((ch) => `-F ${ch}`));
  const add = adder(p, lines);
  // The kernel's port-unreachable for a query that reached no proxy (it is down) must be looked up in
  // the zone of that query, else conntrack cannot relate it and undo the NAT in it, and the app's
  // connected socket times out instead of seeing ECONNREFUSED (istio's zones alone do that).
  add(
    'MESHREDIR_DNS',
    family === 4
      ? `-s ${hostOf(proxy)} -p icmp --icmp-type destination-unreachable -j CT --zone ${ZONE_CAPTURED}`
      : `-s ${hostOf(proxy)} -p ipv6-icmp --icmpv6-type destination-unreachable -j CT --zone ${ZONE_CAPTURED}`,
  );
  // The first CT target a packet meets sets its zone; later ones leave it (xt_CT skips a packet that
  // already has a conntrack template), so the proxy's own packets are matched first.
  for (const m of proxyOwn(p, bypassCgroups)) {
    add('MESHREDIR_DNS', `-p udp --dport 53 ${m} -j CT --zone ${ZONE_OTHER}`);
    add('MESHREDIR_DNS', `-p udp --sport ${proxy.port} ${m} -j CT --zone ${ZONE_CAPTURED}`);
  }
  for (const d of destinations(p, family) ?? [null])
    add('MESHREDIR_DNS', `${d ? `-d ${d} ` : ''}-p udp --dport 53 -j CT --zone ${ZONE_CAPTURED}`);
  // Port-53 conversations that are not captured (other destinations) are in the zone of the replies
  // that PREROUTING puts every port-53 reply in, so that their state stays one conversation.
  if (!p.dns.all) add('MESHREDIR_DNS', `-p udp --dport 53 -j CT --zone ${ZONE_OTHER}`);
  add('MESHREDIR_DNS_IN', `-p udp --sport 53 -j CT --zone ${ZONE_OTHER}`);
  return lines;
}

/** The jumps from the built-in chains. The nat one is inserted first, ahead of MESHREDIR_OUTPUT. */
export function dnsJumpLines(p: Policy, opts: DnsRuleOptions): { nat: string[]; raw: string[] } {
  const nat = dnsNatChain(p, opts).length ? ['-I OUTPUT 1 -m comment --comment meshredir -j MESHREDIR_DNS'] : [];
  const raw = dnsRawChains(p, opts).length
    ? [
        '-A OUTPUT -m comment --comment meshredir -j MESHREDIR_DNS',
        '-A PREROUTING -m comment --comment meshredir -j MESHREDIR_DNS_IN',
      ]
    : [];
  return { nat, raw };
}

/** The exact `iptables-restore --noflush` input for a netns without our DNS rules ("" when none). */
export function renderDnsRestore(p: Policy, opts: DnsRuleOptions): string {
  const raw = dnsRawChains(p, opts);
  const nat = dnsNatChain(p, opts);
  const jumps = dnsJumpLines(p, opts);
  const out: string[] = [];
  if (raw.length) out.push('*raw', ...raw, ...jumps.raw, 'COMMIT');
  if (nat.length) out.push('*nat', ...nat, ...jumps.nat, 'COMMIT');
  return out.length ? [...out, ''].join('\n') : '';
}

/** What this mode cannot do for the policy's DNS capture; non-empty = not applied. */
export function unsupportedDns(p: Policy): string[] {
  if (!p.dns) return [];
  const out: string[] = [];
  const loopbackProxy = ([4, 6] as const).some((f) => needsZones(p, f));
  const b = p.bypass;
  if (loopbackProxy && b.cgroups.length + b.marks.length + b.uids.length + b.gids.length === 0)
    out.push(
      'spec.dns: the rules cover the whole pod network namespace, DNS proxy included; without spec.proxy.bypass cgroups, marks, uids or gids its own queries to the nameservers would be captured back to it',
    );
  return out;
}
