// bench-docs.test.ts — the bench's paired ratios (per round, disturbed rounds left out), a run of some
// scenarios merged into the documented run (`--docs --only`), and the A/A and CPU placement options.
import { describe, expect, it } from 'vitest';
import { paired } from '../../src/bench/paired.js';
import { mergeRuns, runHeader, type RunJson } from '../../src/bench/runmeta.js';
import { updateDocs } from '../../src/bench/docs.js';
import { renderMarkdown, summarise } from '../../src/bench/report.js';
import { withAa, type Sample } from '../../src/bench/bench.js';
import { cpuOf } from '../../src/bench/lab.js';
import { Run } from '../../src/bench/run.js';

const ORDER = ['crr', 'scale', 'proxy', 'hop', 'hooks', 'inbound', 'dns', 'control'];
const s = (scenario: string, mode: string, round: number, rate: number, others = 0.05): Sample => ({
  scenario,
  mode,
  variant: scenario === 'scale' ? '0' : scenario === 'proxy' ? 'crr' : '1B',
  round,
  metrics: { rate, others_cpu: others },
});

describe('paired ratios', () => {
  const k = { scenario: 'crr', variant: '1B', mode: 'ebpf', metric: 'rate' };
  it('divides each round by the baseline of the same round, and leaves out rounds another job disturbed', () => {
    const xs = [
      s('crr', 'direct', 1, 100),
      s('crr', 'ebpf', 1, 97),
      s('crr', 'direct', 2, 120),
      s('crr', 'ebpf', 2, 118),
      // round 3: the machine was busy during direct's sample only: its ratio would read 1.9
      s('crr', 'direct', 3, 50, 1.1),
      s('crr', 'ebpf', 3, 95),
    ];
    const p = paired(xs, k, 'direct')!;
    expect(p).toMatchObject({ n: 2, disturbed: 1, min: 0.97 });
    expect(p.median).toBeCloseTo((0.97 + 118 / 120) / 2);
    // The ratio of the medians mixes the rounds: 97 / 100.
    expect(summarise(xs).find((r) => r.mode === 'ebpf')!.ofMedians).toBeCloseTo(0.97);
    expect(renderMarkdown(summarise(xs), {}, xs)).toContain(
      '| 1B | ebpf | rate | 97.0 | 95.0–118 | 3 | 0.98× (0.97–0.98; 1 busy round out) |',
    );
    const one = xs.filter((x) => x.round !== 2);
    expect(renderMarkdown(summarise(one), {}, one)).toContain('| 0.97× (1 round; 1 busy round out) |');
  });
  it('keeps every round when every one was disturbed, and has nothing without a common round', () => {
    const busy = [s('crr', 'direct', 1, 100, 1), s('crr', 'ebpf', 1, 90, 1)];
    expect(paired(busy, k, 'direct')).toMatchObject({ median: 0.9, n: 1, disturbed: 0 });
    expect(paired([s('crr', 'direct', 1, 100), s('crr', 'ebpf', 2, 90)], k, 'direct')).toBeUndefined();
  });
});

const meta = (date: string, only: string[], rounds = 5, duration = 3) => ({
  date,
  kernel: 'k',
  cpus: 2,
  rounds,
  duration,
  warmup: 0.3,
  only,
});
const full: RunJson = {
  meta: meta('2026-12-05T03:29:16.088Z', ORDER),
  missing: [
    { scenario: 'proxy', mode: 'ebpf+sk_msg', reason: 'old reason' },
    { scenario: 'dns', mode: 'x', reason: 'kept' },
  ],
  samples: [
    s('crr', 'direct', 1, 21000),
    s('crr', 'ebpf', 1, 19000),
    s('scale', 'iptables', 1, 4000),
    s('scale', 'ebpf', 1, 9000),
    s('proxy', 'direct', 1, 8000),
    s('proxy', 'explicit', 1, 6000),
  ],
};
const some: RunJson = {
  meta: { ...meta('2026-12-05T05:10:00.000Z', ['proxy', 'crr'], 3, 1), placement: 'split' },
  missing: [],
  samples: [
    s('proxy', 'direct', 1, 8100),
    s('proxy', 'explicit', 1, 6200),
    s('crr', 'direct', 1, 24000),
    s('crr', 'ebpf', 1, 23500),
  ],
};

describe('--docs with --only: a run of some scenarios replaces only theirs', () => {
  it('merges samples and missing modes by scenario, in the registry order, and records which run measured what', () => {
    const m = mergeRuns(full, some, ORDER);
    expect(m.samples.map((x) => `${x.scenario}:${x.mode}:${x.metrics.rate}`)).toEqual([
      'crr:direct:24000',
      'crr:ebpf:23500',
      'scale:iptables:4000',
      'scale:ebpf:9000',
      'proxy:direct:8100',
      'proxy:explicit:6200',
    ]);
    expect(m.missing).toEqual([{ scenario: 'dns', mode: 'x', reason: 'kept' }]);
    expect(m.meta.only).toEqual(ORDER);
    expect(m.meta.measured).toMatchObject([
      { scenarios: ['proxy', 'crr'], date: '2026-12-05T05:10:00.000Z', rounds: 3, duration: 1, placement: 'split' },
      {
        scenarios: ['scale', 'hop', 'hooks', 'inbound', 'dns', 'control'],
        date: '2026-12-05T03:29:16.088Z',
        rounds: 5,
      },
    ]);
    // Merged again: the parts carry over, a scenario measured a third time leaves its old part.
    const again = mergeRuns(
      m,
      { meta: meta('2026-12-05T06:00:00.000Z', ['scale']), samples: [s('scale', 'ebpf', 1, 1)] },
      ORDER,
    );
    expect((again.meta.measured as { scenarios: string[] }[]).map((p) => p.scenarios)).toEqual([
      ['scale'],
      ['proxy', 'crr'],
      ['hop', 'hooks', 'inbound', 'dns', 'control'],
    ]);
  });

  it('rewrites the generated sections with every scenario, the header saying which were measured when', () => {
    const files = {
      benchmarksMd: 'method\n<!-- bench:results:begin -->\nold\n<!-- bench:results:end -->\nreading\n',
      readme: 'intro\n<!-- bench:summary:begin -->\nold\n<!-- bench:summary:end -->\n',
    };
    const u = updateDocs(full, some, ORDER, files);
    const md = u.benchmarksMd;
    expect(md).toMatch(/^method\n<!-- bench:results:begin -->\nRun: kernel k · 2 CPUs · measured in 2 runs/);
    expect(md).toContain(
      'proxy, crr on 2026-12-05 05:10 UTC, 3 rounds × 1 s per measurement (after 0.3 s of warm-up), placement split; scale, hop, hooks, inbound, dns, control on 2026-12-05 03:29 UTC, 5 rounds × 3 s',
    );
    expect(md.indexOf('### crr')).toBeLessThan(md.indexOf('### scale'));
    expect(md).toContain('| 0 | ebpf | rate | 9000 | 9000–9000 | 1 | 2.25× |'); // scale, kept
    expect(md).toContain('| 1B | ebpf | rate | 23500 | 23500–23500 | 1 | 0.98× |'); // crr, new
    expect(md).toContain('| dns | x | kept |');
    expect(md).not.toContain('old reason');
    expect(md).toMatch(/<!-- bench:results:end -->\nreading\n$/);
    expect(u.readme).toContain(
      'Medians of proxy, crr: 3 rounds × 1 s; scale, hop, hooks, inbound, dns, control: 5 rounds × 3 s',
    );
    expect(u.readme).toContain('| new connections/s, redirect only (TCP_CRR, 1 B) | 24.0k | — | 23.5k (0.98×) | — |');
  });

  it('a full run, or no documented run, replaces everything and keeps the one-run header', () => {
    const fresh = { ...full, meta: meta('2026-12-06T01:00:00.000Z', ORDER) };
    const m = mergeRuns(some, fresh, ORDER);
    expect(m.samples).toEqual(full.samples);
    expect((m.meta.measured as unknown[]).length).toBe(1);
    expect(runHeader(m.meta)).toMatch(
      /^Run: 2026-12-06T01:00:00.000Z · kernel k · 2 CPUs · 5 rounds × 3 s per measurement/,
    );
    expect(mergeRuns(undefined, some, ORDER).samples.map((x) => x.scenario)).toEqual(['crr', 'crr', 'proxy', 'proxy']);
  });
});

describe('bench options', () => {
  it('--aa adds the copy of a mode right after it, only in scenarios that allow it', () => {
    expect(withAa({ aa: 'direct' }, 'crr').slice(0, 3)).toEqual(['direct', 'direct (A/A)', 'iptables']);
    expect(withAa({ aa: 'explicit' }, 'proxy')).toContain('explicit (A/A)');
    expect(withAa({ aa: 'ebpf' }, 'hop')).toEqual(['ebpf', 'ebpf+sk_msg']);
    expect(withAa({}, 'crr')).not.toContain('direct (A/A)');
  });
  it('places the client on CPU 0 and the server and a second client on the last CPU (split), or all on CPU 0 (same)', () => {
    expect([cpuOf('split', 'client', 2), cpuOf('split', 'server', 2), cpuOf('split', 'server', 4)]).toEqual([
      '0',
      '1',
      '3',
    ]);
    expect(cpuOf('split', 'client2', 2)).toBe('1'); // a second client beside the first: on the other CPU
    expect(cpuOf('same', 'server', 2)).toBe('0');
    expect(cpuOf('none', 'client', 2)).toBeUndefined();
    expect(cpuOf('split', 'client', 1)).toBeUndefined();
  });
});

describe('disturbed samples', () => {
  // Run.measure() without a kernel: its one-measurement step replaced by a list of samples.
  // Each entry: the sample's others_cpu, or 'fail' for a measurement that failed (a rejected sample).
  const measureWith = async (others: (number | 'fail')[], retries?: number) => {
    const r = Object.create(Run.prototype) as Run;
    const queue = others.map((o, i) => ({
      ...s('crr', 'direct', 1, 1000 + i),
      ...(o === 'fail' ? { invalid: 'client failed' } : {}),
      metrics: { rate: 1000 + i, others_cpu: o === 'fail' ? 0 : o },
    }));
    Object.assign(r, { o: { retries }, samples: [], once: () => Promise.resolve(queue.shift()!) });
    const x = await r.measure(
      { scenario: 'crr', mode: 'direct', variant: '1B', round: 1 },
      {},
      { target: '', kind: 'crr', conc: 1 },
      {},
      () => ({}),
    );
    return { x, left: queue.length, pushed: r.samples.length };
  };
  it('measures a sample again while something else took CPU, and keeps the least disturbed', async () => {
    expect(await measureWith([0.05, 0.9])).toMatchObject({ x: { metrics: { rate: 1000 } }, left: 1, pushed: 1 });
    const r = await measureWith([0.9, 0.6, 0.8]);
    expect(r.x.metrics).toEqual({ rate: 1001, others_cpu: 0.6, retries: 2 });
    expect(r).toMatchObject({ left: 0, pushed: 1 });
    expect((await measureWith([0.9, 0.1, 0.8])).x.metrics).toEqual({ rate: 1001, others_cpu: 0.1, retries: 1 });
    expect((await measureWith([0.9, 0.1], 0)).x.metrics.rate).toBe(1000);
  });
  it('a retry that fails never replaces the disturbed but valid sample', async () => {
    const r = await measureWith([0.9, 'fail', 'fail']);
    expect(r.x).toMatchObject({ metrics: { rate: 1000, others_cpu: 0.9, retries: 2 } });
    expect(r.x.invalid).toBeUndefined();
    expect(r).toMatchObject({ left: 0, pushed: 1 });
  });
  it('a run JSON without `only` (older runs, --from) replaces the scenarios it has samples of', () => {
    const { only: _, ...noOnly } = some.meta;
    const m = mergeRuns(full, { ...some, meta: noOnly }, ORDER);
    expect(m.samples.filter((x) => x.scenario === 'crr').map((x) => x.metrics.rate)).toEqual([24000, 23500]);
  });
});

describe('proxy: paired ratios to the explicit proxy too', () => {
  it('lists each intercepting mode (and the A/A copy of explicit) against explicit in the same rounds', () => {
    const xs = [1, 2, 3].flatMap((round) => [
      s('proxy', 'direct', round, 20000),
      s('proxy', 'explicit', round, 10000 + round * 1000),
      s('proxy', 'explicit (A/A)', round, 10000 + round * 1000 + 100),
      s('proxy', 'ebpf', round, (10000 + round * 1000) * 0.95),
    ]);
    const md = renderMarkdown(summarise(xs), {}, xs);
    expect(md).toContain('Paired ratios to explicit (the same rounds):');
    expect(md).toContain('| crr | ebpf | rate | 0.95× (0.95–0.95) |');
    expect(md).toContain('| crr | explicit (A/A) | rate | 1.01× (1.01–1.01) |');
    expect(md).not.toMatch(/\| crr \| (direct|explicit) \| rate \| [0-9.]+× \(/);
    // crr has no such second baseline
    expect(renderMarkdown(summarise([s('crr', 'direct', 1, 1), s('crr', 'ebpf', 1, 1)]), {}, [])).not.toContain(
      'Paired ratios to',
    );
  });
});
