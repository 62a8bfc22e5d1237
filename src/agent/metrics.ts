// metrics.ts — the agent's /metrics (prom-client): its own families (reconcile passes, policies by state,
// the mode and why, the build) kept as it runs, and the mode's families read from the host at each
// scrape (mode.metrics()) — the counters live in the kernel, never a second time here.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { Mode } from '../modes/mode.js';
import type { MetricFamily } from '../modes/metrics.js';
import type { PassHealth } from './health.js';

/** The package's version (package.json beside dist/ and src/). */
export function packageVersion(): string {
  const file = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'package.json');
  try {
    return (JSON.parse(readFileSync(file, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface ModeInfo {
  mode: string;
  requested: string;
  reason: string;
}

const STATES = ['applied', 'waiting', 'rejected', 'failed'] as const;

export class AgentMetrics {
  readonly registry = new Registry();
  private readonly duration: Histogram;
  private readonly errors: Counter;
  private readonly policies: Gauge;
  private readonly fileErrors: Gauge;
  private readonly lastPass: Gauge;
  private readonly lastOk: Gauge;
  private readonly modeOk: Gauge;
  /** The mode's families, made on first sight and refilled at each scrape. */
  private readonly fromMode = new Map<string, Counter | Gauge>();

  constructor(info: ModeInfo, version = packageVersion()) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry });
    // prom-client names some gauges `nodejs_active_*_total`, which Prometheus' conventions (and promtool)
    // keep for counters: left out.
    for (const m of this.registry.getMetricsAsArray()) {
      const { name, type } = m as unknown as { name: string; type: string };
      if (name.endsWith('_total') && type !== 'counter') this.registry.removeSingleMetric(name);
    }
    this.duration = new Histogram({
      name: 'meshredir_reconcile_duration_seconds',
      help: 'Duration of reconcile passes (read the sources, plan, apply), failed ones included.',
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.errors = new Counter({
      name: 'meshredir_reconcile_errors_total',
      help: 'Reconcile passes that failed as a whole (what was in force stays; readiness is lost until one succeeds).',
      registers,
    });
    this.policies = new Gauge({
      name: 'meshredir_policies',
      help: 'Policies after the last pass by state: applied, waiting (for their cgroup), rejected (by the mode), failed (to apply).',
      labelNames: ['state'],
      registers,
    });
    this.fileErrors = new Gauge({
      name: 'meshredir_policy_source_errors',
      help: 'Errors the policy sources reported at the last pass (unreadable or invalid policy files).',
      registers,
    });
    this.lastPass = new Gauge({
      name: 'meshredir_last_reconcile_timestamp_seconds',
      help: 'When the last reconcile pass completed (Unix time), whether or not it changed anything.',
      registers,
    });
    this.lastOk = new Gauge({
      name: 'meshredir_last_reconcile_success',
      help: 'Whether the last reconcile pass succeeded (1) or failed (0).',
      registers,
    });
    this.modeOk = new Gauge({
      name: 'meshredir_mode_metrics_success',
      help: "Whether the mode's counters could be read at this scrape (1) or not (0, the error is logged).",
      registers,
    });
    new Gauge({
      name: 'meshredir_mode_info',
      help: 'The redirection mode in force (value 1): the mode requested, the one chosen and why.',
      labelNames: ['mode', 'requested', 'reason'],
      registers,
    }).set({ mode: info.mode, requested: info.requested, reason: info.reason }, 1);
    new Gauge({
      name: 'meshredir_build_info',
      help: 'The meshredir build (value 1).',
      labelNames: ['version'],
      registers,
    }).set({ version }, 1);
    for (const state of STATES) this.policies.set({ state }, 0);
  }

  /** A completed pass. */
  observe(p: PassHealth): void {
    this.duration.observe(p.durationMs / 1000);
    if (!p.ok) this.errors.inc();
    this.lastPass.set(p.at.getTime() / 1000);
    this.lastOk.set(p.ok ? 1 : 0);
    // A failed pass says nothing about the policies: the previous outcome stands.
    if (!p.ok) return;
    for (const state of STATES) this.policies.set({ state }, p.states[state]);
    this.fileErrors.set(p.sourceErrors);
  }

  /** The exposition, with the mode's families read now. A mode that cannot be read leaves its families
   * out (and says so in meshredir_mode_metrics_success) rather than failing the scrape. */
  async render(mode: Mode, onError: (e: Error) => void): Promise<{ contentType: string; body: string }> {
    let families: MetricFamily[] = [];
    try {
      families = mode.metrics();
      this.modeOk.set(1);
    } catch (e) {
      onError(e as Error);
      this.modeOk.set(0);
    }
    for (const m of this.fromMode.values()) m.reset();
    for (const f of families) this.fill(f);
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  private fill(f: MetricFamily): void {
    let m = this.fromMode.get(f.name);
    if (!m) {
      const cfg = { name: f.name, help: f.help, labelNames: [...f.labelNames], registers: [this.registry] };
      m = f.type === 'counter' ? new Counter(cfg) : new Gauge(cfg);
      this.fromMode.set(f.name, m);
    }
    for (const s of f.samples) {
      if (m instanceof Counter) m.inc(s.labels, Math.max(0, s.value));
      else m.set(s.labels, s.value);
    }
  }
}
