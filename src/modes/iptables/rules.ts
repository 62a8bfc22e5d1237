// rules.ts — a policy as istio-style nat rules (iptables-restore input): pure, golden-tested.
// Layout follows istio-iptables: OUTPUT → MESHREDIR_OUTPUT → MESHREDIR_REDIRECT (REDIRECT to the
// outbound proxy port); PREROUTING → MESHREDIR_INBOUND → MESHREDIR_IN_REDIRECT (inbound port), or, with
// `interception: tproxy`, the mangle rules of tproxy.ts instead. tables.ts puts the tables together.
// The outbound decision is the eBPF mode's, in the same order (docs/policy.md, "Decision order"): bypass
// cgroup → proxy itself → mark → uid/gid → loopback → ports → CIDR longest-prefix match → redirect.
import type { Policy } from '../../policy/schema.js';
import { isLoopback, type Cidr } from '../../policy/addr.js';

export interface RuleOptions {
  family: 4 | 6;
  /**
   * The bypass cgroups to render (default: all of the policy's). The kernel resolves a `-m cgroup --path`
   * when the rule is added and refuses a path that does not exist, so the agent passes those that exist.
   */
  bypassCgroups?: readonly string[];
}

export const CHAINS = [
  'MESHREDIR_OUTPUT',
  'MESHREDIR_REDIRECT',
  'MESHREDIR_INBOUND',
  'MESHREDIR_IN_REDIRECT',
  'MESHREDIR_DEST',
] as const;

/** Where each built-in chain jumps into ours. */
export const JUMPS = [
  { from: 'OUTPUT', to: 'MESHREDIR_OUTPUT' },
  { from: 'PREROUTING', to: 'MESHREDIR_INBOUND' },
] as const;

const q = (s: string) => `"${s.replace(/(["\\])/g, '\\$1')}"`;

/** The only addresses a nat OUTPUT REDIRECT can send to: it rewrites to the loopback address. */
export const REDIRECT_TARGET = { 4: '127.0.0.1', 6: '::1' } as const;

/** Whether the policy intercepts inbound connections with nat REDIRECT (else TPROXY, or not at all). */
export const inboundRedirect = (p: Policy): boolean =>
  p.proxy.inbound !== undefined && p.inbound.interception === 'redirect';

/** The policy's bypass sources of one family (spec.inbound.bypassSources). */
export const sourcesOf = (p: Policy, family: 4 | 6): Cidr[] =>
  p.inbound.bypassSources.filter((c) => c.family === family);

/** Whether the nat table holds anything of this policy for the family. */
export function natWanted(p: Policy, family: 4 | 6): boolean {
  return Boolean(family === 4 ? p.proxy.outbound : p.proxy.outbound6) || inboundRedirect(p);
}

/** The comment of every rule of a policy (xt_comment holds at most 255 characters). */
export const ruleComment = (p: Policy): string => `-m comment --comment ${q(`meshredir:${p.name}`.slice(0, 255))}`;

/** Appends `rule` to `chain` in `lines`, with the policy's comment just before its -j. */
export function addRule(lines: string[], comment: string, chain: string, rule: string): void {
  const at = rule.lastIndexOf('-j ');
  lines.push(`-A ${chain} ${rule.slice(0, at)}${comment} ${rule.slice(at)}`.replace(/\s+/g, ' ').trim());
}

/** The families a policy needs rules for: outbound for that family, or inbound (both families). */
export function families(p: Policy): (4 | 6)[] {
  return ([4, 6] as const).filter(
    (f) => Boolean(f === 4 ? p.proxy.outbound : p.proxy.outbound6) || p.proxy.inbound !== undefined,
  );
}

/**
 * CIDRs of one family, include and exclude, longest prefix first: in a first-match chain that is a
 * longest-prefix match, so an exclude inside a wider include wins and an include inside a wider
 * exclude wins, as in the eBPF mode's LPM trie. Equal prefixes of one family are disjoint (the schema
 * rejects one CIDR in both lists), so their order does not matter; it is kept stable for reviews.
 */
export function cidrRules(p: Policy, family: 4 | 6): { cidr: Cidr; action: 'include' | 'exclude' }[] {
  const all = [
    ...p.outbound.includeCidrs.filter((c) => c.family === family).map((cidr) => ({ cidr, action: 'include' as const })),
    ...p.outbound.excludeCidrs.filter((c) => c.family === family).map((cidr) => ({ cidr, action: 'exclude' as const })),
  ];
  const seen = new Set<string>();
  return all
    .map((r, i) => ({ r, i }))
    .sort((a, b) => b.r.cidr.prefix - a.r.cidr.prefix || a.i - b.i)
    .map(({ r }) => r)
    .filter((r) => (seen.has(r.cidr.text) ? false : (seen.add(r.cidr.text), true)));
}

/** The jump lines (iptables-restore syntax) from the built-in chains this policy needs. */
export function jumpLines(p: Policy, { family }: RuleOptions): string[] {
  const proxy = family === 4 ? p.proxy.outbound : p.proxy.outbound6;
  const out: string[] = [];
  if (proxy) out.push('-A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT');
  if (inboundRedirect(p)) out.push('-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND');
  return out;
}

/**
 * The proxy as each bypass names it, as iptables matches: its cgroups (the one a socket was created in,
 * or below), its marks, its uids and gids. Other rule sets that must spare the proxy use these too.
 */
export function proxyMatches(
  p: Policy,
  bypassCgroups: readonly string[] = p.bypass.cgroups,
): { cgroups: string[]; marks: string[]; owners: string[] } {
  return {
    cgroups: bypassCgroups.map((cg) => `-m cgroup --path ${q(cg)}`),
    marks: p.bypass.marks.map((m) => `-m mark --mark ${m.text}`),
    owners: [
      ...p.bypass.uids.map((u) => `-m owner --uid-owner ${u}`),
      ...p.bypass.gids.map((g) => `-m owner --gid-owner ${g}`),
    ],
  };
}

/**
 * Our chains, declared and flushed, then filled: the part of the iptables-restore --noflush input
 * that is the same in every netns. Foreign chains are never named.
 */
export function renderChains(p: Policy, { family, bypassCgroups = p.bypass.cgroups }: RuleOptions): string[] {
  const c = ruleComment(p);
  const passthrough = family === 4 ? '127.0.0.6/32' : '::6/128';
  const lo = family === 4 ? '127.0.0.1/32' : '::1/128';
  const loopbackNet = family === 4 ? '127.0.0.0/8' : '::1/128';
  const host = family === 4 ? '/32' : '/128';
  const proxy = family === 4 ? p.proxy.outbound : p.proxy.outbound6;
  const lines: string[] = [...CHAINS.map((ch) => `:${ch} - [0:0]`), ...CHAINS.map((ch) => `-F ${ch}`)];
  const add = (chain: string, rule: string) => addRule(lines, c, chain, rule);
  const inbound = p.proxy.inbound?.port;
  const { cgroups, marks, owners } = proxyMatches(p, bypassCgroups);
  const proxyKnown = cgroups.length + marks.length + owners.length > 0;

  // MESHREDIR_IN_REDIRECT serves inbound REDIRECT, and (both interceptions, as istio does) the proxy's
  // own calls to its pod address below.
  if (inbound !== undefined && (inboundRedirect(p) || (proxy && proxyKnown)))
    add('MESHREDIR_IN_REDIRECT', `-p tcp -j REDIRECT --to-ports ${inbound}`);
  if (inboundRedirect(p)) {
    for (const src of sourcesOf(p, family)) add('MESHREDIR_INBOUND', `-s ${src.text} -p tcp -j RETURN`);
    for (const port of p.inbound.excludePorts) add('MESHREDIR_INBOUND', `-p tcp --dport ${port} -j RETURN`);
    for (const port of p.inbound.includePorts)
      add('MESHREDIR_INBOUND', `-p tcp --dport ${port} -j MESHREDIR_IN_REDIRECT`);
    if (p.inbound.includePorts.length === 0) add('MESHREDIR_INBOUND', '-p tcp -j MESHREDIR_IN_REDIRECT');
  }

  if (proxy) {
    add('MESHREDIR_REDIRECT', `-p tcp -j REDIRECT --to-ports ${proxy.port}`);
    if (inbound !== undefined) {
      // istio, inbound only: what the inbound proxy sends to the app from 127.0.0.6 passes through,
      // and the proxy's own calls to this pod's address over lo go to the inbound listener.
      add('MESHREDIR_OUTPUT', `-s ${passthrough} -o lo -j RETURN`);
      for (const m of [...cgroups, ...marks, ...owners])
        add('MESHREDIR_OUTPUT', `! -d ${lo} -o lo -p tcp ! --dport ${inbound} ${m} -j MESHREDIR_IN_REDIRECT`);
    }
    for (const m of cgroups) add('MESHREDIR_OUTPUT', `${m} -j RETURN`);
    // A workload dialling the proxy itself is already where it would be sent.
    add('MESHREDIR_OUTPUT', `-d ${REDIRECT_TARGET[family]}${host} -p tcp --dport ${proxy.port} -j RETURN`);
    for (const m of [...marks, ...owners]) add('MESHREDIR_OUTPUT', `${m} -j RETURN`);
    // Unlike istio (which returns everything an app sends over lo), loopback means what it means in
    // the eBPF mode: a loopback destination; with redirectLoopback it is redirected like any other.
    if (!p.outbound.redirectLoopback) add('MESHREDIR_OUTPUT', `-d ${loopbackNet} -j RETURN`);
    for (const port of p.outbound.excludePorts) add('MESHREDIR_OUTPUT', `-p tcp --dport ${port} -j RETURN`);
    // The destination decision: CIDRs by longest prefix, then the default (redirect unless an
    // include list exists — for either family, as in the eBPF mode).
    const ports = p.outbound.includePorts;
    const dest = ports.length > 0 ? 'MESHREDIR_DEST' : 'MESHREDIR_OUTPUT';
    for (const port of ports) add('MESHREDIR_OUTPUT', `-p tcp --dport ${port} -j MESHREDIR_DEST`);
    for (const { cidr, action } of cidrRules(p, family))
      add(dest, `-d ${cidr.text} -j ${action === 'include' ? 'MESHREDIR_REDIRECT' : 'RETURN'}`);
    if (p.outbound.includeCidrs.length === 0) add(dest, '-j MESHREDIR_REDIRECT');
  }
  return lines;
}

/**
 * The nat table's part of the `iptables-restore --noflush` input in a network namespace that has none of
 * our rules yet: our chains, and the jumps from the built-in chains. (In a namespace that already has a
 * jump, the apply leaves that line out rather than adding a second one.) Every table: tables.ts.
 */
export function renderRestore(p: Policy, opts: RuleOptions): string {
  return ['*nat', ...renderChains(p, opts), ...jumpLines(p, opts), 'COMMIT', ''].join('\n');
}

/** What the iptables mode cannot do for this policy; non-empty = the policy is rejected in this mode. */
export function unsupported(p: Policy): string[] {
  const out: string[] = [];
  const b = p.bypass;
  const outbound = Boolean(p.proxy.outbound || p.proxy.outbound6);
  if (outbound && b.cgroups.length + b.uids.length + b.gids.length + b.marks.length === 0) {
    out.push(
      "spec.proxy.bypass: the rules cover the whole pod network namespace, proxy included; without bypass cgroups, marks, uids or gids the proxy's own connections would be redirected back to it",
    );
  }
  for (const cg of b.cgroups.filter((c) => !CGROUP_PATH.test(c))) {
    out.push(
      `spec.proxy.bypass.cgroups: ${JSON.stringify(cg)} — iptables mode writes a bypass cgroup into a rule (-m cgroup --path), which takes letters, digits and . _ - : @ + = , / only`,
    );
  }
  for (const [field, ep] of [
    ['outbound', p.proxy.outbound],
    ['outbound6', p.proxy.outbound6],
  ] as const) {
    if (!ep) continue;
    const loopback = isLoopback(ep);
    const target = ep.family === 4 ? `${REDIRECT_TARGET[4]}:${ep.port}` : `[${REDIRECT_TARGET[6]}]:${ep.port}`;
    if (!loopback) {
      out.push(
        `spec.proxy.${field}: ${ep.text} — iptables REDIRECT can only send to a proxy listening in the pod's own network namespace (it rewrites to the local address and port ${ep.port}), and SO_ORIGINAL_DST only works where the NAT happened; use ${target}, or the eBPF mode for a proxy in another namespace`,
      );
    } else if (ep.text !== target) {
      out.push(
        `spec.proxy.${field}: ${ep.text} — iptables REDIRECT in the nat OUTPUT chain always rewrites to ${REDIRECT_TARGET[ep.family]} (port ${ep.port}), never to another loopback address; use ${target} and have the proxy listen there (or on the wildcard address)`,
      );
    }
  }
  if (p.accelerate) out.push('spec.accelerate: the sk_msg fast path needs the eBPF mode');
  const ep = p.proxy.inbound?.address;
  if (ep) {
    out.push(
      `spec.proxy.inbound: ${ep.text} — in iptables mode the inbound proxy is named by its port alone (${ep.port}): ${
        p.inbound.interception === 'redirect'
          ? "REDIRECT sends a connection to the pod's own address at that port, so the proxy listens on the wildcard address"
          : 'TPROXY hands a connection to the transparent listener on that port, bound to the wildcard address'
      }; an exact listener address is for the eBPF mode`,
    );
  }
  return out;
}

/** Cgroup paths a rule carries as they are (Kubernetes' cgroupfs and systemd paths use only these). */
const CGROUP_PATH = /^\/[A-Za-z0-9._:@+=,/-]*$/;

/** Fields this mode ignores, with why (reported, not fatal). */
export function ignoredFields(p: Policy): string[] {
  const out: string[] = [];
  if (p.proxy.inbound && p.inbound.whenNoProxy === 'pass') {
    out.push(
      `spec.inbound.whenNoProxy: pass needs the eBPF mode; without its proxy an intercepted connection is ${
        p.inbound.interception === 'redirect'
          ? 'refused (REDIRECT to a port nothing listens on)'
          : 'dropped (TPROXY finds no transparent listener; the client times out)'
      }`,
    );
  }
  return out;
}

/** The limits of this mode, as status and docs/modes.md state them. */
export const LIMITS = [
  'scope: the rules live in the pod network namespace and apply to every process in it (all containers of the pod, and anything else sharing that netns), not only to the policy cgroup',
  'one policy per network namespace (two policies resolving to one netns are both refused)',
  'the host network namespace is never used (a hostNetwork pod cannot be covered in this mode)',
  'the proxy must listen in the pod netns on 127.0.0.1 / ::1 (REDIRECT rewrites to the loopback address; SO_ORIGINAL_DST works only where the NAT happened)',
  "inbound: the proxy listens on the wildcard address of its port (REDIRECT: reached at the pod's address; TPROXY: a transparent listener); without it REDIRECT refuses and TPROXY drops (whenNoProxy: pass needs the eBPF mode)",
  'a bypass cgroup matches the cgroup a socket was created in (-m cgroup), and one deleted and re-created under the same path takes effect at the next reconcile (the kernel resolves the path when the rule is added)',
  "DNS capture: conntrack zones 1 and 2 in the pod netns (istio's numbers; a CNI using zones there would collide); its counters count flows, not queries; with all: true, a DNS server in the pod answering a client whose source port is 53 has its reply captured; after cleanup, captured UDP flows keep their NAT until their conntrack entry expires (30 s idle)",
  'no sk_msg fast path (spec.accelerate)',
];
