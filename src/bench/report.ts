// report.ts — the benchmark's outputs: medians and min–max per mode over the valid samples, ratios to
// the baseline, CPU use, the fast path's counters per sample, missing modes and rejected samples; a
// terminal table, an SVG chart (vega-lite) and a markdown section. The JSON with every raw sample is
// written by the CLI.
import type { Sample, Missing } from './types.js';
import { fastShare } from './checks.js';
import { table } from '../util/table.js';
import { renderHooksMarkdown, renderHooksText } from './hookreport.js';

export interface Row {
  scenario: string;
  variant: string;
  mode: string;
  metric: string;
  median: number;
  min: number;
  max: number;
  /** Valid samples the median is over. */
  n: number;
  /** Samples of the same scenario, variant and mode that were rejected (not in the median). */
  rejected: number;
  /** median / median of the baseline mode of the same scenario, variant and metric. */
  ratio?: number;
}

export const BASELINE: Record<string, string> = {
  crr: 'direct',
  scale: 'iptables',
  proxy: 'direct',
  hop: 'ebpf',
  inbound: 'direct',
  dns: 'direct',
};
const MAIN: Record<string, string[]> = {
  crr: ['rate', 'p50_us', 'p99_us', 'trace_events', 'trace_lost'],
  scale: ['rate', 'p50_us', 'p99_us'],
  proxy: ['rate', 'p50_us', 'p99_us'],
  hop: ['rate', 'p50_us', 'p99_us', 'mbytes_s', 'e2e_mbytes_s', 'drain_ms'],
  inbound: ['rate', 'p50_us', 'p99_us'],
  dns: ['rate', 'p50_us', 'p99_us'],
  control: ['ms', 'mib', 'writes'],
  hooks: ['ns_total'],
};
/** CPU use: fractions of one core (client, server, HAProxy, the `trace` reader) and of the whole machine (idle). */
export const CPU = ['client_user', 'client_sys', 'server_cpu', 'haproxy_cpu', 'trace_cpu', 'idle'] as const;
const isCpu = (m: string) => (CPU as readonly string[]).includes(m);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export function summarise(samples: Sample[]): Row[] {
  const groups = new Map<string, { s: Sample; values: number[]; metric: string }>();
  const rejected = new Map<string, number>();
  const gk = (s: Sample) => `${s.scenario}|${s.variant}|${s.mode}`;
  for (const s of samples) {
    if (s.invalid) {
      rejected.set(gk(s), (rejected.get(gk(s)) ?? 0) + 1);
      continue;
    }
    for (const [metric, v] of Object.entries(s.metrics)) {
      if (!(MAIN[s.scenario] ?? []).includes(metric) && !isCpu(metric)) continue;
      const k = `${gk(s)}|${metric}`;
      const g = groups.get(k) ?? { s, values: [], metric };
      g.values.push(v);
      groups.set(k, g);
    }
  }
  const rows: Row[] = [...groups.values()].map(({ s, values, metric }) => ({
    scenario: s.scenario,
    variant: s.variant,
    mode: s.mode,
    metric,
    median: median(values),
    min: Math.min(...values),
    max: Math.max(...values),
    n: values.length,
    rejected: rejected.get(gk(s)) ?? 0,
  }));
  for (const r of rows) {
    if (isCpu(r.metric)) continue;
    const base = rows.find(
      (b) =>
        b.scenario === r.scenario &&
        b.variant === r.variant &&
        b.metric === r.metric &&
        b.mode === BASELINE[r.scenario],
    );
    if (base && base.median) r.ratio = r.median / base.median;
  }
  return rows;
}

const pct = (v: number) => `${(v * 100).toFixed(0)}%`;
const fmt = (v: number, metric: string) => (isCpu(metric) ? pct(v) : v >= 100 ? v.toFixed(0) : v.toFixed(1));
const ratio = (r: Row) => (r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`);
const nCell = (r: Row) => (r.rejected ? `${r.n} (+${r.rejected} rejected)` : String(r.n));

/** Median CPU use per scenario, variant and mode: one line each. */
function cpuLines(rows: Row[]): { scenario: string; variant: string; mode: string; cells: string[] }[] {
  const out = new Map<string, { scenario: string; variant: string; mode: string; cells: string[] }>();
  for (const r of rows) {
    if (!isCpu(r.metric)) continue;
    const k = `${r.scenario}|${r.variant}|${r.mode}`;
    const line = out.get(k) ?? { scenario: r.scenario, variant: r.variant, mode: r.mode, cells: CPU.map(() => '–') };
    line.cells[CPU.indexOf(r.metric as (typeof CPU)[number])] = `${pct(r.median)} (${pct(r.min)}–${pct(r.max)})`;
    out.set(k, line);
  }
  return [...out.values()];
}

const CPU_HEAD = ['client user', 'client sys', 'server', 'HAProxy', 'trace', 'machine idle'];

export function renderTable(rows: Row[], missing: Missing[] = [], samples: Sample[] = []): string {
  const main = table(
    ['scenario', 'variant', 'mode', 'metric', 'median', 'min–max', 'n', 'vs baseline'],
    rows
      .filter((r) => !isCpu(r.metric))
      .map((r) => [
        r.scenario,
        r.variant,
        r.mode,
        r.metric,
        fmt(r.median, r.metric),
        `${fmt(r.min, r.metric)}–${fmt(r.max, r.metric)}`,
        nCell(r),
        ratio(r),
      ]),
  );
  const cpu = cpuLines(rows);
  const parts = [main];
  if (cpu.length)
    parts.push(
      '',
      'CPU (median, min–max; client/server/HAProxy: share of one core; idle: share of the whole machine)',
      table(
        ['scenario', 'variant', 'mode', ...CPU_HEAD],
        cpu.map((l) => [l.scenario, l.variant, l.mode, ...l.cells]),
      ),
    );
  const hooks = renderHooksText(samples, table);
  if (hooks)
    parts.push('', 'Per-hook cost (BPF run-time statistics; calls by callback and side: fentry profiler)', hooks);
  for (const m of missing) parts.push(`missing: ${m.scenario} ${m.mode}: ${m.reason}`);
  for (const s of samples.filter((x) => x.invalid))
    parts.push(`rejected: ${s.scenario} ${s.variant} ${s.mode} round ${s.round}: ${s.invalid!.join('; ')}`);
  return parts.join('\n');
}

/** The panels of the chart: rates and throughput, and p50 latency of request/response. */
export function renderMarkdown(
  rows: Row[],
  meta: Record<string, unknown>,
  samples: Sample[] = [],
  missing: Missing[] = [],
): string {
  const lines = [
    `Run: ${String(meta.date)} · kernel ${String(meta.kernel)} · ${String(meta.cpus)} CPUs · ${String(meta.rounds)} rounds × ${String(meta.duration)} s per measurement (after ${String(meta.warmup ?? '')} s of warm-up), modes interleaved and rotated${meta.seconds === undefined ? '' : ` · ${Number(meta.seconds).toFixed(0)} s in all`}${meta.tcp_rmem ? ` · bench netns tcp_rmem ${String(meta.tcp_rmem)} (the fast path's bound: its maximum, at least 4 MiB)` : ''}`,
    '',
  ];
  const cpu = cpuLines(rows);
  for (const scenario of [...new Set(rows.map((r) => r.scenario))]) {
    lines.push(
      `### ${scenario}`,
      '',
      '| variant | mode | metric | median | min–max | n | vs baseline |',
      '|---|---|---|---|---|---|---|',
    );
    for (const r of rows.filter((x) => x.scenario === scenario && !isCpu(x.metric))) {
      lines.push(
        `| ${r.variant} | ${r.mode} | ${r.metric} | ${fmt(r.median, r.metric)} | ${fmt(r.min, r.metric)}–${fmt(r.max, r.metric)} | ${nCell(r)} | ${ratio(r)} |`,
      );
    }
    lines.push('');
    if (scenario === 'hooks') lines.push(renderHooksMarkdown(samples));
    if (scenario === 'crr') {
      const scaling = [...new Set(rows.filter((r) => r.scenario === 'crr').map((r) => r.mode))].flatMap((m) => {
        const one = rows.find((r) => r.scenario === 'crr' && r.variant === '1B' && r.mode === m && r.metric === 'rate');
        const two = rows.find(
          (r) => r.scenario === 'crr' && r.variant === '1B, 2 clients' && r.mode === m && r.metric === 'rate',
        );
        return one && two && one.median ? [`${m} ${(two.median / one.median).toFixed(2)}×`] : [];
      });
      if (scaling.length)
        lines.push(
          `Client bottleneck check — median rate with two clients (8 in flight each) ÷ with one (16 in flight): ${scaling.join(', ')}.`,
          '',
        );
    }
    const c = cpu.filter((l) => l.scenario === scenario);
    if (c.length) {
      lines.push(
        `CPU of ${scenario} (median, min–max; client, server, HAProxy: share of one core; idle: share of the whole machine):`,
        '',
      );
      lines.push(`| variant | mode | ${CPU_HEAD.join(' | ')} |`, `|---|---|${CPU_HEAD.map(() => '---|').join('')}`);
      for (const l of c) lines.push(`| ${l.variant} | ${l.mode} | ${l.cells.join(' | ')} |`);
      lines.push('');
    }
  }
  const fast = samples.filter((s) => s.mode === 'ebpf+sk_msg' && s.counters);
  if (fast.length) {
    lines.push(
      '### fast path counters (every eBPF + sk_msg sample)',
      '',
      '| scenario | variant | round | msg_fast | msg_slow | msg_resumed | backoffs | sockets accelerated | connections | fast share | valid |',
      '|---|---|---|---|---|---|---|---|---|---|---|',
    );
    for (const s of fast) {
      const c = s.counters!;
      const share = fastShare(c);
      lines.push(
        `| ${s.scenario} | ${s.variant} | ${s.round} | ${c.msg_fast ?? 0} | ${c.msg_slow ?? 0} | ${c.msg_resumed ?? 0} | ${c.msg_backoff ?? 0} | ${c.accel_sockets ?? 0} | ${c.conns ?? 0} | ${share === undefined ? '–' : pct(share)} | ${s.invalid ? 'rejected' : 'yes'} |`,
      );
    }
    lines.push('');
  }
  if (missing.length) {
    lines.push('### missing modes', '', '| scenario | mode | why |', '|---|---|---|');
    for (const m of missing) lines.push(`| ${m.scenario} | ${m.mode} | ${m.reason.replace(/\|/g, '\\|')} |`);
    lines.push('');
  }
  const bad = samples.filter((s) => s.invalid);
  lines.push('### rejected samples', '');
  if (!bad.length) lines.push('None: every sample passed its checks.', '');
  else {
    lines.push('| scenario | variant | mode | round | why |', '|---|---|---|---|---|');
    for (const s of bad)
      lines.push(
        `| ${s.scenario} | ${s.variant} | ${s.mode} | ${s.round} | ${s.invalid!.join('; ').replace(/\|/g, '\\|')} |`,
      );
    lines.push('');
  }
  return lines.join('\n');
}

// ---- docs: the generated parts of docs/benchmarks.md and of the README ----

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
  const out = [
    `Medians of ${String(meta.rounds)} rounds × ${String(meta.duration)} s, modes interleaved; ratios to the first column that has a number (direct; iptables for the exclusions row; eBPF for the hop). Run ${String(meta.date).slice(0, 10)}, Linux ${String(meta.kernel)}, ${String(meta.cpus)} CPUs — method, CPU use, counters and the reading: [docs/benchmarks.md](docs/benchmarks.md).`,
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
