// tables.ts — the tables our rules live in, each with its chains, the jumps into them from the built-in
// chains, and what a policy puts there: raw (DNS capture's conntrack zones; dns-rules.ts), nat (outbound
// REDIRECT, inbound REDIRECT; rules.ts — and DNS capture's REDIRECT/DNAT, whose jump goes first) and
// mangle (inbound TPROXY; tproxy.ts). A traffic feature adds its table or its chains here; apply, drift,
// status and cleanup go through this list, so every table is saved, restored and removed the same way.
// raw comes first: the zones are in place before the nat rules capture (removal takes them in the same
// order, one restore). Pure.
import type { Policy } from '../../policy/schema.js';
import { CHAINS, JUMPS, families, jumpLines, natWanted, renderChains, unsupported } from './rules.js';
import { MANGLE_CHAINS, MANGLE_JUMPS, inboundTproxy, renderTproxy, tproxyJumps } from './tproxy.js';
import { DNS_CHAINS, dnsFamilies, dnsJumpLines, dnsNatChain, dnsRawChains, unsupportedDns } from './dns-rules.js';

export type Table = 'raw' | 'nat' | 'mangle';

export interface TableSpec {
  table: Table;
  /** Every chain of ours in this table (a removal deletes them all). */
  chains: readonly string[];
  jumps: readonly { from: string; to: string }[];
  /** Whether the policy has anything in this table for the family. */
  wanted(p: Policy, family: 4 | 6): boolean;
  /** Our chains, declared and flushed, then filled; `bypassCgroups`: the bypass cgroups that exist (the
   * kernel refuses a -m cgroup path that does not; default: all the policy's). */
  chainLines(p: Policy, family: 4 | 6, bypassCgroups?: readonly string[]): string[];
  /** The jumps from the built-in chains the policy needs. */
  jumpLines(p: Policy, family: 4 | 6): string[];
}

const opts = (family: 4 | 6, bypassCgroups?: readonly string[]) => ({
  family,
  ...(bypassCgroups ? { bypassCgroups } : {}),
});

export const TABLES: readonly TableSpec[] = [
  {
    table: 'raw',
    chains: DNS_CHAINS.raw,
    jumps: [
      { from: 'OUTPUT', to: 'MESHREDIR_DNS' },
      { from: 'PREROUTING', to: 'MESHREDIR_DNS_IN' },
    ],
    wanted: (p, family) => dnsRawChains(p, { family }).length > 0,
    chainLines: (p, family, bypassCgroups) => dnsRawChains(p, opts(family, bypassCgroups)),
    jumpLines: (p, family) => dnsJumpLines(p, { family }).raw,
  },
  {
    table: 'nat',
    chains: [...CHAINS, ...DNS_CHAINS.nat],
    // DNS's jump is inserted first (-I OUTPUT 1): TCP 53 is decided before MESHREDIR_OUTPUT could take it.
    jumps: [...JUMPS, { from: 'OUTPUT', to: 'MESHREDIR_DNS' }],
    wanted: (p, family) => natWanted(p, family) || dnsNatChain(p, { family }).length > 0,
    chainLines: (p, family, bypassCgroups) => [
      ...renderChains(p, opts(family, bypassCgroups)),
      ...dnsNatChain(p, opts(family, bypassCgroups)),
    ],
    jumpLines: (p, family) => [...jumpLines(p, { family }), ...dnsJumpLines(p, { family }).nat],
  },
  {
    table: 'mangle',
    chains: MANGLE_CHAINS,
    jumps: MANGLE_JUMPS,
    wanted: (p) => inboundTproxy(p),
    chainLines: (p, family) => renderTproxy(p, family),
    jumpLines: (p) => tproxyJumps(p),
  },
];

export const tableSpec = (t: Table): TableSpec => TABLES.find((x) => x.table === t)!;

/** The families a policy needs rules in: outbound or inbound (rules.ts), or DNS capture. */
export function policyFamilies(p: Policy): (4 | 6)[] {
  const f = new Set([...families(p), ...dnsFamilies(p)]);
  return ([4, 6] as const).filter((x) => f.has(x));
}

/** What the iptables mode cannot do for this policy (its outbound/inbound rules, its DNS capture). */
export function unsupportedAll(p: Policy): string[] {
  return [...unsupported(p), ...unsupportedDns(p)];
}

/** The line a jump is restored with: `-A from …` or, for DNS's nat jump, `-I from 1 …`. */
export const jumpLineRe = (from: string, to: string): RegExp => new RegExp(`^-(A|I) ${from} (1 )?.*-j ${to}(\\s|$)`);

/** What a policy's tables look like for one family, as compared across reconciles: a changed policy changes it.
 * (nat alone is written as it always was, so an upgrade finds existing rules in sync.) */
export function renderedTables(p: Policy, family: 4 | 6, bypassCgroups?: readonly string[]): string {
  return TABLES.filter((t) => t.wanted(p, family))
    .map((t) => (t.table === 'nat' ? '' : `*${t.table}\n`) + t.chainLines(p, family, bypassCgroups).join('\n'))
    .join('\n');
}

/**
 * The exact `iptables-restore --noflush` input for a network namespace that has none of our rules yet,
 * every table the policy uses (golden files, `iptables-rules`).
 */
export function renderPolicy(p: Policy, family: 4 | 6): string {
  return TABLES.filter((t) => t.wanted(p, family))
    .flatMap((t) => [`*${t.table}`, ...t.chainLines(p, family), ...t.jumpLines(p, family), 'COMMIT'])
    .concat([''])
    .join('\n');
}
