// health.ts — what /healthz and /readyz answer, decided from the agent's health (pure). Live: the agent's
// loop still completes reconcile passes (one is due every --interval; one overdue by far means it is
// stuck, and a restart is the cure). Ready: the mode's programs are attached or its rules applied, and
// the last pass succeeded.
import type { PolicyOutcome, Readiness } from '../modes/mode.js';

/** The last completed pass, for health checks (the /healthz endpoint reads it from the Agent). */
export interface PassHealth {
  at: Date;
  ok: boolean;
  reason: string;
  durationMs: number;
  /** Policies in force, and those that are not (rejected or failed). */
  applied: number;
  notApplied: number;
  errors: number;
  /** Why the pass failed as a whole (ok false). */
  error?: string;
  /** Policies by outcome, and the sources' errors (metrics). */
  states: Record<PolicyOutcome['state'], number>;
  sourceErrors: number;
}

/** Policies by outcome (PassHealth.states). */
export function countStates(outcomes: PolicyOutcome[]): PassHealth['states'] {
  const n = (state: PolicyOutcome['state']) => outcomes.filter((o) => o.state === state).length;
  return { applied: n('applied'), waiting: n('waiting'), rejected: n('rejected'), failed: n('failed') };
}

/** What the Agent reports of itself (Agent.health()). */
export interface AgentHealth {
  startedAt: Date;
  interval: number;
  lastPass: PassHealth | null;
  stopped: boolean;
}

export interface Verdict {
  ok: boolean;
  reason: string;
}

/** Seconds without a completed pass after which the agent is not live: three intervals and some slack
 * for a slow pass (status judges the heartbeat the same way). */
export const staleAfterSeconds = (interval: number): number => 3 * interval + 10;

export function liveness(h: AgentHealth, now: Date): Verdict {
  const since = h.lastPass?.at ?? h.startedAt;
  const ago = Math.max(0, (now.getTime() - since.getTime()) / 1000);
  const limit = staleAfterSeconds(h.interval);
  const what = h.lastPass ? 'last reconcile pass completed' : 'started, no pass completed yet,';
  if (ago > limit) return { ok: false, reason: `${what} ${ago.toFixed(1)} s ago (limit ${limit} s)` };
  return { ok: true, reason: `${what} ${ago.toFixed(1)} s ago` };
}

/** `mode` is asked only when everything else is ready (it reads the host). */
export function readiness(h: AgentHealth, mode: () => Readiness): Verdict {
  if (h.stopped) return { ok: false, reason: 'stopping' };
  if (!h.lastPass) return { ok: false, reason: 'starting: no reconcile pass completed yet' };
  if (!h.lastPass.ok) return { ok: false, reason: `the last reconcile pass failed: ${h.lastPass.error ?? 'unknown'}` };
  let m: Readiness;
  try {
    m = mode();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  return { ok: m.ready, reason: m.reason };
}
