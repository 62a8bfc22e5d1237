// checks.ts — whether a benchmark sample measured what it claims: the load generator had no errors,
// and the mode's own counters show that it acted on every connection that reached a server (a
// connection that was not redirected may still reach a server and would read as a good sample).
// Pure, so it is unit-tested without root.
import { BYPASSED } from './types.js';

/** One JSON line of bench/mrload (client). Rates and CPU fractions are per client process. */
export interface LoadResult {
  mode: 'crr' | 'rr' | 'stream';
  requests: number;
  rate: number;
  p50_us: number;
  p99_us: number;
  errors: number;
  err_connect: number;
  err_reset: number;
  err_other: number;
  /** Connections that reached a server: a response arrived (crr, rr) or bytes were taken (stream). */
  conns: number;
  /** Fractions of one core over the client's life (warm-up included). */
  client_user: number;
  client_sys: number;
  wall: number;
  /** stream: bytes the kernel took, bytes the sink said it read, and the rates. */
  bytes: number;
  confirmed: number;
  mbytes_s: number;
  e2e_mbytes_s: number;
  drain_ms: number;
  /** Times the scheduler moved the client to another CPU, and its involuntary context switches
   * (where the bench's noise comes from; absent from an older mrload). */
  migrations?: number;
  nivcsw?: number;
}

/** Counter deltas over one measurement: eBPF's per-policy counters (summed over policies), or
 * `ipt_redirected` (packets of the nat REDIRECT rules: the first packet of each connection). */
export type Counters = Record<string, number>;

export const EBPF_COUNTERS = [
  'redirected',
  'established',
  'origdst_served',
  'accel_sockets',
  'accel_blocking',
  'msg_fast',
  'msg_slow',
  'msg_resumed',
  'msg_backoff',
  'accel_left',
  'err_full',
  'err_storage',
  'err_orig',
  'bypass_loopback',
] as const;

/** Adds up the results of clients that ran side by side. */
export function combine(rs: LoadResult[]): LoadResult {
  if (rs.length === 1) return rs[0]!;
  const sum = (k: keyof LoadResult) => rs.reduce((a, r) => a + (r[k] as number), 0);
  const max = (k: keyof LoadResult) => Math.max(...rs.map((r) => r[k] as number));
  const w = sum('requests') || 1;
  return {
    mode: rs[0]!.mode,
    requests: sum('requests'),
    rate: sum('rate'),
    // Percentiles of two clients cannot be merged exactly: the request-weighted mean of each.
    p50_us: rs.reduce((a, r) => a + r.p50_us * r.requests, 0) / w,
    p99_us: rs.reduce((a, r) => a + r.p99_us * r.requests, 0) / w,
    errors: sum('errors'),
    err_connect: sum('err_connect'),
    err_reset: sum('err_reset'),
    err_other: sum('err_other'),
    conns: sum('conns'),
    client_user: sum('client_user'),
    client_sys: sum('client_sys'),
    wall: max('wall'),
    bytes: sum('bytes'),
    confirmed: sum('confirmed'),
    mbytes_s: sum('mbytes_s'),
    e2e_mbytes_s: sum('e2e_mbytes_s'),
    drain_ms: max('drain_ms'),
    migrations: rs.reduce((a, r) => a + (r.migrations ?? 0), 0),
    nivcsw: rs.reduce((a, r) => a + (r.nivcsw ?? 0), 0),
  };
}

/**
 * Why a sample must not count (empty: it is valid). `mode` is the bench's mode name: direct,
 * explicit, iptables, ebpf, ebpf+sk_msg, and crr's eBPF variants (traced, client uncovered, client
 * bypassed). `viaProxy`: a proxy that asks SO_ORIGINAL_DST sits behind
 * the redirect (HAProxy), so eBPF must have answered it for every connection.
 */
export function judge(mode: string, l: LoadResult, c: Counters, o: { viaProxy?: boolean } = {}): string[] {
  const why: string[] = [];
  if (l.errors > 0)
    why.push(`${l.errors} client error(s): ${l.err_connect} connect, ${l.err_reset} reset/EOF, ${l.err_other} other`);
  if (l.mode === 'stream') {
    if (l.bytes === 0) why.push('no byte was sent');
    else if (l.confirmed !== l.bytes) why.push(`the sink confirmed ${l.confirmed} of ${l.bytes} bytes`);
  } else if (l.requests === 0) why.push('no request completed');
  const n = l.conns;
  const get = (k: string) => c[k] ?? 0;
  if (mode === 'iptables') {
    if (get('ipt_redirected') < n)
      why.push(`iptables REDIRECT took ${get('ipt_redirected')} of the ${n} connections that reached a server`);
  }
  if (mode === 'ebpf' || mode === 'ebpf+sk_msg' || mode === 'ebpf (traced)') {
    if (get('redirected') < n)
      why.push(`eBPF redirected ${get('redirected')} of the ${n} connections that reached a server`);
    if (o.viaProxy && get('origdst_served') < n)
      why.push(`the proxy got SO_ORIGINAL_DST from eBPF for ${get('origdst_served')} of ${n} connections`);
    for (const e of ['err_full', 'err_storage', 'err_orig']) if (get(e) > 0) why.push(`${e} ${get(e)}`);
  }
  if (mode === 'ebpf (client uncovered)' && get('redirected') > 0)
    why.push(`eBPF redirected ${get('redirected')} connections of a client it should not cover`);
  if (mode === BYPASSED) {
    if (get('redirected') > 0) why.push(`eBPF redirected ${get('redirected')} connections it should let pass`);
    if (get('bypass_loopback') < n)
      why.push(`eBPF let ${get('bypass_loopback')} of ${n} connections pass as loopback: the client was not covered`);
  }
  if ((mode === 'ebpf' || mode === 'ebpf (traced)') && get('accel_sockets') > 0)
    why.push(`${get('accel_sockets')} socket(s) joined the fast path in a run without accelerate`);
  if (mode === 'ebpf+sk_msg') {
    if (get('accel_blocking') > 0)
      why.push(
        `${get('accel_blocking')} blocking application socket(s), never accelerated: the load must use non-blocking sockets`,
      );
    if (get('accel_sockets') < 2 * n)
      why.push(
        `${get('accel_sockets')} socket(s) joined the fast path for ${n} connections (both ends of each expected)`,
      );
    if (get('msg_fast') === 0) why.push(`no message took the fast path (msg_fast 0, msg_slow ${get('msg_slow')})`);
  }
  return why;
}

/** Share of messages that took the fast path, for sk_msg runs. */
export function fastShare(c: Counters): number | undefined {
  const f = c.msg_fast ?? 0;
  const s = c.msg_slow ?? 0;
  return f + s > 0 ? f / (f + s) : undefined;
}

/** A sample's counters (what moved between two reads, and the client's connections) and metrics (the
 * load's figures, the server's share of one core and the machine's idle share over `wall` seconds). */
export function sampleOf(
  l: LoadResult,
  c: { before: Counters; after: Counters },
  cpu: {
    wall: number;
    server: [{ user: number; sys: number }, { user: number; sys: number }];
    machine: [{ total: number; idle: number }, { total: number; idle: number }];
  },
): { counters: Counters; metrics: Record<string, number> } {
  const [p0, p1] = cpu.server;
  const [m0, m1] = cpu.machine;
  return {
    counters: {
      ...Object.fromEntries(Object.keys(c.after).map((k) => [k, c.after[k]! - (c.before[k] ?? 0)])),
      conns: l.conns,
    },
    metrics: {
      rate: l.rate,
      p50_us: l.p50_us,
      p99_us: l.p99_us,
      errors: l.errors,
      client_user: l.client_user,
      client_sys: l.client_sys,
      server_cpu: (p1.user + p1.sys - p0.user - p0.sys) / cpu.wall,
      idle: (m1.idle - m0.idle) / Math.max(1e-9, m1.total - m0.total),
    },
  };
}
