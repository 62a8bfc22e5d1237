// health.ts — what /healthz and /readyz answer, decided from the agent's facts (pure). Live: the agent's
// loop still completes reconcile passes (a pass is due every --interval; one overdue by far means it is
// stuck, and a restart is the cure). Ready: the mode's programs are attached or its rules applied, and
// the last pass succeeded.
import type { Readiness } from '../modes/mode.js';

/** A completed reconcile pass (whether or not it changed anything). */
export interface Pass {
  /** When it completed (ms since the epoch). */
  at: number;
  /** How long it took. */
  seconds: number;
  /** False when the pass failed as a whole (it threw); one policy failing is an outcome, not this. */
  ok: boolean;
  error?: string;
  /** How many policies ended in each state. */
  policies: Record<'applied' | 'waiting' | 'rejected' | 'failed', number>;
  /** Errors the sources reported (unreadable or invalid policy files). */
  sourceErrors: number;
}

export interface Verdict {
  ok: boolean;
  reason: string;
}

/** Seconds without a completed pass after which the agent is not live: three intervals and some slack
 * for a slow pass (status judges the heartbeat the same way). */
export const staleAfterSeconds = (interval: number): number => 3 * interval + 10;

export interface HealthFacts {
  now: number;
  /** When the agent started (ms): the first pass is judged from it. */
  startedAt: number;
  interval: number;
  lastPass?: Pass;
  stopping: boolean;
}

export function liveness(f: HealthFacts): Verdict {
  const since = f.lastPass?.at ?? f.startedAt;
  const ago = Math.max(0, (f.now - since) / 1000);
  const limit = staleAfterSeconds(f.interval);
  const what = f.lastPass ? 'last reconcile pass completed' : 'started, no pass completed yet,';
  if (ago > limit) return { ok: false, reason: `${what} ${ago.toFixed(1)} s ago (limit ${limit} s)` };
  return { ok: true, reason: `${what} ${ago.toFixed(1)} s ago` };
}

/** `mode` is asked only when everything else is ready (it reads the host). */
export function readiness(f: HealthFacts, mode: () => Readiness): Verdict {
  if (f.stopping) return { ok: false, reason: 'stopping' };
  if (!f.lastPass) return { ok: false, reason: 'starting: no reconcile pass completed yet' };
  if (!f.lastPass.ok) return { ok: false, reason: `the last reconcile pass failed: ${f.lastPass.error ?? 'unknown'}` };
  let m: Readiness;
  try {
    m = mode();
  } catch (e) {
    return { ok: false, reason: (e as Error).message };
  }
  return { ok: m.ready, reason: m.reason };
}
