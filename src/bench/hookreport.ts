// hookreport.ts — the `hooks` scenario's tables: per variant, each program's calls and nanoseconds per
// connection (or request), and each callback's calls per side (with its ns per call where the profiling
// build times it: sockops). Medians over the valid rounds.
import type { Sample } from './types.js';

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
};

export interface HookTable {
  mode: string;
  variant: string;
  unit: string;
  rounds: number;
  programs: { link: string; calls: number; nsPerCall: number; nsPerUnit: number }[];
  nsTotal: number;
  ops: (Record<Side, number> & { link: string; op: string; ns: Record<Side, number> })[];
}

type Side = 'client' | 'proxy' | 'server' | 'other';

export function hookTables(samples: Sample[]): HookTable[] {
  const groups = new Map<string, Sample[]>();
  for (const s of samples) {
    if (s.scenario !== 'hooks' || s.invalid) continue;
    const k = `${s.mode}|${s.variant}`;
    groups.set(k, [...(groups.get(k) ?? []), s]);
  }
  return [...groups.values()].map((ss) => {
    const med = (key: string) => median(ss.map((s) => s.metrics[key] ?? 0));
    const keys = new Set(ss.flatMap((s) => Object.keys(s.metrics)));
    const links = [...keys].filter((k) => k.startsWith('calls:')).map((k) => k.slice(6));
    const ops = new Map<string, HookTable['ops'][number]>();
    for (const k of keys) {
      if (!k.startsWith('op:')) continue;
      const [, link, op, side] = k.split(':') as [string, string, string, Side];
      const zero = { client: 0, proxy: 0, server: 0, other: 0 };
      const row = ops.get(`${link}:${op}`) ?? { link, op, ...zero, ns: { ...zero } };
      row[side] = med(k);
      // ns per call (profiling build, sockops): per round, then the median of the rounds that timed it.
      const per = ss.flatMap((s) => {
        const calls = s.metrics[k] ?? 0;
        const ns = s.metrics[`opns:${k.slice(3)}`];
        return ns !== undefined && calls > 0 ? [ns / calls] : [];
      });
      if (per.length) row.ns[side] = median(per);
      ops.set(`${link}:${op}`, row);
    }
    return {
      mode: ss[0]!.mode,
      variant: ss[0]!.variant,
      unit: ss[0]!.variant.includes('rr') ? 'request' : 'connection',
      rounds: ss.length,
      programs: links
        .map((link) => ({
          link,
          calls: med(`calls:${link}`),
          nsPerCall: med(`ns:${link}`),
          nsPerUnit: med(`nsunit:${link}`),
        }))
        .sort((a, b) => b.nsPerUnit - a.nsPerUnit),
      nsTotal: med('ns_total'),
      ops: [...ops.values()].sort((a, b) => a.link.localeCompare(b.link) || a.op.localeCompare(b.op)),
    };
  });
}

const n2 = (v: number) => (v === 0 ? '–' : v >= 10 ? v.toFixed(1) : v.toFixed(2));
const ns = (v: number) => v.toFixed(0);
/** A callback's cell: calls per unit, and its ns per call when timed. */
const cell = (o: HookTable['ops'][number], side: Side) =>
  o.ns[side] && o[side] ? `${n2(o[side])} · ${ns(o.ns[side])} ns` : n2(o[side]);
const SIDES: Side[] = ['client', 'proxy', 'server', 'other'];

/** Markdown: one pair of tables per variant. */
export function renderHooksMarkdown(samples: Sample[]): string {
  const lines: string[] = [];
  for (const t of hookTables(samples)) {
    lines.push(
      `**${t.variant}** (${t.mode}; medians of ${t.rounds} rounds; per ${t.unit}): ${ns(t.nsTotal)} ns of BPF in all`,
      '',
      `| program | calls per ${t.unit} | ns per call | ns per ${t.unit} |`,
      '|---|---|---|---|',
      ...t.programs.map((p) => `| ${p.link} | ${n2(p.calls)} | ${ns(p.nsPerCall)} | ${ns(p.nsPerUnit)} |`),
      '',
      `| program | callback | client | proxy | server | other |`,
      '|---|---|---|---|---|---|',
      ...t.ops.map((o) => `| ${o.link} | ${o.op} | ${SIDES.map((d) => cell(o, d)).join(' | ')} |`),
      '',
    );
  }
  return lines.join('\n');
}

/** Plain text for the terminal. */
export function renderHooksText(samples: Sample[], table: (head: string[], rows: (string | number)[][]) => string) {
  return hookTables(samples)
    .map(
      (t) =>
        `${t.variant} (${t.mode}; per ${t.unit}, medians of ${t.rounds}): ${ns(t.nsTotal)} ns of BPF\n` +
        table(
          ['program', 'calls', 'ns/call', `ns/${t.unit}`],
          t.programs.map((p) => [p.link, n2(p.calls), ns(p.nsPerCall), ns(p.nsPerUnit)]),
        ) +
        '\n' +
        table(
          ['program', 'callback', 'client', 'proxy', 'server', 'other'],
          t.ops.map((o) => [o.link, o.op, ...SIDES.map((d) => cell(o, d))]),
        ),
    )
    .join('\n\n');
}
