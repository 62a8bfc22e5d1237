// metrics.ts — the eBPF mode's metrics, read from the pins at scrape time: per-policy counters (mr_stats,
// summed over CPUs; their families are named in stat-metrics.ts), handshakes in flight against their
// limit, map entries and capacity, which links are attached, whether the fast path is usable, and whether
// each policy's inbound proxy listener is registered.
import { REDIRECTING, REDIRECT_NEEDS, type InStatName } from '../../bpf/abi.js';
import { DNS_STAT_METRICS, IN_STAT_METRICS, STAT_METRICS, f, type StatMetric } from './stat-metrics.js';
import type { Readiness } from '../mode.js';
import { COMMON, Families, type FamilyDef, type MetricFamily } from '../metrics.js';
import {
  stats,
  dnsStats,
  pending,
  pendingBySlot,
  fill,
  fastPath,
  type Counters,
  type DnsCounters,
} from './counters.js';
import type { Pins } from './pins.js';
import { inboundPolicies } from './inbound-status.js';

const LISTENER = f(
  'meshredir_inbound_listener_registered',
  "Whether the inbound proxy's listening socket is registered for the policy's sk_lookup program (1) or not (0: connections refused or passed), by address family.",
  ['family'],
  'gauge',
);

/** The inbound families from counters and registered listeners by policy name (pure). */
export function inboundFamilies(
  byPolicy: Map<
    string,
    { counters: Record<InStatName, number>; listeners: { ipv4: string | null; ipv6: string | null } }
  >,
  out = new Families(),
): Families {
  tableFamilies(IN_STAT_METRICS, new Map([...byPolicy].map(([p, v]) => [p, v.counters])), undefined, out);
  out.declare(LISTENER);
  for (const [policy, v] of byPolicy)
    for (const family of ['ipv4', 'ipv6'] as const) out.add(LISTENER, { policy, family }, v.listeners[family] ? 1 : 0);
  return out;
}

/** The per-policy counter families from counters by policy name and slot 0's (pure). */
export function statFamilies(
  byPolicy: Map<string, Counters>,
  node: Counters | undefined,
  out = new Families(),
): Families {
  return tableFamilies(STAT_METRICS, byPolicy, node, out);
}

/** The same for DNS capture's counters (pure). */
export function dnsFamilies(byPolicy: Map<string, DnsCounters>, out = new Families()): Families {
  return tableFamilies(DNS_STAT_METRICS, byPolicy, undefined, out);
}

function tableFamilies<F extends string>(
  table: Record<F, StatMetric>,
  byPolicy: Map<string, Record<F, bigint | number>>,
  node: Record<F, bigint | number> | undefined,
  out: Families,
): Families {
  const rows = Object.entries(table) as [F, StatMetric][];
  for (const [, m] of rows) out.declare(m.family);
  for (const [field, m] of rows) {
    if (m.scope === 'node') {
      out.add(m.family, { ...m.labels }, Number(node?.[field] ?? 0));
      continue;
    }
    for (const [policy, c] of byPolicy) out.add(m.family, { policy, ...m.labels }, Number(c[field]));
  }
  return out;
}

const gauge = (name: string, help: string, labelNames: string[] = []): FamilyDef => ({
  name,
  type: 'gauge',
  help,
  labelNames,
});
const MAP_ENTRIES = gauge('meshredir_map_entries', 'Entries in a BPF map of meshredir (hash, LPM and socket maps).', [
  'map',
]);
const MAP_CAPACITY = gauge('meshredir_map_capacity', 'Maximum entries of a BPF map of meshredir.', ['map']);
const IN_FLIGHT = gauge(
  'meshredir_handshakes_in_flight',
  "Redirected handshakes not yet completed by the proxy's kernel (records in mr_orig).",
);
const IN_FLIGHT_LIMIT = gauge(
  'meshredir_handshakes_in_flight_limit',
  'Handshakes in flight past which connect() is refused (--max-connections).',
);
const POLICY_IN_FLIGHT = gauge(
  'meshredir_policy_handshakes_in_flight',
  "The policy's redirected handshakes not yet completed by its proxy's kernel (its records in mr_orig).",
  ['policy'],
);
const POLICY_IN_FLIGHT_LIMIT = gauge(
  'meshredir_policy_handshakes_in_flight_limit',
  "The policy's budget of handshakes in flight, past which its connects are refused (--max-pending-per-policy).",
  ['policy'],
);
const ATTACHED = gauge(
  'meshredir_program_attached',
  'Whether the pinned link of a BPF program is attached (1) or detached (0).',
  ['program'],
);
const FASTPATH = gauge(
  'meshredir_fastpath_available',
  'Whether the sk_msg fast path can be used on this kernel (spec.accelerate is applied).',
);

/** The families besides the per-policy counters (docs and tests list them). */
export const NODE_FAMILIES: readonly FamilyDef[] = [
  IN_FLIGHT,
  IN_FLIGHT_LIMIT,
  POLICY_IN_FLIGHT,
  POLICY_IN_FLIGHT_LIMIT,
  MAP_ENTRIES,
  MAP_CAPACITY,
  ATTACHED,
  FASTPATH,
];

/** Every family, read from the pins now; none when nothing is installed. */
export function ebpfMetrics(pins: Pins): MetricFamily[] {
  if (!pins.installed()) return [];
  const out = new Families();
  const slots = pins.slots();
  const named = <C>(bySlot: Map<number, C>) =>
    new Map([...slots].flatMap(([name, slot]) => (bySlot.has(slot) ? [[name, bySlot.get(slot)!] as [string, C]] : [])));
  const counters = stats(pins);
  statFamilies(named(counters), counters.get(0), out);
  const dns = dnsStats(pins);
  if (dns.size) dnsFamilies(named(dns), out);
  // Inbound: the policies with an sk_lookup link or pod addresses (none before the inbound maps are pinned).
  const inbound = inboundPolicies(pins).filter((p) => !p.policy.startsWith('slot '));
  if (inbound.length) inboundFamilies(new Map(inbound.map((p) => [p.policy, p])), out);
  const p = pending(pins);
  out.add(IN_FLIGHT, {}, p.pending);
  out.add(IN_FLIGHT_LIMIT, {}, p.limit);
  out.declare(POLICY_IN_FLIGHT);
  out.declare(POLICY_IN_FLIGHT_LIMIT);
  for (const [policy, b] of named(pendingBySlot(pins))) {
    out.add(POLICY_IN_FLIGHT, { policy }, b.now);
    out.add(POLICY_IN_FLIGHT_LIMIT, { policy }, b.limit);
  }
  for (const m of fill(pins)) {
    out.add(MAP_ENTRIES, { map: m.map }, m.entries);
    out.add(MAP_CAPACITY, { map: m.map }, m.max);
  }
  for (const l of pins.links()) out.add(ATTACHED, { program: l.name }, l.attached ? 1 : 0);
  out.add(FASTPATH, {}, fastPath(pins).usable ? 1 : 0);
  return out.list();
}

/** Ready when every program that redirects, and every one that answers for a redirected connection, is
 * attached, and no pinned link is detached. */
export function ebpfReadiness(pins: Pins): Readiness {
  const links = pins.links();
  const missing = [...REDIRECT_NEEDS, ...REDIRECTING].filter((n) => !links.some((l) => l.name === n));
  const detached = links.filter((l) => !l.attached).map((l) => l.name);
  if (missing.length) return { ready: false, reason: `not attached: ${missing.join(', ')}` };
  if (detached.length) return { ready: false, reason: `detached: ${detached.join(', ')}` };
  return { ready: true, reason: `${links.length} programs attached` };
}
