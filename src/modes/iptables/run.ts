// run.ts — iptables in a network namespace: commands run through nsenter on an open netns fd, the
// backend (nft or legacy) chosen per netns, and our tables (tables.ts) saved and restored (--noflush: our
// chains and our jumps only, never a foreign line).
import { spawnSync } from 'node:child_process';
import type { Policy } from '../../policy/schema.js';
import { idOf, type NetnsHandle } from '../netns.js';
import { TABLES, jumpLineRe, tableSpec, type Table } from './tables.js';
import { IptablesError, type Backend, type Family } from './state.js';

export const bin = (backend: Backend, family: Family, what: 'save' | 'restore' | '') =>
  `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}${what ? `-${what}` : ''}`;
const OUR_LINE = /^-A (MESHREDIR_\S+ |(OUTPUT|PREROUTING) .*-j MESHREDIR_\S+(\s|$))/;

/** Our lines in iptables-save output. */
export function ours(save: string): string[] {
  return save.split('\n').filter((l) => OUR_LINE.test(l));
}

/** The saved text of each of our tables in a netns (only the tables that were read). */
export type Saves = Partial<Record<Table, string>>;

/**
 * The iptables-restore input for one family in a netns whose tables are `saves`: per table the policy
 * uses, our chains plus each jump we need that is not there yet, minus jumps we no longer need (and
 * duplicates); a table the policy no longer uses loses what we had there.
 */
export function restoreInput(p: Policy, family: Family, saves: Saves, bypassCgroups?: readonly string[]): string {
  const out: string[] = [];
  for (const t of TABLES) {
    const save = saves[t.table] ?? '';
    if (!t.wanted(p, family)) {
      out.push(removalSection(save, t.table) ?? '');
      continue;
    }
    const live = save.split('\n');
    const lines = [`*${t.table}`, ...t.chainLines(p, family, bypassCgroups)];
    const wanted = t.jumpLines(p, family);
    for (const { from, to } of t.jumps) {
      const re = new RegExp(`^-A ${from} .*-j ${to}(\\s|$)`);
      const present = live.filter((l) => re.test(l));
      const want = wanted.find((l) => jumpLineRe(from, to).test(l));
      if (want && present.length === 0) lines.push(want);
      for (const extra of want ? present.slice(1) : present) lines.push(extra.replace(/^-A /, '-D '));
    }
    lines.push('COMMIT', '');
    out.push(lines.join('\n'));
  }
  return out.join('');
}

/** Our lines of one table out of a netns, as a restore section: jumps deleted, chains flushed and deleted. */
function removalSection(save: string, table: Table): string | null {
  const del = save
    .split('\n')
    .filter((l) => /^-A (OUTPUT|PREROUTING) .*-j MESHREDIR_\S+(\s|$)/.test(l))
    .map((l) => l.replace(/^-A /, '-D '));
  const present = tableSpec(table).chains.filter((c) => save.split('\n').some((l) => l.startsWith(`:${c} `)));
  if (del.length === 0 && present.length === 0) return null;
  return [`*${table}`, ...del, ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''].join(
    '\n',
  );
}

/** Our lines of one family out of a netns, atomically per table (null: none of ours there). */
export function removalInput(saves: Saves): string | null {
  const parts = TABLES.map((t) => removalSection(saves[t.table] ?? '', t.table)).filter((x): x is string => !!x);
  return parts.length ? parts.join('') : null;
}

export class Runner {
  private readonly selfNetns = idOf('/proc/self/ns/net');
  constructor(
    readonly lockWait: number,
    /** A forced backend instead of the detected one. */
    readonly backend?: Backend,
  ) {}

  /** Runs a command in a netns: directly when it is our own, else through nsenter on the open fd. */
  run(ns: NetnsHandle, argv: string[], input?: string): string {
    const own = ns.id === this.selfNetns;
    const full = own ? argv : ['nsenter', '--net=/proc/self/fd/3', ...argv];
    const r = spawnSync(full[0]!, full.slice(1), {
      input: input ?? '',
      encoding: 'utf8',
      stdio: own ? ['pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe', ns.fd],
      timeout: (this.lockWait + 10) * 1000,
    });
    // A command that exits before reading its input (a failing restore) makes the write fail with EPIPE:
    // its exit status and stderr are what it has to say.
    const epipe = (r.error as NodeJS.ErrnoException | undefined)?.code === 'EPIPE' && r.status !== null;
    if (r.error && !epipe) {
      const code = (r.error as NodeJS.ErrnoException).code;
      throw new IptablesError(
        `${full[0]}: ${code === 'ENOENT' ? 'not installed (not found in PATH)' : r.error.message} (in netns ${ns.path})`,
      );
    }
    if (r.status !== 0) {
      const msg = (r.stderr ?? '').trim() || `exited ${r.status ?? r.signal}`;
      if (/xtables lock|Another app is currently holding the xtables lock/i.test(msg)) {
        throw new IptablesError(
          `${argv[0]}: the xtables lock was held by another process for more than ${this.lockWait}s (--lock-wait) in netns ${ns.path}`,
        );
      }
      const first = msg
        .split('\n')
        .filter((l) => !l.startsWith('# Warning'))
        .slice(0, 3)
        .join(' / ');
      throw new IptablesError(`${argv.join(' ')} in netns ${ns.path}: ${first}`);
    }
    return r.stdout;
  }

  /** Prefer the backend already holding rules in that netns, then nft. */
  detectBackend(ns: NetnsHandle): Backend {
    if (this.backend) return this.backend;
    const rules = (b: Backend) => {
      try {
        return this.run(ns, [bin(b, 4, 'save')])
          .split('\n')
          .filter((l) => l.startsWith('-A ')).length;
      } catch {
        return -1;
      }
    };
    const nft = rules('nft');
    const legacy = rules('legacy');
    if (legacy > 0 && nft <= 0) return 'legacy';
    if (nft >= 0) return 'nft';
    if (legacy >= 0) return 'legacy';
    throw new IptablesError(`neither iptables-nft nor iptables-legacy works in netns ${ns.path}`);
  }

  saveNat(ns: NetnsHandle, backend: Backend, family: Family): string {
    return this.save(ns, backend, family, 'nat');
  }

  save(ns: NetnsHandle, backend: Backend, family: Family, table: Table): string {
    return this.run(ns, [bin(backend, family, 'save'), '-t', table]);
  }

  /** Every one of our tables, saved. */
  saveAll(
    ns: NetnsHandle,
    backend: Backend,
    family: Family,
    tables: readonly Table[] = TABLES.map((t) => t.table),
  ): Saves {
    return Object.fromEntries(tables.map((t) => [t, this.save(ns, backend, family, t)])) as Saves;
  }

  restore(ns: NetnsHandle, backend: Backend, family: Family, input: string): void {
    this.run(ns, [bin(backend, family, 'restore'), '--noflush', '-w', String(this.lockWait)], input);
  }

  /** Removes our chains and jumps of one family from every table. */
  removeFamily(ns: NetnsHandle, backend: Backend, family: Family): void {
    const input = removalInput(this.saveAll(ns, backend, family));
    if (input) this.restore(ns, backend, family, input);
  }

  /**
   * Packets a chain's rules with this target took: the REDIRECT rule's are new connections (nat sees the
   * first packet of each), TPROXY's the packets of connections no socket held yet (their SYNs).
   */
  redirected(
    ns: NetnsHandle,
    backend: Backend,
    family: Family,
    chain: string,
    table: Table = 'nat',
    target = 'REDIRECT',
  ): number {
    const out = this.run(ns, [
      bin(backend, family, ''),
      '-w',
      String(this.lockWait),
      '-t',
      table,
      '-L',
      chain,
      '-v',
      '-x',
      '-n',
    ]);
    const re = new RegExp(`\\b${target}\\b`);
    return out
      .split('\n')
      .filter((l) => re.test(l))
      .reduce((a, l) => a + Number(l.trim().split(/\s+/)[0] ?? 0), 0);
  }
}
