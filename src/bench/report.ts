// report.ts — the benchmark's outputs: medians and min–max per mode, ratios to the baseline, a
// terminal table, the JSON with every raw sample, an SVG chart (vega-lite) and a markdown section.
import * as vega from 'vega';
import { compile } from 'vega-lite';
import type { Sample } from './bench.js';
import { table } from '../cli/output.js';

export interface Row {
  scenario: string;
  variant: string;
  mode: string;
  metric: string;
  median: number;
  min: number;
  max: number;
  n: number;
  /** median / median of the baseline mode of the same scenario, variant and metric. */
  ratio?: number;
}

const BASELINE: Record<string, string> = { crr: 'direct', scale: 'iptables', proxy: 'direct', hop: 'ebpf' };
const SHOWN: Record<string, string[]> = {
  crr: ['rate', 'p50_us', 'p99_us', 'client_cpu'],
  scale: ['rate', 'p99_us'],
  proxy: ['rate', 'p50_us', 'p99_us'],
  hop: ['p50_us', 'p99_us', 'mbytes_s'],
  control: ['ms', 'mib', 'writes'],
};

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export function summarise(samples: Sample[]): Row[] {
  const groups = new Map<string, { s: Sample; values: number[]; metric: string }>();
  for (const s of samples) {
    for (const [metric, v] of Object.entries(s.metrics)) {
      if (!(SHOWN[s.scenario] ?? []).includes(metric)) continue;
      const variant = s.scenario === 'proxy' && metric !== 'rate' ? s.variant : s.variant;
      const k = `${s.scenario}|${variant}|${s.mode}|${metric}`;
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
  }));
  for (const r of rows) {
    const base = rows.find((b) => b.scenario === r.scenario && b.variant === r.variant && b.metric === r.metric && b.mode === BASELINE[r.scenario]);
    if (base && base.median) r.ratio = r.median / base.median;
  }
  return rows;
}

const fmt = (v: number, metric: string) => (metric === 'client_cpu' ? `${(v * 100).toFixed(0)}%` : v >= 100 ? v.toFixed(0) : v.toFixed(1));

export function renderTable(rows: Row[]): string {
  return table(
    ['scenario', 'variant', 'mode', 'metric', 'median', 'min–max', 'n', 'vs baseline'],
    rows.map((r) => [r.scenario, r.variant, r.mode, r.metric, fmt(r.median, r.metric), `${fmt(r.min, r.metric)}–${fmt(r.max, r.metric)}`, r.n, r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`]),
  );
}

/** One bar per mode: the median connection rate relative to the scenario's baseline. */
export async function renderSvg(rows: Row[]): Promise<string> {
  const data = rows
    .filter((r) => r.ratio !== undefined && (r.metric === 'rate' || (r.scenario === 'hop' && r.metric === 'p50_us')) && !(r.scenario === 'proxy' && r.variant === 'rr'))
    .map((r) => ({ panel: `${r.scenario} ${r.variant} ${r.metric === 'rate' ? 'rate' : 'p50 latency'} (vs ${BASELINE[r.scenario]})`, mode: r.mode, ratio: Number(r.ratio!.toFixed(3)) }));
  const spec = compile({
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    data: { values: data },
    facet: { row: { field: 'panel', type: 'nominal', title: null, header: { labelAngle: 0, labelAlign: 'left', labelFontSize: 11 } } },
    spec: {
      width: 420,
      height: { step: 16 },
      layer: [
        { mark: 'bar', encoding: { y: { field: 'mode', type: 'nominal', title: null }, x: { field: 'ratio', type: 'quantitative', title: 'median ÷ baseline median' }, color: { field: 'mode', type: 'nominal', legend: null } } },
        { mark: { type: 'text', align: 'left', dx: 3 }, encoding: { y: { field: 'mode', type: 'nominal' }, x: { field: 'ratio', type: 'quantitative' }, text: { field: 'ratio', type: 'quantitative', format: '.2f' } } },
      ],
    },
    resolve: { scale: { y: 'independent' } },
  } as never, { logger: vega.logger(vega.None) }).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none', logger: vega.logger(vega.None) });
  return view.toSVG();
}

export function renderMarkdown(rows: Row[], meta: Record<string, unknown>): string {
  const lines = [`Run: ${String(meta.date)} · kernel ${String(meta.kernel)} · ${String(meta.cpus)} CPUs · ${String(meta.rounds)} rounds × ${String(meta.duration)} s per measurement, modes interleaved.`, ''];
  for (const scenario of [...new Set(rows.map((r) => r.scenario))]) {
    lines.push(`### ${scenario}`, '', '| variant | mode | metric | median | min–max | vs baseline |', '|---|---|---|---|---|---|');
    for (const r of rows.filter((x) => x.scenario === scenario)) {
      lines.push(`| ${r.variant} | ${r.mode} | ${r.metric} | ${fmt(r.median, r.metric)} | ${fmt(r.min, r.metric)}–${fmt(r.max, r.metric)} | ${r.ratio === undefined ? '' : `${r.ratio.toFixed(2)}×`} |`);
    }
    lines.push('');
  }
  return lines.join('\n');
}
