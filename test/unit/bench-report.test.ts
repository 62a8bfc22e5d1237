// bench-report.test.ts — the benchmark's summary (medians, min–max, ratios, rejected samples left out),
// the checks that reject a sample whose counters show the mode did not act, and the run's plan.
import { describe, expect, it } from 'vitest';
import { summarise, renderMarkdown, renderTable } from '../../src/bench/report.js';
import { renderReadmeSummary, splice } from '../../src/bench/docs.js';
import { judge, combine, fastShare } from '../../src/bench/checks.js';
import { rotate, plannedSteps, type Sample } from '../../src/bench/bench.js';
import { hookTables, renderHooksMarkdown } from '../../src/bench/hookreport.js';
import { loadResult } from './bench-load.js';

const s = (mode: string, round: number, rate: number, extra: Partial<Sample> = {}): Sample => ({
  scenario: 'crr',
  mode,
  variant: '1B',
  round,
  metrics: { rate, ignored: 1, client_sys: 0.9 },
  ...extra,
});

describe('bench summary', () => {
  const samples = [
    s('direct', 1, 100),
    s('direct', 2, 120),
    s('direct', 3, 90),
    s('ebpf', 1, 80),
    s('ebpf', 2, 95),
    s('ebpf', 3, 70),
    s('ebpf', 4, 100),
    s('ebpf', 5, 1_000_000, { invalid: ['eBPF redirected 0 of the 5 connections that reached a server'] }),
  ];
  const rows = summarise(samples);
  const main = rows.filter((r) => r.metric === 'rate');

  it('takes medians (odd and even counts) and min–max over valid samples only, and counts the rejected', () => {
    expect(main.map((r) => [r.mode, r.metric, r.median, r.min, r.max, r.n, r.rejected])).toEqual([
      ['direct', 'rate', 100, 90, 120, 3, 0],
      ['ebpf', 'rate', 87.5, 70, 100, 4, 1],
    ]);
    expect(rows.some((r) => r.metric === 'ignored')).toBe(false);
  });

  it('gives each mode its ratio to the baseline of the same scenario and variant, paired by round; CPU gets none', () => {
    // Rounds 1–3 have both (80/100, 95/120, 70/90): the median of those; round 4 has no direct
    // sample, round 5's eBPF sample is rejected. The ratio of the medians (87.5/100) is kept beside.
    const ebpf = main.find((r) => r.mode === 'ebpf')!;
    expect(ebpf.ratio).toBeCloseTo(95 / 120);
    expect(ebpf.paired).toMatchObject({ n: 3, disturbed: 0 });
    expect([ebpf.paired!.min, ebpf.paired!.max]).toEqual([70 / 90, 0.8]);
    expect(ebpf.ofMedians).toBeCloseTo(0.875);
    expect(main.find((r) => r.mode === 'direct')!.ratio).toBe(1);
    expect(rows.find((r) => r.metric === 'client_sys')!.ratio).toBeUndefined();
  });

  it('renders per scenario a table, its CPU, the missing modes and every rejected sample with why', () => {
    const md = renderMarkdown(rows, { date: 'd', kernel: 'k', cpus: 2, rounds: 5, duration: 3, warmup: 0.3 }, samples, [
      { scenario: 'proxy', mode: 'ebpf+sk_msg', reason: 'no sk_msg link' },
    ]);
    expect(md).toContain('| 1B | ebpf | rate | 87.5 | 70.0–100 | 4 (+1 rejected) | 0.79× (0.78–0.80) |');
    expect(md).toContain('| 1B | direct | rate | 100 | 90.0–120 | 3 | 1.00× |');
    expect(md).toContain('| 1B | ebpf | – | 90% (90%–90%) | – | – | – |');
    expect(md).toContain('| proxy | ebpf+sk_msg | no sk_msg link |');
    expect(md).toContain('| crr | 1B | ebpf | 5 | eBPF redirected 0 of the 5 connections that reached a server |');
    expect(renderTable(rows, [], samples)).toContain('rejected: crr 1B ebpf round 5: eBPF redirected 0');
  });

  it('lists the fast path counters of every sk_msg sample', () => {
    const fast: Sample = {
      scenario: 'hop',
      mode: 'ebpf+sk_msg',
      variant: 'stream 64B',
      round: 2,
      metrics: { mbytes_s: 10 },
      counters: { msg_fast: 90, msg_slow: 10, msg_resumed: 1, msg_backoff: 3, accel_sockets: 2, conns: 1 },
    };
    const md = renderMarkdown(summarise([fast]), {}, [fast]);
    expect(md).toContain('| hop | stream 64B | 2 | 90 | 10 | 1 | 3 | 2 | 1 | 90% | yes |');
    expect(md).toContain('None: every sample passed its checks.');
    expect(fastShare({ msg_fast: 0, msg_slow: 0 })).toBeUndefined();
  });
});

const load = loadResult;

describe('bench docs', () => {
  it('fills the generated section between its markers and nothing else', () => {
    const text = 'method\n<!-- x:begin -->\nold\n<!-- x:end -->\nreading\n';
    expect(splice(text, 'x', 'new')).toBe('method\n<!-- x:begin -->\nnew\n<!-- x:end -->\nreading\n');
    expect(() => splice('no markers', 'x', 'new')).toThrow(/no <!-- x:begin -->/);
  });
  it('shows the two-client check and the README summary from the same rows', () => {
    const rows = summarise([
      s('direct', 1, 100),
      { ...s('direct', 1, 150), variant: '1B, 2 clients' },
      s('ebpf', 1, 90),
    ]);
    expect(renderMarkdown(rows, {}, [])).toContain('÷ with one (16 in flight): direct 1.50×');
    const md = renderReadmeSummary(rows, { rounds: 5, duration: 3, date: '2026-01-01T00', kernel: 'k', cpus: 2 }, [
      { scenario: 'proxy', mode: 'ebpf+sk_msg', reason: 'r' },
    ]);
    expect(md).toContain('| new connections/s, redirect only (TCP_CRR, 1 B) | 100 | — | 90 (0.90×) | — |');
    expect(md).toMatch(/through HAProxy, new connections\/s .*\| missing \|$/m);
  });
});

describe('bench checks: a sample counts only when the mode acted on every connection', () => {
  const ebpfOk = { redirected: 1016, established: 1016, origdst_served: 1016, accel_sockets: 0 };
  it('accepts a clean sample of each mode', () => {
    expect(judge('direct', load(), {})).toEqual([]);
    expect(judge('iptables', load(), { ipt_redirected: 1016 })).toEqual([]);
    expect(judge('ebpf', load(), ebpfOk, { viaProxy: true })).toEqual([]);
    expect(
      judge('ebpf+sk_msg', load(), { ...ebpfOk, accel_sockets: 2032, msg_fast: 2000, msg_slow: 5 }, { viaProxy: true }),
    ).toEqual([]);
  });

  it('rejects connections that were not redirected (they still reach a server)', () => {
    expect(judge('iptables', load(), { ipt_redirected: 0 })).toEqual([
      'iptables REDIRECT took 0 of the 1000 connections that reached a server',
    ]);
    expect(judge('ebpf', load(), { ...ebpfOk, redirected: 10 }).join()).toMatch(/eBPF redirected 10 of the 1000/);
    expect(judge('ebpf', load(), { ...ebpfOk, origdst_served: 0 }, { viaProxy: true }).join()).toMatch(
      /SO_ORIGINAL_DST from eBPF for 0 of 1000/,
    );
  });

  it('the traced eBPF mode is judged as eBPF: every connection redirected', () => {
    expect(judge('ebpf (traced)', load(), ebpfOk)).toEqual([]);
    expect(judge('ebpf (traced)', load(), { ...ebpfOk, redirected: 10 }).join()).toMatch(/eBPF redirected 10 of/);
  });

  it('the client-uncovered eBPF mode is valid only if nothing of its client was redirected', () => {
    expect(judge('ebpf (client uncovered)', load(), { redirected: 0 })).toEqual([]);
    expect(judge('ebpf (client uncovered)', load(), { redirected: 3 }).join()).toMatch(/should not cover/);
  });

  it('the client-bypassed eBPF mode is valid only if every connection was let pass as loopback', () => {
    expect(judge('ebpf (client bypassed)', load(), { redirected: 0, bypass_loopback: 1000 })).toEqual([]);
    expect(judge('ebpf (client bypassed)', load(), { redirected: 2, bypass_loopback: 1000 }).join()).toMatch(
      /redirected 2 connections it should let pass/,
    );
    expect(judge('ebpf (client bypassed)', load(), { redirected: 0, bypass_loopback: 0 }).join()).toMatch(
      /let 0 of 1000 connections pass as loopback: the client was not covered/,
    );
  });

  it('rejects sk_msg runs that did not take the fast path, and says why', () => {
    expect(
      judge('ebpf+sk_msg', load(), { ...ebpfOk, accel_sockets: 1000, msg_fast: 0, msg_slow: 3000 }).join('\n'),
    ).toMatch(
      /1000 socket\(s\) joined the fast path for 1000 connections[^]*no message took the fast path \(msg_fast 0, msg_slow 3000\)/,
    );
    expect(judge('ebpf+sk_msg', load(), { ...ebpfOk, accel_blocking: 1000, msg_fast: 0 }).join()).toMatch(
      /blocking application socket/,
    );
    expect(judge('ebpf', load(), { ...ebpfOk, accel_sockets: 2 }).join()).toMatch(/without accelerate/);
  });

  it('rejects client errors, empty runs and a stream the sink did not fully confirm', () => {
    expect(judge('direct', load({ errors: 3, err_connect: 2, err_reset: 1 }), {})).toEqual([
      '3 client error(s): 2 connect, 1 reset/EOF, 0 other',
    ]);
    expect(judge('direct', load({ requests: 0 }), {})).toEqual(['no request completed']);
    expect(judge('direct', load({ mode: 'stream', requests: 0, bytes: 10, confirmed: 9 }), {})).toEqual([
      'the sink confirmed 9 of 10 bytes',
    ]);
    expect(judge('direct', load({ mode: 'stream', requests: 0, bytes: 10, confirmed: 10 }), {})).toEqual([]);
  });

  it('adds up clients that ran side by side', () => {
    const c = combine([
      load({ rate: 100, conns: 10, requests: 100, p50_us: 10, client_sys: 0.5 }),
      load({ rate: 300, conns: 30, requests: 300, p50_us: 20, client_sys: 0.7 }),
    ]);
    expect([c.rate, c.conns, c.client_sys, c.p50_us]).toEqual([400, 40, 1.2, 17.5]);
  });
});

describe('bench plan', () => {
  it('rotates the mode order each round', () => {
    expect([1, 2, 3, 4].map((r) => rotate(['a', 'b', 'c'], r).join(''))).toEqual(['abc', 'bca', 'cab', 'abc']);
  });
  it('counts the measurements of the modes that can run', () => {
    // crr: 6 modes × 2 client counts (the traced, client-uncovered and client-bypassed eBPF modes included)
    expect(plannedSteps(['crr', 'scale', 'proxy', 'hop', 'control'], 5)).toBe(5 * (12 + 6 + 10 + 16 + 1));
    // hooks: 4 variants × (a timing pass + a counting pass)
    expect(plannedSteps(['hooks'], 3)).toBe(3 * 8);
    expect(plannedSteps(['proxy'], 2, undefined, () => 1)).toBe(4);
    // dns: 3 modes × (1 and 8 queries in flight)
    expect(plannedSteps(['dns'], 2)).toBe(2 * 6);
    expect(plannedSteps(['dns'], 1, undefined, () => 2)).toBe(4);
  });
});

describe('per-hook tables', () => {
  it('medians per program and per callback and side, over the valid rounds only', () => {
    const s = (round: number, ns: number, invalid?: string[]): Sample => ({
      scenario: 'hooks',
      mode: 'ebpf',
      variant: 'redirect-only',
      round,
      metrics: {
        'calls:mr_sockops': 11,
        'ns:mr_sockops': ns,
        'nsunit:mr_sockops': 11 * ns,
        'calls:mr_connect4': 1,
        'ns:mr_connect4': 1000,
        'nsunit:mr_connect4': 1000,
        ns_total: 11 * ns + 1000,
        'op:mr_sockops:TCP_CONNECT_CB:client': 1,
        'op:mr_sockops:PASSIVE_ESTABLISHED_CB:server': 1,
      },
      ...(invalid ? { invalid } : {}),
    });
    const [t] = hookTables([s(1, 100), s(2, 200), s(3, 150), s(4, 9999, ['failed'])]);
    expect(t).toMatchObject({ variant: 'redirect-only', unit: 'connection', rounds: 3, nsTotal: 11 * 150 + 1000 });
    expect(t!.programs.map((p) => [p.link, p.calls, p.nsPerCall])).toEqual([
      ['mr_sockops', 11, 150],
      ['mr_connect4', 1, 1000],
    ]);
    expect(t!.ops).toContainEqual({
      link: 'mr_sockops',
      op: 'TCP_CONNECT_CB',
      client: 1,
      proxy: 0,
      server: 0,
      other: 0,
      ns: { client: 0, proxy: 0, server: 0, other: 0 },
    });
    expect(renderHooksMarkdown([s(1, 100)])).toContain('| mr_sockops | PASSIVE_ESTABLISHED_CB | – | – | 1.00 | – |');
  });

  it('ns per call of a timed callback (sockops in the profiling build): per round, then the median', () => {
    const s = (round: number, passiveNs: number): Sample => ({
      scenario: 'hooks',
      mode: 'ebpf',
      variant: 'through HAProxy',
      round,
      metrics: {
        'calls:mr_sockops': 20,
        'ns:mr_sockops': 146,
        'nsunit:mr_sockops': 2920,
        ns_total: 2920,
        // 2 NEEDS_ECN calls on the proxy side per connection, 80 ns in all: 40 ns a call
        'op:mr_sockops:NEEDS_ECN:proxy': 2,
        'opns:mr_sockops:NEEDS_ECN:proxy': 80,
        'op:mr_sockops:PASSIVE_ESTABLISHED_CB:proxy': 1,
        'opns:mr_sockops:PASSIVE_ESTABLISHED_CB:proxy': passiveNs,
        'op:mr_sockops:PASSIVE_ESTABLISHED_CB:server': 1,
      },
    });
    const [t] = hookTables([s(1, 1000), s(2, 1100), s(3, 5000)]);
    const row = (op: string) => t!.ops.find((o) => o.op === op)!;
    expect(row('PASSIVE_ESTABLISHED_CB')).toMatchObject({ proxy: 1, server: 1, ns: { proxy: 1100, server: 0 } });
    expect(row('NEEDS_ECN').ns.proxy).toBe(40);
    const md = renderHooksMarkdown([s(1, 1065)]);
    expect(md).toContain('| mr_sockops | PASSIVE_ESTABLISHED_CB | – | 1.00 · 1065 ns | 1.00 | – |');
    expect(md).toContain('| mr_sockops | NEEDS_ECN | – | 2.00 · 40 ns | – | – |');
  });
});
