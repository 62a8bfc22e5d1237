// iptables.ts — the iptables mode: the same policies as istio-style nat rules in each pod's netns,
// applied atomically with iptables-restore --noflush (our chains and our jumps only), backend chosen
// per netns and remembered, drift detected against what was applied, every netns on its own (one
// that fails is reported and the others go on), and a cleanup that says what it could not do.
import { spawnSync } from 'node:child_process';
import ipaddr from 'ipaddr.js';
import { readFileSync, writeFileSync, mkdirSync, rmSync, renameSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Policy } from '../../policy/schema.js';
import { isLoopback } from '../../policy/addr.js';
import { renderChains, jumpLines, unsupported, families, CHAINS, JUMPS, REDIRECT_TARGET } from './rules.js';
import { NetnsHandle, resolvePolicyNetns, findNetns, hostNetnsIds, idOf, subtreePids } from './netns.js';
import { parseNat, evaluate, type Conn } from './evaluate.js';
import { cgroupDir, requireCgroup2 } from '../../util/host.js';

export type Backend = 'nft' | 'legacy';
export type Family = 4 | 6;
export const DEFAULT_STATE = '/run/meshredir/iptables.json';

export interface IptablesConfig {
  /** Where the per-netns backend choice and the applied state are remembered. */
  stateFile: string;
  /** Force a backend instead of detecting it. */
  backend?: Backend;
  /** Seconds to wait for the xtables lock. */
  lockWait: number;
}

interface FamilyState {
  /** Our chains as rendered (renderChains): a changed policy changes it. */
  rendered: string;
  /** Our lines as iptables-save printed them right after applying. */
  applied: string[];
}

interface NetnsState {
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

interface State {
  version: 2;
  netns: Record<string, NetnsState>;
  policies: Record<string, PolicyStatus>;
}

export interface Removal {
  netns: string;
  netnsId: string;
  policy: string;
  outcome: 'removed' | 'gone' | 'failed';
  detail: string;
}

export interface IptablesApplyReport {
  /** Policies whose rules were written in this pass. */
  applied: { policy: string; netns: string; backend: Backend; families: string[] }[];
  /** Policies whose rules were already in place. */
  unchanged: string[];
  /** Policies not applied, with why (refused by this mode, or waiting for their netns). */
  skipped: { policy: string; reason: string }[];
  /** Policies whose apply failed, with why and what is in place instead. */
  failed: { policy: string; netns: string; reason: string }[];
  /** Namespaces our rules were removed from (or found gone, or failed to be removed from). */
  removed: Removal[];
  /** Whether the state file was written (only when something changed). */
  stateWritten: boolean;
}

export class IptablesError extends Error {}

const bin = (backend: Backend, family: Family, what: 'save' | 'restore' | '') =>
  `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}${what ? `-${what}` : ''}`;
const fkey = (f: Family) => String(f) as '4' | '6';
const OUR_LINE = /^-A (MESHREDIR_\S+ |(OUTPUT|PREROUTING) .*-j MESHREDIR_\S+(\s|$))/;

/** One family's work in a netns: nothing (in sync), a restore, or removing our rules of that family. */
export type FamilyWork =
  | { family: Family; kind: 'unused' }
  | { family: Family; kind: 'in-sync' }
  | { family: Family; kind: 'restore'; input: string; rendered: string }
  | { family: Family; kind: 'remove'; input: string | null };

export interface PlanEntry {
  policy: string;
  netns: string;
  netnsId: string;
  backend: Backend;
  work: FamilyWork[];
  /** Our rules on other backends (a forced move), removed once `backend` holds the rules. */
  removals: { backend: Backend; family: Family; input: string | null }[];
}

export class IptablesMode {
  private readonly selfNetns = idOf('/proc/self/ns/net');

  constructor(readonly cfg: IptablesConfig) {}

  private readState(): State {
    let text: string;
    try {
      text = readFileSync(this.cfg.stateFile, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return { version: 2, netns: {}, policies: {} };
      throw new IptablesError(`cannot read the iptables state ${this.cfg.stateFile}: ${(e as Error).message}`);
    }
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (e) {
      // Forgetting it would forget which netns hold our rules: refuse instead.
      throw new IptablesError(
        `${this.cfg.stateFile} is not valid JSON (${(e as Error).message}); fix or remove it (after removing MESHREDIR chains by hand)`,
      );
    }
    return migrate(raw, this.cfg.stateFile);
  }

  private writeState(s: State): void {
    mkdirSync(dirname(this.cfg.stateFile), { recursive: true, mode: 0o700 });
    const tmp = `${this.cfg.stateFile}.tmp`;
    writeFileSync(tmp, JSON.stringify(s, null, 2), { mode: 0o600 });
    renameSync(tmp, this.cfg.stateFile);
  }

  /** Runs a command in a netns: directly when it is our own, else through nsenter on the open fd. */
  private run(ns: NetnsHandle, argv: string[], input?: string): string {
    const own = ns.id === this.selfNetns;
    const full = own ? argv : ['nsenter', '--net=/proc/self/fd/3', ...argv];
    const r = spawnSync(full[0]!, full.slice(1), {
      input: input ?? '',
      encoding: 'utf8',
      stdio: own ? ['pipe', 'pipe', 'pipe'] : ['pipe', 'pipe', 'pipe', ns.fd],
      timeout: (this.cfg.lockWait + 10) * 1000,
    });
    if (r.error) {
      const code = (r.error as NodeJS.ErrnoException).code;
      throw new IptablesError(
        `${full[0]}: ${code === 'ENOENT' ? 'not installed (not found in PATH)' : r.error.message} (in netns ${ns.path})`,
      );
    }
    if (r.status !== 0) {
      const msg = (r.stderr ?? '').trim() || `exited ${r.status ?? r.signal}`;
      if (/xtables lock|Another app is currently holding the xtables lock/i.test(msg)) {
        throw new IptablesError(
          `${argv[0]}: the xtables lock was held by another process for more than ${this.cfg.lockWait}s (--lock-wait) in netns ${ns.path}`,
        );
      }
      throw new IptablesError(
        `${argv.join(' ')} in netns ${ns.path}: ${msg
          .split('\n')
          .filter((l) => !l.startsWith('# Warning'))
          .slice(0, 3)
          .join(' / ')}`,
      );
    }
    return r.stdout;
  }

  /** Prefer the backend already holding rules in that netns, then nft. */
  detectBackend(ns: NetnsHandle): Backend {
    if (this.cfg.backend) return this.cfg.backend;
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

  private saveNat(ns: NetnsHandle, backend: Backend, family: Family): string {
    return this.run(ns, [bin(backend, family, 'save'), '-t', 'nat']);
  }

  private static ours(save: string): string[] {
    return save.split('\n').filter((l) => OUR_LINE.test(l));
  }

  /**
   * The iptables-restore input for one family in a netns whose nat table is `save`: our chains, plus
   * each jump we need that is not there yet, minus jumps we no longer need (and duplicates).
   */
  static restoreInput(p: Policy, family: Family, save: string): string {
    const live = save.split('\n');
    const lines = ['*nat', ...renderChains(p, { family })];
    const wanted = jumpLines(p, { family });
    for (const { from, to } of JUMPS) {
      const re = new RegExp(`^-A ${from} .*-j ${to}(\\s|$)`);
      const present = live.filter((l) => re.test(l));
      const want = wanted.find((l) => l.startsWith(`-A ${from} `));
      if (want && present.length === 0) lines.push(want);
      for (const extra of want ? present.slice(1) : present) lines.push(extra.replace(/^-A /, '-D '));
    }
    lines.push('COMMIT', '');
    return lines.join('\n');
  }

  /** Our lines of one family out of a netns, atomically: jumps deleted, chains flushed and deleted. */
  private static removalInput(save: string): string | null {
    const del = save
      .split('\n')
      .filter((l) => /^-A (OUTPUT|PREROUTING) .*-j MESHREDIR_\S+(\s|$)/.test(l))
      .map((l) => l.replace(/^-A /, '-D '));
    const present = CHAINS.filter((c) => save.split('\n').some((l) => l.startsWith(`:${c} `)));
    if (del.length === 0 && present.length === 0) return null;
    return ['*nat', ...del, ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''].join(
      '\n',
    );
  }

  private restore(ns: NetnsHandle, backend: Backend, family: Family, input: string): void {
    this.run(ns, [bin(backend, family, 'restore'), '--noflush', '-w', String(this.cfg.lockWait)], input);
  }

  private removeFamily(ns: NetnsHandle, backend: Backend, family: Family): void {
    const input = IptablesMode.removalInput(this.saveNat(ns, backend, family));
    if (input) this.restore(ns, backend, family, input);
  }

  /** What one family needs in a netns, from what is there now and what was applied before. */
  private familyWork(
    ns: NetnsHandle,
    p: Policy,
    backend: Backend,
    family: Family,
    prev: FamilyState | undefined,
  ): FamilyWork {
    if (!families(p).includes(family))
      return prev
        ? { family, kind: 'remove', input: IptablesMode.removalInput(this.saveNat(ns, backend, family)) }
        : { family, kind: 'unused' };
    const rendered = renderChains(p, { family }).join('\n');
    const save = this.saveNat(ns, backend, family);
    if (prev && prev.rendered === rendered && JSON.stringify(prev.applied) === JSON.stringify(IptablesMode.ours(save)))
      return { family, kind: 'in-sync' };
    return { family, kind: 'restore', input: IptablesMode.restoreInput(p, family, save), rendered };
  }

  /**
   * Which netns each policy goes to, or why it does not: refused by this mode (`drop`: whatever an
   * earlier version of it left is removed) or not resolvable now (its earlier rules are kept).
   */
  private resolve(policies: Policy[]): {
    targets: { p: Policy; path: string; id: string }[];
    skipped: { p: Policy; reason: string; drop: boolean }[];
  } {
    const host = hostNetnsIds();
    const skipped: { p: Policy; reason: string; drop: boolean }[] = [];
    const byNetns = new Map<string, { path: string; ps: Policy[] }>();
    for (const p of policies) {
      const why = unsupported(p);
      if (why.length) {
        skipped.push({ p, reason: `not supported in iptables mode: ${why.join('; ')}`, drop: true });
        continue;
      }
      let r;
      try {
        r = resolvePolicyNetns(p, host);
      } catch (e) {
        r = { ok: false as const, reason: (e as Error).message };
      }
      if (!r.ok) {
        skipped.push({ p, reason: r.reason, drop: false });
        continue;
      }
      const e = byNetns.get(r.id) ?? { path: r.path, ps: [] };
      e.ps.push(p);
      byNetns.set(r.id, e);
    }
    const targets: { p: Policy; path: string; id: string }[] = [];
    for (const [id, { path, ps }] of byNetns) {
      if (ps.length > 1) {
        for (const p of ps) {
          skipped.push({
            p,
            reason: `shares network namespace ${path} with ${ps
              .filter((o) => o !== p)
              .map((o) => o.name)
              .join(
                ', ',
              )}: iptables mode allows one policy per netns (the rules cover the whole netns); neither is applied until one is removed`,
            drop: false,
          });
        }
        continue;
      }
      targets.push({ p: ps[0]!, path, id });
    }
    return { targets, skipped };
  }

  /** What apply would do, without doing it (the dry run): per policy, the exact restore inputs. */
  plan(policies: Policy[]): { entries: PlanEntry[]; skipped: { policy: string; reason: string }[] } {
    const state = this.readState();
    const { targets, skipped } = this.resolve(policies);
    const out: { entries: PlanEntry[]; skipped: { policy: string; reason: string }[] } = {
      entries: [],
      skipped: skipped.map((s) => ({ policy: s.p.name, reason: s.reason })),
    };
    for (const t of targets) {
      let ns: NetnsHandle;
      try {
        ns = NetnsHandle.open(t.path, t.id);
      } catch (e) {
        out.skipped.push({ policy: t.p.name, reason: `netns ${t.path}: ${(e as Error).message}` });
        continue;
      }
      try {
        const prev = state.netns[t.id];
        const backend = this.cfg.backend ?? prev?.backend ?? this.detectBackend(ns);
        const moving = prev && prev.backend !== backend;
        const work = ([4, 6] as const).map((f) =>
          this.familyWork(ns, t.p, backend, f, moving ? undefined : prev?.families[fkey(f)]),
        );
        const others = [
          ...(moving ? [{ backend: prev.backend, families: Object.keys(prev.families).map(Number) as Family[] }] : []),
          ...(prev?.stale ?? []).filter((x) => x.backend !== backend),
        ];
        const removals = others.flatMap((o) =>
          o.families.map((family) => ({
            backend: o.backend,
            family,
            input: IptablesMode.removalInput(this.saveNat(ns, o.backend, family)),
          })),
        );
        out.entries.push({ policy: t.p.name, netns: t.path, netnsId: t.id, backend, work, removals });
      } catch (e) {
        out.skipped.push({ policy: t.p.name, reason: (e as Error).message });
      } finally {
        ns.close();
      }
    }
    return out;
  }

  apply(policies: Policy[]): IptablesApplyReport {
    const rep: IptablesApplyReport = {
      applied: [],
      unchanged: [],
      skipped: [],
      failed: [],
      removed: [],
      stateWritten: false,
    };
    const state = this.readState();
    const before = JSON.stringify(state);
    const statuses: Record<string, PolicyStatus> = {};
    const { targets, skipped } = this.resolve(policies);
    for (const s of skipped) {
      rep.skipped.push({ policy: s.p.name, reason: s.reason });
      statuses[s.p.name] = { policy: s.p.name, cgroup: s.p.cgroup, outcome: 'skipped', reason: s.reason };
    }
    const placed = new Map<string, string>(); // policy → netns id it is applied to this pass
    for (const t of targets) {
      const st = this.applyOne(t, state, rep);
      statuses[t.p.name] = st;
      if (state.netns[t.id]?.policy === t.p.name) placed.set(t.p.name, t.id);
    }

    // Rules of policies that are gone, refused by this mode, or now applied in another netns go;
    // those of policies that could not be resolved this pass stay until they can.
    const dropped = new Set(skipped.filter((s) => s.drop).map((s) => s.p.name));
    const names = new Set(policies.map((p) => p.name));
    for (const [id, e] of Object.entries(state.netns)) {
      if (targets.some((t) => t.id === id)) continue;
      const moved = placed.has(e.policy) && placed.get(e.policy) !== id;
      if (names.has(e.policy) && !dropped.has(e.policy) && !moved) continue;
      const r = this.removeEntry(e);
      rep.removed.push(r);
      if (r.outcome !== 'failed') delete state.netns[id];
    }
    state.policies = statuses;
    if (JSON.stringify(state) !== before) {
      this.writeState(state);
      rep.stateWritten = true;
    }
    return rep;
  }

  /** Applies one policy in its netns; every failure stays inside this netns and is reported. */
  private applyOne(
    target: { p: Policy; path: string; id: string },
    state: State,
    rep: IptablesApplyReport,
  ): PolicyStatus {
    const { p } = target;
    const prev = state.netns[target.id];
    // Keep the remembered path while it still leads there: a new process in the pod is no change.
    const t =
      prev && prev.path !== target.path && idOf(prev.path) === target.id ? { ...target, path: prev.path } : target;
    const base = { policy: p.name, cgroup: p.cgroup, netns: t.path, netnsId: t.id };
    let ns: NetnsHandle;
    try {
      ns = NetnsHandle.open(t.path, t.id);
    } catch (e) {
      // The process we took the netns from exited (ENOENT), or its pid is now someone else's.
      const reason = `netns ${t.path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'the process it belonged to exited; retried at the next reconcile' : (e as Error).message}`;
      rep.skipped.push({ policy: p.name, reason });
      return { ...base, outcome: 'skipped', reason };
    }
    try {
      let backend: Backend;
      try {
        backend = this.cfg.backend ?? prev?.backend ?? this.detectBackend(ns);
      } catch (e) {
        rep.failed.push({ policy: p.name, netns: t.path, reason: (e as Error).message });
        return { ...base, outcome: 'failed', reason: (e as Error).message };
      }
      const moving = prev && prev.backend !== backend ? prev : undefined;
      const next: NetnsState = {
        id: t.id,
        path: t.path,
        backend,
        policy: p.name,
        cgroup: p.cgroup,
        families: moving ? {} : { ...(prev?.families ?? {}) },
        stale: (prev?.stale ?? []).filter((s) => s.backend !== backend),
      };
      const changed: string[] = [];
      const errors: string[] = [];
      for (const family of [4, 6] as const) {
        const f = fkey(family);
        try {
          const w = this.familyWork(ns, p, backend, family, moving ? undefined : prev?.families[f]);
          if (w.kind === 'restore') {
            this.restore(ns, backend, family, w.input);
            next.families[f] = { rendered: w.rendered, applied: IptablesMode.ours(this.saveNat(ns, backend, family)) };
            changed.push(`ipv${family}`);
          } else if (w.kind === 'remove') {
            if (w.input) this.restore(ns, backend, family, w.input);
            delete next.families[f];
            changed.push(`ipv${family} removed`);
          }
        } catch (e) {
          errors.push(`IPv${family}: ${(e as Error).message}`);
        }
      }
      if (moving) {
        if (errors.length) {
          // The new backend did not take them all: take back what it took, keep the old rules.
          let rollback = '';
          try {
            for (const family of [4, 6] as const)
              if (next.families[fkey(family)]) this.removeFamily(ns, backend, family);
          } catch (e) {
            rollback = `; removing the partial rules from ${backend} failed too (${(e as Error).message}), retried at the next reconcile`;
            const partial = Object.keys(next.families).map(Number) as Family[];
            state.netns[t.id] = {
              ...moving,
              stale: [...moving.stale.filter((s) => s.backend !== backend), { backend, families: partial }],
            };
          }
          const reason = `moving the rules from ${moving.backend} to ${backend} failed: ${errors.join('; ')}; the rules stay on ${moving.backend}, unchanged${rollback}`;
          rep.failed.push({ policy: p.name, netns: t.path, reason });
          return {
            ...base,
            outcome: 'failed',
            backend: moving.backend,
            families: Object.keys(moving.families).map((k) => `ipv${k}`),
            reason,
          };
        }
        next.stale.push({ backend: moving.backend, families: Object.keys(moving.families).map(Number) as Family[] });
      }
      // Whatever another backend still holds of ours goes once this one holds the rules.
      const staleErrors: string[] = [];
      next.stale = next.stale.filter((s) => {
        try {
          for (const family of s.families) this.removeFamily(ns, s.backend, family);
          changed.push(`removed from ${s.backend}`);
          return false;
        } catch (e) {
          staleErrors.push(
            `removing our rules from ${s.backend} failed (retried at the next reconcile): ${(e as Error).message}`,
          );
          return true;
        }
      });
      state.netns[t.id] = next;
      const fams = Object.keys(next.families).map((k) => `ipv${k}`);
      if (changed.length) rep.applied.push({ policy: p.name, netns: t.path, backend, families: changed });
      if (errors.length || staleErrors.length) {
        const reason =
          [...errors, ...staleErrors].join('; ') +
          (fams.length ? ` (in place: ${fams.join(', ')} on ${backend})` : ' (no rules in place)');
        rep.failed.push({ policy: p.name, netns: t.path, reason });
        return { ...base, outcome: 'failed', backend, families: fams, reason };
      }
      if (!changed.length) rep.unchanged.push(p.name);
      return { ...base, outcome: 'applied', backend, families: fams };
    } finally {
      ns.close();
    }
  }

  /** Removes our rules from a remembered netns, found by its inode wherever it is reachable now. */
  private removeEntry(e: NetnsState): Removal {
    const base = { netnsId: e.id, policy: e.policy };
    const path = findNetns(e.id, e.path);
    if (!path) {
      return {
        ...base,
        netns: e.path,
        outcome: 'gone',
        detail: `network namespace ${e.id} (last seen as ${e.path}) no longer exists — no process, open file or mount refers to it — so its rules went with it`,
      };
    }
    let ns: NetnsHandle;
    try {
      ns = NetnsHandle.open(path, e.id);
    } catch (err) {
      return {
        ...base,
        netns: path,
        outcome: 'failed',
        detail: `cannot enter network namespace ${e.id} at ${path}: ${(err as Error).message}; its rules are still there (retried at the next reconcile or cleanup)`,
      };
    }
    try {
      const fams = Object.keys(e.families).map(Number) as Family[];
      for (const { backend, families: fs } of [{ backend: e.backend, families: fams }, ...e.stale]) {
        for (const f of fs) this.removeFamily(ns, backend, f);
      }
      return {
        ...base,
        netns: path,
        outcome: 'removed',
        detail: `removed every MESHREDIR line from network namespace ${e.id} (${path})`,
      };
    } catch (err) {
      return {
        ...base,
        netns: path,
        outcome: 'failed',
        detail: `${(err as Error).message}; rules may remain in network namespace ${e.id} (${path}); retried at the next reconcile or cleanup`,
      };
    } finally {
      ns.close();
    }
  }

  /** Removes our rules from every remembered netns; the state keeps what could not be removed. */
  cleanup(): Removal[] {
    const state = this.readState();
    const done: Removal[] = [];
    for (const [id, e] of Object.entries(state.netns)) {
      const r = this.removeEntry(e);
      done.push(r);
      if (r.outcome !== 'failed') delete state.netns[id];
    }
    if (Object.keys(state.netns).length === 0) rmSync(this.cfg.stateFile, { force: true });
    else this.writeState({ ...state, policies: {} });
    return done;
  }

  /** Whether anything of this mode is remembered here. */
  installed(): boolean {
    const s = this.readState();
    return Object.keys(s.netns).length > 0 || Object.keys(s.policies).length > 0;
  }

  /** Per policy what the last reconcile did, per netns what is there now (rules, drift, counters). */
  status(): { policies: PolicyStatus[]; netns: NetnsStatus[] } {
    const s = this.readState();
    const netns = Object.values(s.netns).map((e): NetnsStatus => {
      const fams = Object.keys(e.families).map((k) => Number(k) as Family);
      const base: NetnsStatus = {
        netns: e.path,
        netnsId: e.id,
        policy: e.policy,
        backend: e.backend,
        families: fams.map((f) => `ipv${f}`),
        rules: fams.reduce((a, f) => a + (e.families[fkey(f)]?.applied.length ?? 0), 0),
        live: 'unknown',
        redirected: {},
        inboundRedirected: {},
      };
      const path = findNetns(e.id, e.path);
      if (!path) return { ...base, live: 'gone: the network namespace no longer exists' };
      let ns: NetnsHandle;
      try {
        ns = NetnsHandle.open(path, e.id);
      } catch (err) {
        return { ...base, netns: path, live: `cannot enter: ${(err as Error).message}` };
      }
      try {
        const drift: string[] = [];
        for (const f of fams) {
          const live = IptablesMode.ours(this.saveNat(ns, e.backend, f));
          const want = e.families[fkey(f)]!.applied;
          const missing = want.filter((l) => !live.includes(l)).length;
          const extra = live.filter((l) => !want.includes(l)).length;
          if (missing || extra) drift.push(`ipv${f}: ${missing} rule(s) missing, ${extra} unexpected`);
          base.redirected[`ipv${f}`] = this.counter(ns, e.backend, f, 'MESHREDIR_REDIRECT');
          if (e.families[fkey(f)]!.rendered.includes('MESHREDIR_IN_REDIRECT -p tcp'))
            base.inboundRedirected[`ipv${f}`] = this.counter(ns, e.backend, f, 'MESHREDIR_IN_REDIRECT');
        }
        if (e.stale.length) drift.push(`rules still on ${e.stale.map((x) => x.backend).join(', ')} (removal pending)`);
        return {
          ...base,
          netns: path,
          live: drift.length ? `drifted: ${drift.join('; ')} (repaired at the next reconcile)` : 'in sync',
        };
      } catch (err) {
        return { ...base, netns: path, live: `cannot read: ${(err as Error).message}` };
      } finally {
        ns.close();
      }
    });
    return { policies: Object.values(s.policies), netns };
  }

  /** New connections redirected by a chain's REDIRECT rule (nat sees the first packet of each). */
  private counter(ns: NetnsHandle, backend: Backend, family: Family, chain: string): number {
    const out = this.run(ns, [
      bin(backend, family, ''),
      '-w',
      String(this.cfg.lockWait),
      '-t',
      'nat',
      '-L',
      chain,
      '-v',
      '-x',
      '-n',
    ]);
    return out
      .split('\n')
      .filter((l) => /\bREDIRECT\b/.test(l))
      .reduce((a, l) => a + Number(l.trim().split(/\s+/)[0] ?? 0), 0);
  }

  /**
   * The iptables-mode self-check for a cgroup (sends no packet): a policy applied for it → its
   * processes are in the netns the rules are in → the rules are there as applied → they would
   * redirect a connect to `dest` by the cgroup's process → something listens on the redirect port.
   */
  verify(o: { cgroup: string; netns?: string; dest?: string }): { step: string; ok: boolean; detail: string }[] {
    const steps: { step: string; ok: boolean; detail: string }[] = [];
    const fail = (step: string, detail: string) => (steps.push({ step, ok: false, detail }), steps);
    const ok = (step: string, detail: string) => steps.push({ step, ok: true, detail });
    const mount = requireCgroup2();
    const dir = o.cgroup.startsWith(mount) ? o.cgroup : cgroupDir(o.cgroup, mount);
    const rel = dir === mount ? '/' : dir.slice(mount.length);
    if (idOf(dir) === null) return fail('cgroup', `${o.cgroup} does not exist (looked for ${dir})`);
    ok('cgroup', dir);

    const s = this.readState();
    const covering = Object.values(s.policies)
      .filter((p) => rel === p.cgroup || rel.startsWith(`${p.cgroup === '/' ? '' : p.cgroup}/`))
      .sort((a, b) => b.cgroup.length - a.cgroup.length)[0];
    if (!covering)
      return fail(
        'policy',
        `no iptables-mode policy covers ${rel} (state ${this.cfg.stateFile}${Object.keys(s.policies).length ? '' : ': empty — has the agent run in iptables mode here?'})`,
      );
    if (covering.outcome !== 'applied')
      return fail('policy', `policy ${covering.policy} is ${covering.outcome}: ${covering.reason ?? ''}`);
    const e = Object.values(s.netns).find((n) => n.policy === covering.policy && n.id === covering.netnsId);
    if (!e) return fail('policy', `policy ${covering.policy} has no applied rules in the state`);
    ok('policy', `${covering.policy} (cgroup ${covering.cgroup}) → netns ${e.id}, ${e.backend}`);

    let netnsId: string | null;
    let where: string;
    if (o.netns) {
      netnsId = idOf(o.netns);
      where = o.netns;
      if (!netnsId) return fail('netns', `${o.netns} does not exist`);
    } else {
      const ids = new Set(
        subtreePids(dir)
          .map((pid) => idOf(`/proc/${pid}/ns/net`))
          .filter((x): x is string => x !== null),
      );
      if (ids.size === 0) return fail('netns', `no process in ${rel} to take its network namespace from; pass --netns`);
      if (ids.size > 1)
        return fail(
          'netns',
          `the processes of ${rel} are in ${ids.size} different network namespaces: ${[...ids].join(', ')}`,
        );
      netnsId = [...ids][0]!;
      where = `the netns of the processes of ${rel}`;
    }
    if (netnsId !== e.id)
      return fail(
        'netns',
        `${where} is ${hostNetnsIds().has(netnsId) ? 'the host network namespace' : `netns ${netnsId}`}, but the rules are in netns ${e.id}`,
      );
    const path = findNetns(e.id, e.path);
    if (!path) return fail('netns', `network namespace ${e.id} no longer exists`);
    ok('netns', `${where} is netns ${e.id}, where the rules are (${path})`);

    const dest = o.dest ?? (e.families['4'] ? '192.0.2.1:80' : '[2001:db8::1]:80');
    const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(dest);
    if (!m) return fail('rules', `--dest ${dest}: not an address:port`);
    const family: Family = dest.startsWith('[') ? 6 : 4;
    const fs = e.families[fkey(family)];
    if (!fs) return fail('rules', `no IPv${family} rules are applied for policy ${e.policy}`);
    let ns: NetnsHandle;
    try {
      ns = NetnsHandle.open(path, e.id);
    } catch (err) {
      return fail('rules', `cannot enter netns ${path}: ${(err as Error).message}`);
    }
    try {
      let save: string;
      try {
        save = this.saveNat(ns, e.backend, family);
      } catch (err) {
        return fail('rules', (err as Error).message);
      }
      const live = IptablesMode.ours(save);
      const missing = fs.applied.filter((l) => !live.includes(l));
      if (missing.length)
        return fail(
          'rules',
          `${missing.length} of ${fs.applied.length} applied rule(s) missing from ${bin(e.backend, family, 'save')} (first: ${missing[0]}); the agent repairs drift at its next reconcile`,
        );
      ok('rules', `${fs.applied.length} rule(s) in place (${bin(e.backend, family, '')}, nat)`);

      // The decision, by the rules as they are (only ours: foreign nat OUTPUT rules are not modelled).
      const pid = subtreePids(dir)[0];
      const ids = pid === undefined ? { uid: 0, gid: 0 } : procIds(pid);
      let bytes: number[];
      try {
        bytes = ipaddr.parse(m[1]!).toByteArray();
      } catch {
        return fail('redirect', `--dest ${dest}: ${m[1]} is not an IP address`);
      }
      if ((bytes.length === 4 ? 4 : 6) !== family)
        return fail('redirect', `--dest ${dest}: write IPv6 destinations as [addr]:port`);
      const conn: Conn = {
        family,
        dst: bytes,
        dport: Number(m[2]),
        uid: ids.uid,
        gid: ids.gid,
        outLo: isLoopback({ family, bytes }),
      };
      const trace: string[] = [];
      const ourText = ['*nat', ...save.split('\n').filter((l) => l.startsWith(':MESHREDIR_')), ...live, 'COMMIT'].join(
        '\n',
      );
      const v = evaluate(parseNat(ourText, family), conn, trace);
      if (v.verdict !== 'redirect')
        return fail(
          'redirect',
          `a connect to ${dest} by uid ${ids.uid}/gid ${ids.gid} would not be redirected: ${trace.length ? `the rule "${trace.at(-1)}" lets it pass` : 'no jump from OUTPUT into MESHREDIR_OUTPUT'}`,
        );
      const target = family === 4 ? `${REDIRECT_TARGET[4]}:${v.port}` : `[${REDIRECT_TARGET[6]}]:${v.port}`;
      ok(
        'redirect',
        `a connect to ${dest} by uid ${ids.uid}/gid ${ids.gid} is redirected to ${target} (conntrack keeps the original destination for SO_ORIGINAL_DST and getpeername)`,
      );

      let tcp = '';
      try {
        tcp =
          this.run(ns, ['cat', family === 4 ? '/proc/net/tcp' : '/proc/net/tcp6']) +
          (family === 4 ? this.run(ns, ['cat', '/proc/net/tcp6']) : '');
      } catch (err) {
        return fail('proxy', `cannot read the socket table of netns ${path}: ${(err as Error).message}`);
      }
      if (!listening(tcp, family, v.port)) return fail('proxy', `nothing listens on ${target} in netns ${path}`);
      ok('proxy', `a socket listens on ${target} in the pod netns`);
      return steps;
    } finally {
      ns.close();
    }
  }
}

export interface NetnsStatus {
  netns: string;
  netnsId: string;
  policy: string;
  backend: Backend;
  families: string[];
  rules: number;
  /** "in sync", "drifted: …", "gone: …" or why it could not be read. */
  live: string;
  /** New connections the REDIRECT rule has taken, per family. */
  redirected: Record<string, number>;
  inboundRedirected: Record<string, number>;
}

function procIds(pid: number): { uid: number; gid: number } {
  try {
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    // The owner match looks at the socket's file credentials: the fs ids (4th field).
    const uid = Number(/^Uid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(st)?.[1] ?? 0);
    const gid = Number(/^Gid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(st)?.[1] ?? 0);
    return { uid, gid };
  } catch {
    return { uid: 0, gid: 0 };
  }
}

/** Whether /proc/net/tcp{,6} text has a LISTEN socket on the loopback address or a wildcard at port. */
function listening(text: string, family: Family, port: number): boolean {
  for (const line of text.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[3] !== '0A') continue; // TCP_LISTEN
    const [hexAddr = '', hexPort = ''] = (f[1] ?? '').split(':');
    if (parseInt(hexPort, 16) !== port) continue;
    const bytes: number[] = [];
    for (let i = 0; i < hexAddr.length; i += 8) bytes.push(...Buffer.from(hexAddr.slice(i, i + 8), 'hex').reverse());
    if (bytes.every((b) => b === 0)) return true; // wildcard (a v6 wildcard is dual-stack unless v6only)
    if (bytes.length === (family === 4 ? 4 : 16) && isLoopback({ family, bytes })) return true;
  }
  return false;
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
