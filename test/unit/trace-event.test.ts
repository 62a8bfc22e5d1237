// trace-event.test.ts — trace records decoded and described without a kernel: the event codec against the
// object's BTF, every decision counter named as its metric names it (the same reasons as /metrics), the
// addresses (IPv4, IPv6, v4-mapped), a lost note, the line for people; `trace` option bounds.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import {
  AF_INET,
  AF_INET6,
  DNS_STAT_FIELDS,
  IN_STAT_FIELDS,
  STAT_FIELDS,
  TraceHook,
  TraceTable,
  TraceVerdict,
  traceEvent,
  type TraceEvent,
} from '../../src/bpf/abi.js';
import {
  counterOf,
  decodeEvent,
  describe as describeEvent,
  endpoint,
  formatLine,
  type Naming,
} from '../../src/modes/ebpf/trace-event.js';

const v4 = (s: string) => Buffer.concat([Buffer.from(s.split('.').map(Number)), Buffer.alloc(12)]);
const names: Naming = {
  policy: (slot) => (slot === 3 ? 'reviews' : null),
  cgroup: (id) => (id === 77n ? '/kubepods/pod-a' : null),
  wallMs: (ns) => Date.UTC(2026, 11, 4, 20, 0, 0) + Number(ns) / 1e6,
};
const event = (over: Partial<TraceEvent> = {}): TraceEvent => ({
  ts_ns: 1_500_000n,
  cgroup_id: 77n,
  cookie: 4242n,
  pid: 1234,
  slot: 3,
  hook: TraceHook.CONNECT4,
  verdict: TraceVerdict.REDIRECT,
  table: TraceTable.STATS,
  field: STAT_FIELDS.indexOf('redirected'),
  family: AF_INET,
  to_family: AF_INET,
  port: 8080,
  to_port: 15001,
  from_port: 0,
  addr: v4('10.0.0.7'),
  to_addr: v4('10.200.0.1'),
  from_addr: Buffer.alloc(16),
  comm: Buffer.concat([Buffer.from('curl'), Buffer.alloc(12)]),
  pad2: 0,
  ...over,
});

describe('trace events', () => {
  it('round-trips through the codec of struct mr_trace_event (112 bytes, checked against BTF by abi-mirror)', () => {
    expect(traceEvent.size).toBe(112);
    const ev = event();
    const buf = traceEvent.encode(ev);
    expect(decodeEvent(buf)).toEqual(ev);
    expect(() => decodeEvent(buf.subarray(0, 111))).toThrow(/111 bytes, 112 expected/);
  });

  it('describes a redirect: time, process, cgroup, policy, hook, original destination and the proxy', () => {
    expect(describeEvent(decodeEvent(traceEvent.encode(event())), names)).toEqual({
      time: '2026-12-04T20:00:00.001Z',
      pid: 1234,
      comm: 'curl',
      cgroup: '/kubepods/pod-a',
      cgroupId: '77',
      policy: 'reviews',
      slot: 3,
      hook: 'connect4',
      decision: 'redirect',
      reason: 'redirected',
      metric: 'meshredir_connections_redirected_total',
      original: '10.0.0.7:8080',
      to: '10.200.0.1:15001',
      from: null,
      cookie: '4242',
    });
  });

  it('names every bypass and refusal as the metrics do', () => {
    const reasonOf = (field: (typeof STAT_FIELDS)[number]) =>
      describeEvent(event({ verdict: TraceVerdict.PASS, field: STAT_FIELDS.indexOf(field) }), names);
    expect(
      (
        [
          'bypass_cgroup',
          'bypass_owner',
          'bypass_mark',
          'bypass_port',
          'bypass_cidr',
          'bypass_loopback',
          'bypass_family',
          'bypass_proxy',
        ] as const
      ).map((f) => [reasonOf(f).reason, reasonOf(f).metric, reasonOf(f).decision]),
    ).toEqual(
      ['proxy_cgroup', 'owner', 'mark', 'port', 'cidr', 'loopback', 'no_proxy_for_family', 'destination_is_proxy'].map(
        (r) => [r, 'meshredir_connections_bypassed_total', 'bypass'],
      ),
    );
    const full = describeEvent(
      event({
        verdict: TraceVerdict.REFUSE,
        field: STAT_FIELDS.indexOf('err_full'),
        to_addr: v4('10.0.0.7'),
        to_port: 8080,
      }),
      names,
    );
    expect([full.decision, full.reason, full.metric]).toEqual([
      'refuse',
      'table_full',
      'meshredir_connections_refused_total',
    ]);
    expect(formatLine(full)).toMatch(/10\.0\.0\.7:8080 ✗ EPERM$/);
    const sent = describeEvent(
      event({ hook: TraceHook.SENDMSG4, table: TraceTable.DNS, field: DNS_STAT_FIELDS.indexOf('udp_sendmsg') }),
      names,
    );
    expect([sent.hook, sent.decision, sent.reason, sent.metric]).toEqual([
      'sendmsg4',
      'redirect',
      'sendmsg_udp',
      'meshredir_dns_captured_total',
    ]);
    const reply = describeEvent(
      event({
        hook: TraceHook.RECVMSG4,
        verdict: TraceVerdict.RELABEL,
        table: TraceTable.DNS,
        field: DNS_STAT_FIELDS.indexOf('replies'),
        port: 53,
        to_port: 53,
        addr: v4('10.200.0.1'),
        to_addr: v4('10.0.0.10'),
      }),
      names,
    );
    expect([reply.hook, reply.decision, reply.reason, reply.metric, reply.original, reply.to]).toEqual([
      'recvmsg4',
      'relabel',
      'dns_replies',
      'meshredir_dns_replies_relabelled_total',
      '10.200.0.1:53',
      '10.0.0.10:53',
    ]);
    expect(formatLine(reply)).toMatch(
      /recvmsg4 relabel\(dns_replies\) reply from 10\.200\.0\.1:53 shown as from 10\.0\.0\.10:53$/,
    );
    // sk_lookup: no process (pid, comm, cgroup 0); the client as `from`, the proxy's listener as `to`.
    const inbound = describeEvent(
      event({
        hook: TraceHook.SKLOOKUP,
        table: TraceTable.INBOUND,
        field: IN_STAT_FIELDS.indexOf('intercepted'),
        pid: 0,
        cgroup_id: 0n,
        comm: Buffer.alloc(16),
        port: 8080,
        addr: v4('10.200.0.12'),
        to_port: 15006,
        to_addr: v4('127.0.0.1'),
        from_port: 40000,
        from_addr: v4('10.200.0.11'),
      }),
      names,
    );
    expect(inbound).toMatchObject({
      hook: 'sk_lookup',
      pid: 0,
      comm: '',
      cgroup: '-',
      policy: 'reviews',
      decision: 'redirect',
      reason: 'inbound_intercepted',
      metric: 'meshredir_inbound_connections_redirected_total',
      from: '10.200.0.11:40000',
      original: '10.200.0.12:8080',
      to: '127.0.0.1:15006',
    });
    expect(formatLine(inbound)).toMatch(
      /sk_lookup redirect\(inbound_intercepted\) 10\.200\.0\.11:40000 → 10\.200\.0\.12:8080 → 127\.0\.0\.1:15006$/,
    );
    const noProxy = describeEvent(
      event({
        hook: TraceHook.SKLOOKUP,
        verdict: TraceVerdict.REFUSE,
        table: TraceTable.INBOUND,
        field: IN_STAT_FIELDS.indexOf('no_proxy_refused'),
      }),
      names,
    );
    expect([noProxy.decision, noProxy.reason, noProxy.metric]).toEqual([
      'refuse',
      'refused',
      'meshredir_inbound_no_proxy_total',
    ]);
    const dns = counterOf({ table: TraceTable.DNS, field: DNS_STAT_FIELDS.indexOf('udp_connect') });
    expect([dns?.counter, dns?.metric.family.name, dns?.metric.labels]).toEqual([
      'dns_udp_connect',
      'meshredir_dns_captured_total',
      { call: 'connect_udp' },
    ]);
  });

  it('a SO_ORIGINAL_DST answer, an unknown connection, a lost note, an unknown slot and cgroup', () => {
    const served = describeEvent(
      event({
        hook: TraceHook.GETSOCKOPT,
        verdict: TraceVerdict.ANSWER,
        field: STAT_FIELDS.indexOf('origdst_served'),
        comm: Buffer.from('haproxy\0\0\0\0\0\0\0\0\0'),
      }),
      names,
    );
    expect([served.decision, served.reason, served.metric]).toEqual([
      'served',
      'origdst_served',
      'meshredir_original_destinations_served_total',
    ]);
    expect(formatLine(served)).toBe(
      '20:00:00.001 1234 haproxy /kubepods/pod-a reviews getsockopt served(origdst_served) answered 10.0.0.7:8080 on 10.200.0.1:15001',
    );
    const lost = describeEvent(event({ table: 0, field: 0, slot: 9, cgroup_id: 5n }), names);
    expect([lost.reason, lost.metric, lost.policy, lost.cgroup]).toEqual(['unknown', null, null, 'id 5']);
    expect(describeEvent(event({ slot: 0 }), names).policy).toBeNull();
  });

  it('formats IPv6, v4-mapped and absent addresses', () => {
    const a6 = Buffer.from('20010db8000000000000000000000001', 'hex');
    expect(endpoint(AF_INET6, a6, 443)).toBe('[2001:db8::1]:443');
    expect(endpoint(AF_INET6, Buffer.alloc(16), 80)).toBe('[::]:80');
    expect(endpoint(AF_INET6, Buffer.from('00000000000000000000000000000001', 'hex'), 80)).toBe('[::1]:80');
    expect(endpoint(AF_INET6, Buffer.from('fd000000000100000000000000000000', 'hex'), 80)).toBe('[fd00:0:1::]:80');
    expect(endpoint(AF_INET6, Buffer.from('00000000000000000000ffff0a000007', 'hex'), 8080)).toBe(
      '[::ffff:10.0.0.7]:8080',
    );
    expect(endpoint(AF_INET6, Buffer.from('20010db8000100020003000400050006', 'hex'), 1)).toBe(
      '[2001:db8:1:2:3:4:5:6]:1',
    );
    expect(endpoint(0, Buffer.alloc(16), 0)).toBeNull();
  });
});

describe('trace options', () => {
  const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
  it.each([
    [['--pid', '0'], '--pid: '],
    [['--pid', 'abc'], '--pid: '],
    [['--policy', 'x'.repeat(254)], '--policy: '],
    [['--bpffs', 'relative'], '--bpffs: must be an absolute path'],
  ])('trace %j is a usage error (exit 2)', (args, message) => {
    const r = spawnSync(process.execPath, [CLI, 'trace', ...args], { encoding: 'utf8' });
    expect(r.status, r.stderr).toBe(2);
    expect(r.stderr).toContain(message);
  });
});
