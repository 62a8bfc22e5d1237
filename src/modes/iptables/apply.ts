// apply.ts — the iptables mode's apply: each policy's rules restored in its own netns (a failure stays
// inside that netns and is reported, the others go on), a backend move that applies before it removes,
// and the rules of policies that are gone removed from their netns, found by inode.
import type { Policy } from '../../policy/schema.js';
import { NetnsHandle, findNetns, idOf } from '../netns.js';
import { ours, type Runner } from './run.js';
import { familyWork, routeWork, tablesToRead, type Resolved, type Target } from './plan.js';
import { TABLES } from './tables.js';
import { removeRoute, routeText, syncRoutes } from './routes.js';
import {
  fkey,
  readState,
  writeState,
  type Backend,
  type Family,
  type FamilyState,
  type NetnsState,
  type PolicyStatus,
  type State,
} from './state.js';

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
  /** Rules restored because they differed from what was applied (not by us: a flushed chain, an edit). */
  repaired: { policy: string; netns: string; family: string }[];
}

export function applyRules(
  run: Runner,
  stateFile: string,
  policies: Policy[],
  resolved: Resolved,
): IptablesApplyReport {
  const rep: IptablesApplyReport = {
    applied: [],
    unchanged: [],
    skipped: [],
    failed: [],
    removed: [],
    stateWritten: false,
    repaired: [],
  };
  const state = readState(stateFile);
  const before = JSON.stringify(state);
  const statuses: Record<string, PolicyStatus> = {};
  const { targets, skipped } = resolved;
  for (const s of skipped) {
    rep.skipped.push({ policy: s.p.name, reason: s.reason });
    statuses[s.p.name] = { policy: s.p.name, cgroup: s.p.cgroup, outcome: 'skipped', reason: s.reason };
  }
  const placed = new Map<string, string>(); // policy → netns id it is applied to this pass
  for (const t of targets) {
    statuses[t.p.name] = applyOne(run, t, state, rep);
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
    const r = removeEntry(run, e);
    rep.removed.push(r);
    if (r.outcome !== 'failed') delete state.netns[id];
  }
  state.policies = statuses;
  if (JSON.stringify(state) !== before) {
    writeState(stateFile, state);
    rep.stateWritten = true;
  }
  return rep;
}

/** Applies one policy in its netns; every failure stays inside this netns and is reported. */
function applyOne(run: Runner, target: Target, state: State, rep: IptablesApplyReport): PolicyStatus {
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
    const why =
      (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'the process it belonged to exited; retried at the next reconcile'
        : (e as Error).message;
    const reason = `netns ${t.path}: ${why}`;
    rep.skipped.push({ policy: p.name, reason });
    return { ...base, outcome: 'skipped', reason };
  }
  try {
    let backend: Backend;
    try {
      backend = run.backend ?? prev?.backend ?? run.detectBackend(ns);
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
      ...(prev?.routes?.length ? { routes: prev.routes } : {}),
    };
    const { changed, errors, drifted } = applyFamilies(run, ns, p, next, moving ? undefined : prev);
    for (const family of drifted) rep.repaired.push({ policy: p.name, netns: t.path, family });
    // Policy routing after the rules that mark for it (harmless before any mark), removed after them.
    const rw = routeWork(p, next.routes);
    const rs = syncRoutes(run, ns, rw.want, next.routes ?? []);
    changed.push(...rs.changed);
    errors.push(...rs.errors);
    if (rs.routes.length) next.routes = rs.routes;
    else delete next.routes;
    if (moving) {
      if (errors.length) {
        const reason = undoMove(run, ns, t.id, state, moving, next, errors);
        rep.failed.push({ policy: p.name, netns: t.path, reason });
        const families = Object.keys(moving.families).map((k) => `ipv${k}`);
        return { ...base, outcome: 'failed', backend: moving.backend, families, reason };
      }
      next.stale.push({ backend: moving.backend, families: Object.keys(moving.families).map(Number) as Family[] });
    }
    const staleErrors = removeStale(run, ns, next, changed);
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

/** Each family restored (or its rules removed) on next.backend; what changed and what failed. */
function applyFamilies(
  run: Runner,
  ns: NetnsHandle,
  p: Policy,
  next: NetnsState,
  prev: NetnsState | undefined,
): { changed: string[]; errors: string[]; drifted: string[] } {
  const changed: string[] = [];
  const errors: string[] = [];
  const drifted: string[] = [];
  for (const family of [4, 6] as const) {
    const f = fkey(family);
    try {
      const w = familyWork(run, ns, p, next.backend, family, prev?.families[f]);
      if (w.kind === 'restore') {
        run.restore(ns, next.backend, family, w.input);
        const saves = run.saveAll(ns, next.backend, family, tablesToRead(p, family, undefined));
        const fs: FamilyState = {
          rendered: w.rendered,
          applied: ours(saves.nat ?? ''),
          ...(Object.keys(w.cgroups).length ? { cgroups: w.cgroups } : {}),
        };
        for (const t of TABLES)
          if (t.table !== 'nat' && saves[t.table] !== undefined) (fs.tables ??= {})[t.table] = ours(saves[t.table]!);
        next.families[f] = fs;
        changed.push(`ipv${family}`);
        if (w.drift) drifted.push(`ipv${family}`);
      } else if (w.kind === 'remove') {
        if (w.input) run.restore(ns, next.backend, family, w.input);
        delete next.families[f];
        changed.push(`ipv${family} removed`);
      }
    } catch (e) {
      errors.push(`IPv${family}: ${(e as Error).message}`);
    }
  }
  return { changed, errors, drifted };
}

/** A backend move the new backend did not take whole: take back what it took, keep the old rules. */
function undoMove(
  run: Runner,
  ns: NetnsHandle,
  id: string,
  state: State,
  moving: NetnsState,
  next: NetnsState,
  errors: string[],
): string {
  const backend = next.backend;
  let rollback = '';
  try {
    for (const family of [4, 6] as const) if (next.families[fkey(family)]) run.removeFamily(ns, backend, family);
  } catch (e) {
    rollback = `; removing the partial rules from ${backend} failed too (${(e as Error).message}), retried at the next reconcile`;
    const partial = Object.keys(next.families).map(Number) as Family[];
    state.netns[id] = {
      ...moving,
      stale: [...moving.stale.filter((s) => s.backend !== backend), { backend, families: partial }],
    };
  }
  return `moving the rules from ${moving.backend} to ${backend} failed: ${errors.join('; ')}; the rules stay on ${moving.backend}, unchanged${rollback}`;
}

/** Whatever another backend still holds of ours goes once next.backend holds the rules. */
function removeStale(run: Runner, ns: NetnsHandle, next: NetnsState, changed: string[]): string[] {
  const errors: string[] = [];
  next.stale = next.stale.filter((s) => {
    try {
      for (const family of s.families) run.removeFamily(ns, s.backend, family);
      changed.push(`removed from ${s.backend}`);
      return false;
    } catch (e) {
      errors.push(
        `removing our rules from ${s.backend} failed (retried at the next reconcile): ${(e as Error).message}`,
      );
      return true;
    }
  });
  return errors;
}

/** Removes our rules from a remembered netns, found by its inode wherever it is reachable now. */
export function removeEntry(run: Runner, e: NetnsState): Removal {
  const base = { netnsId: e.id, policy: e.policy };
  const path = findNetns(e.id, e.path);
  if (!path) {
    const detail = `network namespace ${e.id} (last seen as ${e.path}) no longer exists — no process, open file or mount refers to it — so its rules went with it`;
    return { ...base, netns: e.path, outcome: 'gone', detail };
  }
  let ns: NetnsHandle;
  try {
    ns = NetnsHandle.open(path, e.id);
  } catch (err) {
    const detail = `cannot enter network namespace ${e.id} at ${path}: ${(err as Error).message}; its rules are still there (retried at the next reconcile or cleanup)`;
    return { ...base, netns: path, outcome: 'failed', detail };
  }
  try {
    const fams = Object.keys(e.families).map(Number) as Family[];
    for (const { backend, families: fs } of [{ backend: e.backend, families: fams }, ...e.stale]) {
      for (const f of fs) run.removeFamily(ns, backend, f);
    }
    for (const r of e.routes ?? []) removeRoute(run, ns, r);
    const routes = e.routes?.length ? ` and ${e.routes.map(routeText).join(', ')}` : '';
    return {
      ...base,
      netns: path,
      outcome: 'removed',
      detail: `removed every MESHREDIR line${routes} from network namespace ${e.id} (${path})`,
    };
  } catch (err) {
    const detail = `${(err as Error).message}; rules may remain in network namespace ${e.id} (${path}); retried at the next reconcile or cleanup`;
    return { ...base, netns: path, outcome: 'failed', detail };
  } finally {
    ns.close();
  }
}
