// plan.ts — which network namespace each policy's rules go to (or why they do not), and, for the dry
// run, the exact iptables-restore input each family would get there: read from the namespaces as they
// are now, nothing written.
import type { Policy } from '../../policy/schema.js';

import { NetnsHandle, resolvePolicyNetns, hostNetnsIds } from '../netns.js';
import { ours, restoreInput, removalInput, type Runner } from './run.js';
import { TABLES, policyFamilies, renderedTables, unsupportedAll, type Table } from './tables.js';
import { routeCommands, tproxyRoutes, type Route } from './tproxy.js';
import { appliedIn, fkey, type Backend, type Family, type FamilyState, type NetnsState, type State } from './state.js';
import { cgroup2Mount, cgroupDir, cgroupId, requireCgroup2 } from '../../util/host.js';

export interface Target {
  p: Policy;
  path: string;
  id: string;
}

export interface Skip {
  p: Policy;
  reason: string;
  /** Refused by this mode: whatever an earlier version of it left is removed (else it is kept). */
  drop: boolean;
}

export interface Resolved {
  targets: Target[];
  skipped: Skip[];
}

/** One family's work in a netns: nothing (in sync), a restore, or removing our rules of that family. */
export type FamilyWork =
  | { family: Family; kind: 'unused' }
  | { family: Family; kind: 'in-sync' }
  | {
      family: Family;
      kind: 'restore';
      input: string;
      rendered: string;
      cgroups: Record<string, string>;
      drift?: boolean;
    }
  | { family: Family; kind: 'remove'; input: string | null };

export interface PlanEntry {
  policy: string;
  netns: string;
  netnsId: string;
  backend: Backend;
  work: FamilyWork[];
  /** Our rules on other backends (a forced move), removed once `backend` holds the rules. */
  removals: { backend: Backend; family: Family; input: string | null }[];
  /** Policy routing (TPROXY) the netns gets, and what we made there before and no longer need. */
  routes: { want: Route[]; drop: Route[] };
}

/**
 * Which netns each policy goes to, or why it does not: refused by this mode (`drop`) or not resolvable
 * now (its earlier rules are kept); two policies in one netns are both refused.
 */
export function resolveTargets(policies: Policy[]): Resolved {
  const host = hostNetnsIds();
  const skipped: Skip[] = [];
  const byNetns = new Map<string, { path: string; ps: Policy[] }>();
  for (const p of policies) {
    const why = unsupportedAll(p);
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
  const targets: Target[] = [];
  for (const [id, { path, ps }] of byNetns) {
    if (ps.length === 1) {
      targets.push({ p: ps[0]!, path, id });
      continue;
    }
    for (const p of ps) {
      const others = ps
        .filter((o) => o !== p)
        .map((o) => o.name)
        .join(', ');
      const reason = `shares network namespace ${path} with ${others}: iptables mode allows one policy per netns (the rules cover the whole netns); neither is applied until one is removed`;
      skipped.push({ p, reason, drop: false });
    }
  }
  return { targets, skipped };
}

/** The tables to read for a family: those the policy uses now and those we have lines in. */
export function tablesToRead(p: Policy, family: Family, prev: FamilyState | undefined): Table[] {
  return TABLES.filter((t) => t.wanted(p, family) || appliedIn(prev, t.table).length > 0).map((t) => t.table);
}

/**
 * The policy's bypass cgroups that exist now, each with its id: the rules name only these (the kernel
 * refuses a -m cgroup path that does not exist), and the ids tell a re-created cgroup from the one a rule
 * was added for.
 */
export function bypassCgroupIds(p: Policy): Record<string, string> {
  if (p.bypass.cgroups.length === 0) return {};
  const mount = requireCgroup2();
  const out: Record<string, string> = {};
  for (const cg of p.bypass.cgroups) {
    const id = cgroupId(cgroupDir(cg, mount));
    if (id !== null) out[cg] = String(id);
  }
  return out;
}

/**
 * Rules of a netns that point at a bypass cgroup that is no longer there under its path (deleted, or
 * deleted and re-created: a new id), each said in a sentence. The proxy there is not recognised until the
 * next reconcile adds the rule again.
 */
export function staleCgroups(e: NetnsState): string[] {
  const mount = cgroup2Mount();
  if (!mount) return [];
  const rendered = new Map<string, string>();
  for (const f of Object.values(e.families))
    for (const [cg, id] of Object.entries(f?.cgroups ?? {})) rendered.set(cg, id);
  const out: string[] = [];
  for (const [cg, id] of rendered) {
    const now = cgroupId(cgroupDir(cg, mount));
    if (now === null) out.push(`the rule for bypass cgroup ${cg} points at a cgroup that no longer exists (id ${id})`);
    else if (String(now) !== id)
      out.push(
        `the rule for bypass cgroup ${cg} points at a cgroup that no longer exists (id ${id}; the path is now id ${now}, re-created): its processes are not recognised as the proxy`,
      );
  }
  return out;
}

const sameIds = (a: Record<string, string>, b: Record<string, string>) =>
  Object.keys(a).length === Object.keys(b).length && Object.entries(a).every(([k, v]) => b[k] === v);
/** What one family needs in a netns, from what is there now and what was applied before. */
export function familyWork(
  run: Runner,
  ns: NetnsHandle,
  p: Policy,
  backend: Backend,
  family: Family,
  prev: FamilyState | undefined,
): FamilyWork {
  if (!policyFamilies(p).includes(family)) {
    return prev
      ? { family, kind: 'remove', input: removalInput(run.saveAll(ns, backend, family)) }
      : { family, kind: 'unused' };
  }
  // Read before the restore: a cgroup re-created after this read is caught at the next reconcile.
  const cgroups = bypassCgroupIds(p);
  const bypassCgroups = Object.keys(cgroups);
  const rendered = renderedTables(p, family, bypassCgroups);
  const saves = run.saveAll(ns, backend, family, tablesToRead(p, family, prev));
  const same = (t: Table) => JSON.stringify(appliedIn(prev, t)) === JSON.stringify(ours(saves[t] ?? ''));
  // Same rules wanted as applied: then a difference in the netns was made by someone else (flushed, edited).
  const wantedSame = prev !== undefined && prev.rendered === rendered && sameIds(prev.cgroups ?? {}, cgroups);
  if (wantedSame && TABLES.every((t) => same(t.table))) return { family, kind: 'in-sync' };
  return {
    family,
    kind: 'restore',
    input: restoreInput(p, family, saves, bypassCgroups),
    rendered,
    cgroups,
    ...(wantedSame ? { drift: true } : {}),
  };
}

/** The policy routing a policy needs in its netns, and what we made there before that it no longer needs. */
export function routeWork(p: Policy, had: Route[] = []): { want: Route[]; drop: Route[] } {
  const want = policyFamilies(p).flatMap((f) => tproxyRoutes(p, f));
  const key = (r: Route) => `${r.family}/${r.mark}/${r.table}`;
  return { want, drop: had.filter((h) => !want.some((w) => key(w) === key(h))) };
}

/** The dry run: per target, the exact restore inputs; targets that cannot be read join the skipped. */
export function dryRun(
  run: Runner,
  state: State,
  resolved: Resolved,
): { entries: PlanEntry[]; skipped: { policy: string; reason: string }[] } {
  const out = {
    entries: [] as PlanEntry[],
    skipped: resolved.skipped.map((s) => ({ policy: s.p.name, reason: s.reason })),
  };
  for (const t of resolved.targets) {
    let ns: NetnsHandle;
    try {
      ns = NetnsHandle.open(t.path, t.id);
    } catch (e) {
      out.skipped.push({ policy: t.p.name, reason: `netns ${t.path}: ${(e as Error).message}` });
      continue;
    }
    try {
      const prev = state.netns[t.id];
      const backend = run.backend ?? prev?.backend ?? run.detectBackend(ns);
      const moving = prev && prev.backend !== backend;
      const work = ([4, 6] as const).map((f) =>
        familyWork(run, ns, t.p, backend, f, moving ? undefined : prev?.families[fkey(f)]),
      );
      const others = [
        ...(moving ? [{ backend: prev.backend, families: Object.keys(prev.families).map(Number) as Family[] }] : []),
        ...(prev?.stale ?? []).filter((x) => x.backend !== backend),
      ];
      const removals = others.flatMap((o) =>
        o.families.map((family) => ({
          backend: o.backend,
          family,
          input: removalInput(run.saveAll(ns, o.backend, family)),
        })),
      );
      const routes = routeWork(t.p, prev?.routes);
      out.entries.push({ policy: t.p.name, netns: t.path, netnsId: t.id, backend, work, removals, routes });
    } catch (e) {
      out.skipped.push({ policy: t.p.name, reason: (e as Error).message });
    } finally {
      ns.close();
    }
  }
  return out;
}

/** The dry run as the commands the agent would run, with their exact input. */
export function renderDryRun(entries: PlanEntry[], lockWait: number): string {
  const out: string[] = [];
  for (const e of entries) {
    out.push(`# policy ${e.policy} → netns ${e.netns} (${e.netnsId}), backend ${e.backend}\n`);
    for (const w of e.work) {
      const restore = `${w.family === 4 ? 'iptables' : 'ip6tables'}-${e.backend}-restore --noflush -w ${lockWait}`;
      if (w.kind === 'unused')
        out.push(`# IPv${w.family}: not needed (no proxy for it, no inbound), nothing to apply\n`);
      else if (w.kind === 'in-sync') out.push(`# IPv${w.family}: in sync, nothing to apply\n`);
      else if (w.kind === 'remove' && !w.input)
        out.push(`# IPv${w.family}: no longer needed, and none of our rules are there\n`);
      else if (w.input) out.push(`# IPv${w.family}: ${restore} <<EOF\n${w.input}EOF\n`);
    }
    for (const r of e.routes.want) {
      const [rule, route] = routeCommands(r).map((c) => c.join(' '));
      out.push(`# policy routing for TPROXY (each only when missing): ${rule}; ${route}\n`);
    }
    for (const r of e.routes.drop) {
      out.push(
        `# then: ip -${r.family} rule del fwmark 0x${r.mark.toString(16)} lookup ${r.table}; ip -${r.family} route del local default dev lo table ${r.table}\n`,
      );
    }
    for (const r of e.removals) {
      const restore = `${r.family === 4 ? 'iptables' : 'ip6tables'}-${r.backend}-restore --noflush -w ${lockWait}`;
      out.push(
        r.input
          ? `# then off ${r.backend} (IPv${r.family}): ${restore} <<EOF\n${r.input}EOF\n`
          : `# nothing of ours left on ${r.backend} (IPv${r.family})\n`,
      );
    }
  }
  return out.join('');
}
