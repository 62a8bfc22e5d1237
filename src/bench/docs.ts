// docs.ts — the generated parts of docs/benchmarks.md and of the README: a section spliced between its
// markers, the README's "Measured results" table from the same rows as the results, and both updated
// from a run merged into the documented one (a run of some scenarios replaces only theirs).
import type { Missing } from './types.js';
import { BASELINE, renderMarkdown, summarise, type Row } from './report.js';
import { mergeRuns, runPhrase, type RunJson } from './runmeta.js';

/** Replaces what stands between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (markers kept). */
export function splice(text: string, name: string, content: string): string {
  const begin = `<!-- ${name}:begin -->`;
  const end = `<!-- ${name}:end -->`;
  const a = text.indexOf(begin);
  const b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`no ${begin} … ${end} section to fill`);
  return `${text.slice(0, a + begin.length)}\n${content.trim()}\n${text.slice(b)}`;
}

const k = (v: number) =>
  v >= 10_000 ? `${(v / 1000).toFixed(1)}k` : v >= 1000 ? `${(v / 1000).toFixed(2)}k` : v.toFixed(0);
const us = (v: number) => `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} µs`;
const mbs = (v: number) =>
  v >= 1000 ? `${(v / 1000).toFixed(2)} GB/s` : `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} MB/s`;
const ms = (v: number) => `${v >= 100 ? v.toFixed(0) : v.toFixed(1)} ms`;

/** The README's "Measured results": medians of the run, ratios where they say something. */
export function renderReadmeSummary(rows: Row[], meta: Record<string, unknown>, missing: Missing[] = []): string {
  const get = (scenario: string, variant: string, mode: string, metric: string) =>
    rows.find((r) => r.scenario === scenario && r.variant === variant && r.mode === mode && r.metric === metric);
  const cell = (
    scenario: string,
    variant: string,
    mode: string,
    metric: string,
    f: (v: number) => string,
    showRatio = true,
  ) => {
    const r = get(scenario, variant, mode, metric);
    if (!r) return missing.some((m) => m.scenario === scenario && m.mode === mode) ? 'missing' : '—';
    return `${f(r.median)}${showRatio && r.ratio !== undefined && r.mode !== BASELINE[scenario] ? ` (${r.ratio.toFixed(2)}×)` : ''}`;
  };
  const modes = ['direct', 'iptables', 'ebpf', 'ebpf+sk_msg'];
  const line = (what: string, scenario: string, variant: string, metric: string, f: (v: number) => string) =>
    `| ${what} | ${modes.map((m) => cell(scenario, variant, m, metric, f)).join(' | ')} |`;
  const explicit = (variant: string, metric: string, f: (v: number) => string) =>
    cell('proxy', variant, 'explicit', metric, f, false);
  const run = runPhrase(meta);
  const out = [
    `Medians of ${run.how}, modes interleaved; ratios to the first column that has a number (direct; iptables for the exclusions row; eBPF for the hop), paired: the median over rounds of each round's ratio. Run ${run.when}, Linux ${String(meta.kernel)}, ${String(meta.cpus)} CPUs — method, CPU use, counters and the reading: [docs/benchmarks.md](docs/benchmarks.md).`,
    '',
    '| what | direct | iptables | eBPF | eBPF + sk_msg |',
    '|---|---|---|---|---|',
    line('new connections/s, redirect only (TCP_CRR, 1 B)', 'crr', '1B', 'rate', k),
    line('… with 10,000 exclusions', 'scale', '10000', 'rate', k),
    line(
      `through HAProxy, new connections/s (explicit floor: ${explicit('crr', 'rate', k)})`,
      'proxy',
      'crr',
      'rate',
      k,
    ),
    line(
      `through HAProxy, request/response p50 (explicit: ${explicit('rr', 'p50_us', us)})`,
      'proxy',
      'rr',
      'p50_us',
      us,
    ),
    ...HOP_ROWS.map(([what, variant, metric, f]) => line(what, 'hop', variant, metric, f)),
  ];
  const c = (variant: string, mode: string, metric = 'ms', f = ms) => cell('control', variant, mode, metric, f, false);
  out.push(
    '',
    `Control plane (medians): 10,000 policy entries applied in ${c('apply 10000 entries', 'ebpf')} (eBPF map entries, batched; in-sync re-apply ${c('re-apply 10000 entries (in sync)', 'ebpf')}) vs ${c('apply 10000 entries', 'iptables')} (one \`iptables-restore\` of 10,000 rules); agent start to redirect-ready ${c('agent start to redirect-ready', 'ebpf')}, of which Node and the CLI alone take ${c('node + CLI start (--version)', 'node')} and loading + attaching the programs ${c('load + attach (in-process)', 'ebpf')}; agent RSS ${c('agent RSS', 'ebpf', 'mib', (v) => `${v.toFixed(0)} MiB`)}.`,
  );
  return out.join('\n');
}

const HOP_ROWS: [string, string, string, (v: number) => string][] = [
  ['app→proxy hop, request/response p50, 1 KiB', 'rr 1024B', 'p50_us', us],
  ['app→proxy hop, request/response p50, 64 KiB', 'rr 65536B', 'p50_us', us],
  ['app→proxy stream, 64 B writes', 'stream 64B', 'mbytes_s', mbs],
  ['app→proxy stream, 1 KiB writes', 'stream 1024B', 'mbytes_s', mbs],
  ['app→proxy stream, 16 KiB writes', 'stream 16384B', 'mbytes_s', mbs],
  ['app→proxy stream, 64 KiB writes', 'stream 65536B', 'mbytes_s', mbs],
];

/**
 * The documented run's files after a run (`--docs`): `fresh` merged into the documented run (`old`,
 * docs/benchmarks.json; runmeta.ts): a run of some scenarios replaces only theirs. Returns the new
 * JSON, docs/benchmarks.md with its generated section rewritten (from every scenario's samples), the
 * README with its measured results, and the rows (for the chart). Pure: the CLI reads and writes.
 */
export function updateDocs(
  old: RunJson | undefined,
  fresh: RunJson,
  order: readonly string[],
  files: { benchmarksMd: string; readme: string },
): { run: RunJson; rows: Row[]; benchmarksMd: string; readme: string } {
  const run = mergeRuns(old, fresh, order);
  const missing = run.missing ?? [];
  const rows = summarise(run.samples);
  return {
    run,
    rows,
    benchmarksMd: splice(files.benchmarksMd, 'bench:results', renderMarkdown(rows, run.meta, run.samples, missing)),
    readme: splice(files.readme, 'bench:summary', renderReadmeSummary(rows, run.meta, missing)),
  };
}
