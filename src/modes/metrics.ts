// metrics.ts — what a mode reports for the agent's /metrics: metric families and their samples, read at
// scrape time from where the mode's counters live (BPF maps, nat rule counters), never kept a second
// time. The families both modes can fill are declared once here, so dashboards work in either mode.
export type Labels = Record<string, string>;

export interface MetricSample {
  labels: Labels;
  value: number;
}

/** One Prometheus metric family; every sample has exactly `labelNames`. */
export interface MetricFamily {
  name: string;
  type: 'counter' | 'gauge';
  help: string;
  labelNames: readonly string[];
  samples: MetricSample[];
}

export type FamilyDef = Omit<MetricFamily, 'samples'>;

/** Why a connect() of a covered workload was not redirected (the reasons of both modes). */
export type BypassReason =
  | 'proxy_cgroup'
  | 'mark'
  | 'owner'
  | 'port'
  | 'cidr'
  | 'loopback'
  | 'no_proxy_for_family'
  | 'destination_is_proxy'
  | 'inbound_passthrough';

/** Families with the same meaning in both modes. */
export const COMMON = {
  redirected: {
    name: 'meshredir_connections_redirected_total',
    type: 'counter',
    help: 'Outbound TCP connections of the policy sent to its proxy.',
    labelNames: ['policy'],
  },
  bypassed: {
    name: 'meshredir_connections_bypassed_total',
    type: 'counter',
    help: 'Outbound TCP connections of the policy left to go direct, by reason.',
    labelNames: ['policy', 'reason'],
  },
  inboundRedirected: {
    name: 'meshredir_inbound_connections_redirected_total',
    type: 'counter',
    help: "Inbound TCP connections of the policy's pod delivered to its inbound proxy (eBPF: steered to its listener by sk_lookup; iptables: REDIRECT or TPROXY).",
    labelNames: ['policy'],
  },
  inboundBypassed: {
    name: 'meshredir_inbound_connections_bypassed_total',
    type: 'counter',
    help: "Inbound TCP connections of the policy's pod left to go to the application, by reason.",
    labelNames: ['policy', 'reason'],
  },
} as const satisfies Record<string, FamilyDef>;

/** Families keyed by name, samples appended in order; label names checked on every add. */
export class Families {
  private readonly byName = new Map<string, MetricFamily>();

  /** Declares a family (idempotent: a second declaration must be the same). */
  declare(def: FamilyDef): MetricFamily {
    const had = this.byName.get(def.name);
    if (had) {
      if (had.type !== def.type || had.labelNames.join() !== def.labelNames.join())
        throw new Error(`metric ${def.name} declared twice with different type or labels`);
      return had;
    }
    const f: MetricFamily = { ...def, labelNames: [...def.labelNames], samples: [] };
    this.byName.set(def.name, f);
    return f;
  }

  add(def: FamilyDef, labels: Labels, value: number): void {
    const f = this.declare(def);
    const names = Object.keys(labels).sort().join();
    if (names !== [...f.labelNames].sort().join())
      throw new Error(`metric ${f.name}: labels ${names} instead of ${f.labelNames.join()}`);
    f.samples.push({ labels, value });
  }

  list(): MetricFamily[] {
    return [...this.byName.values()];
  }
}
