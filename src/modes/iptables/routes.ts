// routes.ts — the policy routing TPROXY uses in a pod netns (tproxy.ts: `ip rule fwmark … lookup TABLE`,
// `local default dev lo table TABLE`): read, made idempotently, and removed again — only what the state
// file says we made, so a CNI's own rules and tables are never touched.
import type { NetnsHandle } from '../netns.js';
import type { Runner } from './run.js';
import { localRouteCommand, routeCommands, ruleCommand, type Route } from './tproxy.js';

const hex = (n: number) => `0x${n.toString(16)}`;
const same = (a: Route, b: Route) => a.family === b.family && a.mark === b.mark && a.table === b.table;
export const routeText = (r: Route) =>
  `ip -${r.family} rule fwmark ${hex(r.mark)} lookup ${r.table} + local default dev lo table ${r.table}`;

/** Which halves of a route are in place in the netns now. */
export function routeState(run: Runner, ns: NetnsHandle, r: Route): { rule: boolean; route: boolean } {
  const rules = JSON.parse(run.run(ns, ['ip', '-j', `-${r.family}`, 'rule', 'show']) || '[]') as {
    fwmark?: string;
    fwmask?: string;
    table?: string;
  }[];
  const rule = rules.some(
    (x) =>
      x.fwmark !== undefined &&
      Number(x.fwmark) === r.mark &&
      (x.fwmask === undefined || Number(x.fwmask) === 0xffffffff) &&
      x.table === String(r.table),
  );
  let text = '';
  try {
    text = run.run(ns, ['ip', '-j', `-${r.family}`, 'route', 'show', 'table', String(r.table)]);
  } catch (e) {
    // An empty table does not exist yet: `ip` says so and exits 2.
    if (!/FIB table does not exist/.test((e as Error).message)) throw e;
  }
  const routes = JSON.parse(text || '[]') as { type?: string; dst?: string; dev?: string }[];
  const route = routes.some((x) => x.type === 'local' && x.dst === 'default' && x.dev === 'lo');
  return { rule, route };
}

/** Makes the route's rule and local route exist (adds only what is missing). True when it changed anything. */
export function ensureRoute(run: Runner, ns: NetnsHandle, r: Route): boolean {
  const have = routeState(run, ns, r);
  const [ruleCmd, routeCmd] = routeCommands(r);
  if (!have.rule) run.run(ns, ruleCmd!);
  if (!have.route) run.run(ns, routeCmd!);
  return !have.rule || !have.route;
}

/** Removes the route's rule (every copy) and its local route; what is already gone is no error. */
export function removeRoute(run: Runner, ns: NetnsHandle, r: Route): void {
  for (let i = 0; i < 16 && routeState(run, ns, r).rule; i++) run.run(ns, ruleCommand(r, 'del'));
  if (routeState(run, ns, r).route) run.run(ns, localRouteCommand(r, 'del'));
}

/**
 * Makes the routes of a netns `want`: what is wanted is ensured, what we made before (`had`) and is no
 * longer wanted is removed. Returns the routes now ours, what changed, and the errors.
 */
export function syncRoutes(
  run: Runner,
  ns: NetnsHandle,
  want: Route[],
  had: Route[],
): { routes: Route[]; changed: string[]; errors: string[] } {
  const routes: Route[] = [];
  const changed: string[] = [];
  const errors: string[] = [];
  for (const r of want) {
    try {
      if (ensureRoute(run, ns, r)) changed.push(`route ipv${r.family}`);
      routes.push(r);
    } catch (e) {
      errors.push(`${routeText(r)}: ${(e as Error).message}`);
      if (had.some((h) => same(h, r))) routes.push(r); // still ours to remove later
    }
  }
  for (const r of had.filter((h) => !want.some((w) => same(w, h)))) {
    try {
      removeRoute(run, ns, r);
      changed.push(`route ipv${r.family} removed`);
    } catch (e) {
      errors.push(`removing ${routeText(r)}: ${(e as Error).message}`);
      routes.push(r);
    }
  }
  return { routes, changed, errors };
}
