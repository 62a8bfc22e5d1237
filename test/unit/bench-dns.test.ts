// bench-dns.test.ts — the DNS scenario's verdict on a sample (pure): query errors and empty runs are
// rejected, and so is a capture run whose counters took a different number of queries than were sent.
import { describe, expect, it } from 'vitest';
import { judgeDns } from '../../src/bench/dns.js';
import type { LoadResult } from '../../src/bench/checks.js';
import { loadResult } from './bench-load.js';

/** A DNS client's run: 1,000 queries sent (warm-up included), 900 answered in the measurement. */
const load = (over: Partial<LoadResult> = {}): LoadResult =>
  loadResult({ mode: 'rr', requests: 900, rate: 900, p50_us: 50, p99_us: 90, wall: 1.3, ...over });

describe('DNS bench samples', () => {
  it('accepts a capture run that took every query sent, and a direct run that captured nothing', () => {
    expect(judgeDns('ebpf', load(), { captured: 1000, err_full: 0 })).toEqual([]);
    expect(judgeDns('iptables', load(), { captured: 1000 })).toEqual([]);
    expect(judgeDns('direct', load(), {})).toEqual([]);
  });

  it('rejects fewer or more captured than sent, errors, nothing answered, a full table', () => {
    expect(judgeDns('ebpf', load(), { captured: 999 })).toEqual(['ebpf captured 999 of the 1000 queries sent']);
    expect(judgeDns('iptables', load(), { captured: 1001 })).toEqual([
      'iptables captured 1001 of the 1000 queries sent',
    ]);
    expect(judgeDns('direct', load({ errors: 2, err_reset: 2 }), {})[0]).toMatch(/2 query error\(s\).*2 timed out/);
    expect(judgeDns('direct', load({ requests: 0 }), {})).toEqual(['no query answered']);
    expect(judgeDns('ebpf', load(), { captured: 1000, err_full: 3 })).toEqual(['err_full 3']);
  });
});
