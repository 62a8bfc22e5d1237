// progress.ts — small helpers every bench scenario shares: the mode order of a round, a progress line's
// result, an error's first line, and stopping a lab process.
import type { LabProc } from './lab.js';
import type { Sample } from './types.js';

/** Mode order of a round: rotated by one each round, so no mode always runs first (or after the same). */
export function rotate<T>(xs: readonly T[], round: number): T[] {
  const k = xs.length ? (round - 1) % xs.length : 0;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

export const msg = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300);

export async function stop(p: LabProc): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  await p.exited;
}

/** A progress line's result: the text (and how often a busy machine made it measure again), or why
 * the sample was rejected. */
export const say = (x: Sample, text: string) =>
  x.invalid
    ? `REJECTED (${x.invalid.join('; ')})`
    : `${text}${x.metrics.retries ? ` (measured ${x.metrics.retries + 1}×: something else took CPU)` : ''}`;
/** The fast path's counters of an ebpf+sk_msg sample, for its progress line. */
export const fastNote = (x: Sample) =>
  x.mode === 'ebpf+sk_msg' && x.counters
    ? `, msg_fast ${x.counters.msg_fast ?? 0} / msg_slow ${x.counters.msg_slow ?? 0}, backoff ${x.counters.msg_backoff ?? 0}, left ${x.counters.accel_left ?? 0}`
    : '';
