// chart.ts — the bench's SVG chart of ratios (vega-lite), loaded only when a chart is drawn.
import * as vega from 'vega';
import { compile } from 'vega-lite';
import { BASELINE, type Row } from './report.js';

function chartRow(r: Row): boolean {
  if (r.ratio === undefined) return false;
  if (r.metric === 'rate') return !(r.scenario === 'hop') && !(r.scenario === 'inbound' && r.variant.startsWith('rr')); // rr: its p50 is shown instead
  if (r.metric === 'mbytes_s') return true;
  return (
    r.metric === 'p50_us' &&
    (r.scenario === 'hop' ||
      (r.scenario === 'proxy' && r.variant === 'rr') ||
      (r.scenario === 'inbound' && r.variant.startsWith('rr')))
  );
}
const METRIC_TITLE: Record<string, string> = {
  rate: 'rate',
  mbytes_s: 'MB/s',
  p50_us: 'p50 latency (lower is better)',
};

/** One bar per mode: its median relative to the scenario's baseline. */
export async function renderSvg(rows: Row[]): Promise<string> {
  const data = rows.filter(chartRow).map((r) => ({
    panel: `${r.scenario} ${r.variant} ${METRIC_TITLE[r.metric] ?? r.metric} (vs ${BASELINE[r.scenario]})`,
    mode: r.mode,
    ratio: Number(r.ratio!.toFixed(3)),
  }));
  const spec = compile(
    {
      $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
      data: { values: data },
      facet: {
        row: {
          field: 'panel',
          type: 'nominal',
          title: null,
          sort: [...new Set(data.map((d) => d.panel))],
          header: { labelAngle: 0, labelAlign: 'left', labelFontSize: 11 },
        },
      },
      spec: {
        width: 420,
        height: { step: 16 },
        layer: [
          {
            mark: 'bar',
            encoding: {
              y: { field: 'mode', type: 'nominal', title: null },
              x: { field: 'ratio', type: 'quantitative', title: 'ratio to the baseline (median of per-round ratios)' },
              color: { field: 'mode', type: 'nominal', legend: null },
            },
          },
          {
            mark: { type: 'text', align: 'left', dx: 3 },
            encoding: {
              y: { field: 'mode', type: 'nominal' },
              x: { field: 'ratio', type: 'quantitative' },
              text: { field: 'ratio', type: 'quantitative', format: '.2f' },
            },
          },
        ],
      },
      resolve: { scale: { y: 'independent' } },
    } as never,
    { logger: vega.logger(vega.None) },
  ).spec;
  const view = new vega.View(vega.parse(spec), { renderer: 'none', logger: vega.logger(vega.None) });
  return view.toSVG();
}
