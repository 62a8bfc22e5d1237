// state.ts — the iptables mode's memory (the --iptables-state file): per network namespace (by inode)
// the backend and the lines we applied, per policy what the last reconcile did. Without it we could not
// find our rules again once the process we reached a netns through has gone.
import { readFileSync } from 'node:fs';
import { writeJsonAtomic } from '../../util/json-file.js';
import type { Route } from './tproxy.js';
import type { Table } from './tables.js';

export type Backend = 'nft' | 'legacy';
export type Family = 4 | 6;
export const fkey = (f: Family) => String(f) as '4' | '6';

export class IptablesError extends Error {}

export interface FamilyState {
  /** Our chains as rendered (renderedTables): a changed policy changes it. */
  rendered: string;
  /** Our nat lines as iptables-save printed them right after applying. */
  applied: string[];
  /** The same for our other tables (mangle: TPROXY), when we have lines there. */
  tables?: Partial<Record<Exclude<Table, 'nat'>, string[]>>;
  /**
   * The bypass cgroups the rules name (-m cgroup --path), each with the id it had just before the restore:
   * the kernel resolved the path then, so a cgroup deleted and re-created since (a new id) has a rule
   * that points at the old one, and is re-applied. Absent: none (or a state written before they existed).
   */
  cgroups?: Record<string, string>;
}

/** Our lines of one table, as applied. */
export const appliedIn = (fs: FamilyState | undefined, t: Table): string[] =>
  t === 'nat' ? (fs?.applied ?? []) : (fs?.tables?.[t] ?? []);

export interface NetnsState {
  /** dev:ino of the netns: its identity. */
  id: string;
  /** The path it was last reached by (a hint: a pid's ns/net can go while the netns lives on). */
  path: string;
  backend: Backend;
  policy: string;
  cgroup: string;
  families: Partial<Record<'4' | '6', FamilyState>>;
  /** Backends our rules still have to be removed from (a move whose removal failed). */
  stale: { backend: Backend; families: Family[] }[];
  /** Policy routing we made here (TPROXY's ip rule and local route): removed with the rules. */
  routes?: Route[];
}

export interface PolicyStatus {
  policy: string;
  cgroup: string;
  outcome: 'applied' | 'skipped' | 'failed';
  reason?: string;
  netns?: string;
  netnsId?: string;
  backend?: Backend;
  families?: string[];
}

export interface State {
  version: 2;
  netns: Record<string, NetnsState>;
  policies: Record<string, PolicyStatus>;
}

export function readState(file: string): State {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 2, netns: {}, policies: {} };
    throw new IptablesError(`cannot read the iptables state ${file}: ${(e as Error).message}`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    // Forgetting it would forget which netns hold our rules: refuse instead.
    throw new IptablesError(
      `${file} is not valid JSON (${(e as Error).message}); fix or remove it (after removing MESHREDIR chains by hand)`,
    );
  }
  return migrate(raw, file);
}

export function writeState(file: string, s: State): void {
  writeJsonAtomic(file, s, { mkdir: true });
}

/** Reads a state file of any version we wrote into the current shape (v1: one path per netns). */
function migrate(raw: unknown, file: string): State {
  const s = raw as {
    version?: number;
    netns?: Record<string, Record<string, unknown>>;
    policies?: Record<string, PolicyStatus>;
  };
  if (typeof s !== 'object' || s === null || typeof s.netns !== 'object')
    throw new IptablesError(`${file}: not an iptables state file (no "netns" object)`);
  if (s.version === 2) return { ...(s as unknown as State), policies: s.policies ?? {} };
  if (s.version !== undefined)
    throw new IptablesError(`${file}: state version ${s.version} is newer than this meshredir understands`);
  const netns: Record<string, NetnsState> = {};
  for (const [id, v] of Object.entries(s.netns)) {
    const applied = (v.applied ?? {}) as Record<string, string[]>;
    const fams: Partial<Record<'4' | '6', FamilyState>> = {};
    for (const f of ['4', '6'] as const)
      if ((applied[f] ?? []).length) fams[f] = { rendered: '', applied: applied[f]! };
    netns[id] = {
      id,
      path: String(v.path),
      backend: v.backend as Backend,
      policy: ((v.policies as string[]) ?? [])[0] ?? '',
      cgroup: '',
      families: fams,
      stale: [],
    };
  }
  return { version: 2, netns, policies: {} };
}
