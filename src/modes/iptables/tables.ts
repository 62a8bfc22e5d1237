// tables.ts — the tables our rules live in, each with its chains, the jumps into them from the built-in
// chains, and what a policy puts there: nat (outbound REDIRECT, inbound REDIRECT; rules.ts) and mangle
// (inbound TPROXY; tproxy.ts). A traffic feature adds its table here (DNS: raw); apply, drift, status and
// cleanup go through this list, so every table is saved, restored and removed the same way. Pure.
import type { Policy } from '../../policy/schema.js';
import { CHAINS, JUMPS, jumpLines, natWanted, renderChains } from './rules.js';
import { MANGLE_CHAINS, MANGLE_JUMPS, inboundTproxy, renderTproxy, tproxyJumps } from './tproxy.js';

export type Table = 'nat' | 'mangle';

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

export const TABLES: readonly TableSpec[] = [
  {
    table: 'nat',
    chains: CHAINS,
    jumps: JUMPS,
    wanted: natWanted,
    chainLines: (p, family, bypassCgroups) => renderChains(p, { family, ...(bypassCgroups ? { bypassCgroups } : {}) }),
    jumpLines: (p, family) => jumpLines(p, { family }),
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
