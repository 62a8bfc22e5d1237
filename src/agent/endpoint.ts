// endpoint.ts — the agent's HTTP endpoint wired to the agent: /healthz and /readyz from Agent.health() and
// the mode, /metrics from AgentMetrics. prom-client (~110 ms to import) is loaded once the first pass has
// completed (or at the first scrape), not during it, so that it never delays redirect-ready; the passes
// completed before it is there are observed once it is.
import type { Mode } from '../modes/mode.js';
import type { Logger } from '../util/log.js';
import type { ModeDecision } from './decide.js';
import type { PassHealth } from './health.js';
import { liveness, readiness, type AgentHealth } from './health.js';
import { serve, type ListenAddress } from './http.js';
import type { AgentMetrics } from './metrics.js';

export interface AgentEndpoint {
  address: string;
  /** A completed pass (for the metrics). */
  observe(p: PassHealth): void;
  close(): Promise<void>;
}

/** Binds `at` (rejects when it cannot: nothing else is done then) and serves the agent's three paths. */
export async function startEndpoint(
  at: ListenAddress,
  agent: { health(): AgentHealth; readonly mode: Mode; readonly opts: { decision: ModeDecision } },
  log: Logger,
): Promise<AgentEndpoint> {
  const warn = (event: string) => (e: Error) => log.warn({ event, err: e }, e.message);
  const early: PassHealth[] = [];
  let loaded: AgentMetrics | undefined;
  let metrics: Promise<AgentMetrics> | undefined;
  const load = (): Promise<AgentMetrics> => {
    if (metrics) return metrics;
    metrics = import('./metrics.js').then(({ AgentMetrics }) => {
      const d = agent.opts.decision;
      const m = new AgentMetrics({ mode: d.chosen, requested: d.requested, reason: d.reason });
      for (const p of early.splice(0)) m.observe(p);
      loaded = m;
      return m;
    });
    metrics.catch(warn('metrics_unavailable'));
    return metrics;
  };
  const ep = await serve(
    at,
    {
      metrics: async () => (await load()).render(agent.mode, warn('metrics_unreadable')),
      live: () => liveness(agent.health(), new Date()),
      ready: () => readiness(agent.health(), () => agent.mode.readiness()),
    },
    warn('http_error'),
  );
  log.info({ event: 'metrics', address: ep.address }, `serving /metrics, /healthz, /readyz on ${ep.address}`);
  return {
    address: ep.address,
    observe: (p) => {
      if (loaded) return loaded.observe(p);
      early.push(p);
      // After this turn: the pass that called observe() finishes (and says redirect-ready) first.
      setImmediate(() => void load().catch(() => {}));
    },
    close: () => ep.close(),
  };
}
