// runmeta.ts — what a bench run's header says about when and how it measured, and the merge of a run of
// some scenarios (`--only`) into the documented run: the scenarios it measured replace theirs, the
// others are kept with the date and settings of the run that measured them.
import type { Missing, Sample } from './types.js';

/** A run's JSON, as the CLI writes it (docs/benchmarks.json, bench-results/*.json). */
export interface RunJson {
  meta: Record<string, unknown>;
  missing?: Missing[];
  samples: Sample[];
}

/** One run's share of the documented results: its scenarios and how they were measured. */
export interface Part {
  scenarios: string[];
  date: string;
  rounds: number;
  duration: number;
  warmup?: number;
  placement?: string;
  seconds?: number;
}

/** The parts of a run: its meta's `measured` list, or (a run of its own) one part from its fields, its
 * scenarios those of its `only` (or, in a JSON without it, of its samples and missing modes). */
export function partsOf(r: RunJson): Part[] {
  const meta = r.meta;
  if (Array.isArray(meta.measured)) return meta.measured as Part[];
  const seen = [...new Set([...r.samples, ...(r.missing ?? [])].map((s) => s.scenario))];
  return [
    {
      scenarios: Array.isArray(meta.only) ? (meta.only as string[]) : seen,
      date: String(meta.date),
      rounds: Number(meta.rounds),
      duration: Number(meta.duration),
      ...(meta.warmup === undefined ? {} : { warmup: Number(meta.warmup) }),
      ...(meta.placement === undefined ? {} : { placement: String(meta.placement) }),
      ...(meta.seconds === undefined ? {} : { seconds: Number(meta.seconds) }),
    },
  ];
}

/**
 * `fresh` merged into `old` (the documented run): the scenarios `fresh` measured (its `only`) come
 * from it, samples, missing modes and all; every other scenario keeps what `old` had and the part
 * that says when it was measured. Samples are ordered by `order` (the registry's), so the results
 * keep their scenario order. Without `old`, `fresh` alone.
 */
export function mergeRuns(old: RunJson | undefined, fresh: RunJson, order: readonly string[]): RunJson {
  const parts = partsOf(fresh);
  const redone = new Set(parts.flatMap((p) => p.scenarios));
  const kept = (s: { scenario: string }) => !redone.has(s.scenario);
  const oldParts = old
    ? partsOf(old)
        .map((p) => ({ ...p, scenarios: p.scenarios.filter((s) => !redone.has(s)) }))
        .filter((p) => p.scenarios.length)
    : [];
  const rank = (s: { scenario: string }) => {
    const i = order.indexOf(s.scenario);
    return i < 0 ? order.length : i;
  };
  const byOrder = <T extends { scenario: string }>(xs: T[]) =>
    xs
      .map((x, i) => [x, i] as const)
      .sort((a, b) => rank(a[0]) - rank(b[0]) || a[1] - b[1])
      .map(([x]) => x);
  const all = [...parts, ...oldParts];
  const only = order.filter((s) => all.some((p) => p.scenarios.includes(s)));
  return {
    meta: { ...fresh.meta, only, measured: all },
    missing: byOrder([...(old?.missing ?? []).filter(kept), ...(fresh.missing ?? [])]),
    samples: byOrder([...(old?.samples ?? []).filter(kept), ...fresh.samples]),
  };
}

const when = (date: string) => date.replace('T', ' ').slice(0, 16) + (date.includes('T') ? ' UTC' : '');
const how = (p: Part) =>
  `${p.rounds} rounds × ${p.duration} s per measurement (after ${p.warmup ?? ''} s of warm-up)${p.placement ? `, placement ${p.placement}` : ''}`;

/** The results' "Run:" line: one run as always; parts of several runs each with its scenarios, date
 * and settings. */
export function runHeader(meta: Record<string, unknown>): string {
  const rmem = meta.tcp_rmem
    ? ` · bench netns tcp_rmem ${String(meta.tcp_rmem)} (the fast path's bound: its maximum, at least 4 MiB)`
    : '';
  const parts = Array.isArray(meta.measured) ? (meta.measured as Part[]) : [];
  if (parts.length > 1)
    return `Run: kernel ${String(meta.kernel)} · ${String(meta.cpus)} CPUs · measured in ${parts.length} runs, modes interleaved and rotated within each: ${parts
      .map((p) => `${p.scenarios.join(', ')} on ${when(p.date)}, ${how(p)}`)
      .join('; ')}${rmem}`;
  const placed = meta.placement ? ` · placement ${String(meta.placement)}` : '';
  return `Run: ${String(meta.date)} · kernel ${String(meta.kernel)} · ${String(meta.cpus)} CPUs · ${String(meta.rounds)} rounds × ${String(meta.duration)} s per measurement (after ${String(meta.warmup ?? '')} s of warm-up), modes interleaved and rotated${placed}${meta.seconds === undefined ? '' : ` · ${Number(meta.seconds).toFixed(0)} s in all`}${rmem}`;
}

/** The README's words for the same: "5 rounds × 3 s … Run 2026-12-05", or each part's. */
export function runPhrase(meta: Record<string, unknown>): { how: string; when: string } {
  const parts = Array.isArray(meta.measured) ? (meta.measured as Part[]) : [];
  if (parts.length > 1)
    return {
      how: parts.map((p) => `${p.scenarios.join(', ')}: ${p.rounds} rounds × ${p.duration} s`).join('; '),
      when: [...new Set(parts.map((p) => p.date.slice(0, 10)))].join(' and '),
    };
  return { how: `${String(meta.rounds)} rounds × ${String(meta.duration)} s`, when: String(meta.date).slice(0, 10) };
}
