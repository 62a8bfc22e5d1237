// status.ts — the iptables mode's status: per policy what the last reconcile did (from the state file),
// per netns whether our rules (every table) and policy routing are there as applied, and how many
// connections each REDIRECT or TPROXY rule took.
import { NetnsHandle, findNetns } from '../netns.js';
import { ours, type Runner } from './run.js';
import { staleCgroups } from './plan.js';
import { LIMITS } from './rules.js';
import { TABLES } from './tables.js';
import { routeState, routeText } from './routes.js';
import { appliedIn, fkey, readState, type Backend, type Family, type NetnsState, type PolicyStatus } from './state.js';
import type { StatusReport } from '../mode.js';

export interface NetnsStatus {
  netns: string;
  netnsId: string;
  policy: string;
  backend: Backend;
  families: string[];
  rules: number;
  /** "in sync", "drifted: …", "gone: …" or why it could not be read. */
  live: string;
  /** Rules that point at a bypass cgroup that no longer exists (deleted, or re-created under its path). */
  staleCgroups: string[];
  /** New connections the REDIRECT rule has taken, per family. */
  redirected: Record<string, number>;
  /** Inbound connections handed to the proxy, per family: REDIRECT's, or TPROXY's first packets. */
  inboundRedirected: Record<string, number>;
  /** How inbound connections are intercepted here (absent: not at all). */
  inbound?: 'redirect' | 'tproxy';
  /** TPROXY's policy routing, each "present" or what is missing. */
  routes?: Record<string, string>;
  /** DNS flows (UDP conversations, TCP connections) the DNS capture rules sent to the DNS proxy, per family:
   * nat sees each flow's first packet, so a socket that asks many queries counts once. */
  dnsCaptured?: Record<string, number>;
}

function netnsStatus(run: Runner, e: NetnsState): NetnsStatus {
  const fams = Object.keys(e.families).map((k) => Number(k) as Family);
  const base: NetnsStatus = {
    netns: e.path,
    netnsId: e.id,
    policy: e.policy,
    backend: e.backend,
    families: fams.map((f) => `ipv${f}`),
    rules: fams.reduce((a, f) => a + TABLES.reduce((n, t) => n + appliedIn(e.families[fkey(f)], t.table).length, 0), 0),
    live: 'unknown',
    staleCgroups: staleCgroups(e),
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
      const fs = e.families[fkey(f)]!;
      for (const t of TABLES) {
        const want = appliedIn(fs, t.table);
        if (t.table !== 'nat' && want.length === 0) continue;
        const live = ours(run.save(ns, e.backend, f, t.table));
        const missing = want.filter((l) => !live.includes(l)).length;
        const extra = live.filter((l) => !want.includes(l)).length;
        if (missing || extra) drift.push(`ipv${f} ${t.table}: ${missing} rule(s) missing, ${extra} unexpected`);
      }
      if (fs.applied.length) base.redirected[`ipv${f}`] = run.redirected(ns, e.backend, f, 'MESHREDIR_REDIRECT');
      if (fs.applied.some((l) => l.startsWith('-A MESHREDIR_DNS ')))
        (base.dnsCaptured ??= {})[`ipv${f}`] =
          run.redirected(ns, e.backend, f, 'MESHREDIR_DNS') +
          run.redirected(ns, e.backend, f, 'MESHREDIR_DNS', 'nat', 'DNAT');
      if (appliedIn(fs, 'mangle').some((l) => l.includes('-j TPROXY'))) {
        base.inbound = 'tproxy';
        base.inboundRedirected[`ipv${f}`] = run.redirected(ns, e.backend, f, 'MESHREDIR_TPROXY', 'mangle', 'TPROXY');
      } else if (fs.applied.some((l) => l.startsWith('-A PREROUTING ') && l.includes('MESHREDIR_INBOUND'))) {
        base.inbound = 'redirect';
        base.inboundRedirected[`ipv${f}`] = run.redirected(ns, e.backend, f, 'MESHREDIR_IN_REDIRECT');
      }
    }
    for (const r of e.routes ?? []) {
      const st = routeState(run, ns, r);
      const gone = [...(st.rule ? [] : ['ip rule']), ...(st.route ? [] : ['local route'])];
      (base.routes ??= {})[`ipv${r.family}`] = gone.length ? `missing ${gone.join(' and ')}` : 'present';
      if (gone.length) drift.push(`${routeText(r)}: ${gone.join(' and ')} missing`);
    }
    drift.push(...base.staleCgroups);
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
}

export function iptablesStatus(run: Runner, stateFile: string): StatusReport {
  const s = readState(stateFile);
  const policies: PolicyStatus[] = Object.values(s.policies);
  const netns = Object.values(s.netns).map((e) => netnsStatus(run, e));
  const counts = (r: Record<string, number>) =>
    Object.entries(r)
      .map(([f, c]) => `${f} ${c}`)
      .join(', ') || '-';
  return {
    mode: 'iptables',
    json: { stateFile, policies, iptables: netns, unsupported: LIMITS },
    text: [
      { lines: [`mode iptables · state ${stateFile}`] },
      {
        table: {
          head: ['policy', 'cgroup', 'outcome', 'netns', 'backend', 'families', 'reason'],
          rows: policies.map((p) => [
            p.policy,
            p.cgroup,
            p.outcome,
            p.netns ?? '-',
            p.backend ?? '-',
            (p.families ?? []).join(', ') || '-',
            p.reason ?? '',
          ]),
        },
      },
      {
        table: {
          head: ['netns', 'policy', 'backend', 'rules', 'live', 'redirected', 'inbound', 'dns flows captured'],
          rows: netns.map((n) => [
            `${n.netns} (${n.netnsId})`,
            n.policy,
            n.backend,
            n.rules,
            n.live,
            counts(n.redirected),
            n.inbound ? `${n.inbound}: ${counts(n.inboundRedirected)}` : '-',
            n.dnsCaptured ? counts(n.dnsCaptured) : '-',
          ]),
        },
      },
      { lines: [`limits of this mode:\n  - ${LIMITS.join('\n  - ')}`] },
    ],
  };
}
