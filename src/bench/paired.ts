// paired.ts — the bench's ratios to a baseline, paired by round: for each round, a mode's value ÷ the
// baseline's value measured in the same round (modes interleaved, so the two are minutes apart at
// most), then the median and min–max of those per-round ratios. A slow drift of the machine (another
// job, the page cache, thermal) moves both values of a round together and cancels in their ratio,
// where a ratio of the two medians mixes rounds measured at different times.
import type { Sample } from './types.js';

/** A sample during which something else on the machine used more than this share of a core
 * (`others_cpu`: busy cores minus the bench's own processes) is disturbed: measured on a machine
 * with less CPU than the others of its round. Quiet samples measure 0.02–0.15 here; another job
 * takes ~1. */
export const DISTURBED = 0.3;
export const isDisturbed = (s: Sample) => (s.metrics.others_cpu ?? 0) > DISTURBED;

export interface Paired {
  /** Median, min and max of the per-round ratios. */
  median: number;
  min: number;
  max: number;
  /** Rounds the ratios are over: both the mode and the baseline had a valid sample, neither disturbed. */
  n: number;
  /** Rounds left out because one of the two samples was disturbed (all are kept if all were). */
  disturbed: number;
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

/** The per-round ratios of `mode` to `baseline` for one scenario, variant and metric (rounds where
 * either sample is rejected, missing or the baseline's value is 0 are left out, and so are disturbed
 * rounds unless every round was); undefined when no round has both. */
export function paired(
  samples: readonly Sample[],
  k: { scenario: string; variant: string; mode: string; metric: string },
  baseline: string,
): Paired | undefined {
  const valueOf = (mode: string) => {
    const byRound = new Map<number, Sample>();
    for (const s of samples) {
      if (s.invalid || s.scenario !== k.scenario || s.variant !== k.variant || s.mode !== mode) continue;
      if (s.metrics[k.metric] !== undefined) byRound.set(s.round, s);
    }
    return byRound;
  };
  const base = valueOf(baseline);
  const all: { ratio: number; disturbed: boolean }[] = [];
  for (const [round, x] of valueOf(k.mode)) {
    const b = base.get(round);
    if (b?.metrics[k.metric])
      all.push({ ratio: x.metrics[k.metric]! / b.metrics[k.metric]!, disturbed: isDisturbed(x) || isDisturbed(b) });
  }
  if (!all.length) return undefined;
  const quiet = all.filter((p) => !p.disturbed);
  const ratios = (quiet.length ? quiet : all).map((p) => p.ratio);
  return {
    median: median(ratios),
    min: Math.min(...ratios),
    max: Math.max(...ratios),
    n: ratios.length,
    disturbed: all.length - ratios.length,
  };
}
