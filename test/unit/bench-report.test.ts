// bench-report.test.ts — the benchmark's summary: medians, min–max and ratios to the baseline mode.
import { describe, expect, it } from 'vitest';
import { summarise, renderMarkdown } from '../../src/bench/report.js';
import type { Sample } from '../../src/bench/bench.js';

const s = (mode: string, round: number, rate: number): Sample => ({ scenario: 'crr', mode, variant: '1B', round, metrics: { rate, ignored: 1 } });

describe('bench summary', () => {
  const rows = summarise([s('direct', 1, 100), s('direct', 2, 120), s('direct', 3, 90), s('ebpf', 1, 80), s('ebpf', 2, 95), s('ebpf', 3, 70), s('ebpf', 4, 100)]);

  it('takes medians (odd and even counts), min–max, and only the metrics it shows', () => {
    expect(rows.map((r) => [r.mode, r.metric, r.median, r.min, r.max, r.n])).toEqual([
      ['direct', 'rate', 100, 90, 120, 3],
      ['ebpf', 'rate', 87.5, 70, 100, 4],
    ]);
  });

  it('gives each mode its ratio to the baseline of the same scenario and variant', () => {
    expect(rows.find((r) => r.mode === 'ebpf')!.ratio).toBeCloseTo(0.875);
    expect(rows.find((r) => r.mode === 'direct')!.ratio).toBe(1);
  });

  it('renders a markdown table per scenario', () => {
    const md = renderMarkdown(rows, { date: 'd', kernel: 'k', cpus: 2, rounds: 4, duration: 3 });
    expect(md).toContain('| 1B | ebpf | rate | 87.5 | 70.0–100 | 0.88× |');
  });
});
