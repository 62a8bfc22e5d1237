// report.ts — the benchmark's outputs: medians and min–max per mode over the valid samples, ratios to
// the baseline, CPU use, the fast path's counters per sample, missing modes and rejected samples; a
// terminal table, an SVG chart (vega-lite) and a markdown section. The JSON with every raw sample is
// written by the CLI.
import { baseMode, type Sample, type Missing } from './types.js';
import { fastShare } from './checks.js';
import { table } from '../util/table.js';
import { renderHooksMarkdown, renderHooksText } from './hookreport.js';
import { median, paired, type Paired } from './paired.js';
import { runHeader } from './runmeta.js';

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
  /** The ratio to the baseline mode of the same scenario, variant and metric: the median of the
   * per-round ratios (paired.ts) when some round has both, else median ÷ the baseline's median. */
  ratio?: number;
  /** The per-round ratios (median, min–max, rounds); absent when no round has both. */
  paired?: Paired;
  /** median ÷ the baseline's median (the ratio before 2026-12-05, kept for comparison). */
  ofMedians?: number;
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
    if (!base) continue;
    if (base.median) r.ofMedians = r.median / base.median;
    const p = paired(samples, r, base.mode);
    if (p) r.paired = p;
    r.ratio = p ? p.median : r.ofMedians;
  }
  return rows;
}

const pct = (v: number) => `${(v * 100).toFixed(0)}%`;
const fmt = (v: number, metric: string) => (isCpu(metric) ? pct(v) : v >= 100 ? v.toFixed(0) : v.toFixed(1));
/** A ratio, with the min–max of its per-round ratios when there are several and the rounds left out
 * as disturbed. */
function pairedCell(v: number, p: Paired | undefined): string {
  const x = `${v.toFixed(2)}×`;
  if (!p) return x;
  const out = p.disturbed ? `${p.disturbed} busy round${p.disturbed > 1 ? 's' : ''} out` : '';
  if (p.n > 1) return `${x} (${p.min.toFixed(2)}–${p.max.toFixed(2)}${out ? `; ${out}` : ''})`;
  return out ? `${x} (1 round; ${out})` : x;
}

/** The "vs baseline" cell: the baseline's own row reads 1.00× alone. */
const ratio = (r: Row) =>
  r.ratio === undefined ? '' : pairedCell(r.ratio, r.mode === BASELINE[r.scenario] ? undefined : r.paired);

const nCell = (r: Row) => (r.rejected ? `${r.n} (+${r.rejected} rejected)` : String(r.n));

/** A second baseline for a scenario's ratios: through HAProxy, issue 17 judges eBPF against the
 * explicit proxy (the floor any interception can reach), not against direct. */
export const FLOOR: Record<string, string> = { proxy: 'explicit' };

/** The paired ratios of a scenario's intercepting modes to its FLOOR mode, one line each. */
function floorLines(scenario: string, rows: Row[], samples: Sample[]): string[] {
  const floor = FLOOR[scenario];
  if (!floor) return [];
  const out = rows
    .filter(
      (r) => r.scenario === scenario && !isCpu(r.metric) && r.mode !== floor && baseMode(r.mode) !== BASELINE[scenario],
    )
    .flatMap((r) => {
      const p = paired(samples, r, floor);
      return p ? [`| ${r.variant} | ${r.mode} | ${r.metric} | ${pairedCell(p.median, p)} |`] : [];
    });
  if (!out.length) return [];
  return [
    `Paired ratios to ${floor} (the same rounds):`,
    '',
    '| variant | mode | metric | vs ' + floor + ' |',
    '|---|---|---|---|',
    ...out,
    '',
  ];
}

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
    ['scenario', 'variant', 'mode', 'metric', 'median', 'min–max', 'n', 'vs baseline (paired)'],
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
  const lines = [runHeader(meta), ''];
  const cpu = cpuLines(rows);
  for (const scenario of [...new Set(rows.map((r) => r.scenario))]) {
    lines.push(
      `### ${scenario}`,
      '',
      '| variant | mode | metric | median | min–max | n | vs baseline (paired) |',
      '|---|---|---|---|---|---|---|',
    );
    for (const r of rows.filter((x) => x.scenario === scenario && !isCpu(x.metric))) {
      lines.push(
        `| ${r.variant} | ${r.mode} | ${r.metric} | ${fmt(r.median, r.metric)} | ${fmt(r.min, r.metric)}–${fmt(r.max, r.metric)} | ${nCell(r)} | ${ratio(r)} |`,
      );
    }
    lines.push('');
    if (scenario === 'hooks') lines.push(renderHooksMarkdown(samples));
    lines.push(...floorLines(scenario, rows, samples));
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
