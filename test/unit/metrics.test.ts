// metrics.test.ts — what is pure in the metrics: the names and labels of every BPF counter (one series per
// field, Prometheus' naming conventions, cardinality bounded by policies), the kinds of our nat rules, the
// listen address option, the health verdicts, and the exposition the agent serves (over node:http).
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { DNS_STAT_FIELDS, IN_STAT_FIELDS, STAT_FIELDS, type InStatName, type StatName } from '../../src/bpf/abi.js';
import { NODE_FAMILIES, inboundFamilies, dnsFamilies, statFamilies } from '../../src/modes/ebpf/metrics.js';
import { DNS_STAT_METRICS, IN_STAT_METRICS, STAT_METRICS } from '../../src/modes/ebpf/stat-metrics.js';
import { IPTABLES_FAMILIES, natFamilies, ruleCounters, ruleKind } from '../../src/modes/iptables/metrics.js';
import { COMMON, Families, type MetricFamily } from '../../src/modes/metrics.js';
import type { Counters } from '../../src/modes/ebpf/counters.js';
import { INBOUND_WATCH_FAMILIES } from '../../src/modes/ebpf/inbound-watch.js';
import { listenAddress } from '../../src/cli/address.js';
import { liveness, readiness, staleAfterSeconds } from '../../src/agent/health.js';
import type { PassHealth } from '../../src/agent/health.js';
import { serve } from '../../src/agent/http.js';
import { AgentMetrics } from '../../src/agent/metrics.js';
import type { Mode } from '../../src/modes/mode.js';

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const counters = (values: Partial<Record<StatName, bigint>> = {}): Counters =>
  Object.fromEntries(STAT_FIELDS.map((f) => [f, values[f] ?? 0n])) as Counters;
const series = (f: MetricFamily) => f.samples.map((s) => `${f.name}${JSON.stringify(s.labels)}`);

describe('BPF counters as metrics', () => {
  it('every field of struct mr_stats has its own series; names follow the conventions', () => {
    expect(Object.keys(STAT_METRICS).sort()).toEqual([...STAT_FIELDS].sort());
    const fams = statFamilies(new Map([['a', counters()]]), counters()).list();
    const all = fams.flatMap(series);
    expect(new Set(all).size).toBe(all.length); // no two fields share a series
    expect(all).toHaveLength(STAT_FIELDS.length);
    for (const f of fams) {
      expect(f.name).toMatch(NAME);
      expect(f.name).toMatch(/^meshredir_/);
      expect(f.name.endsWith('_total')).toBe(f.type === 'counter');
      expect(f.help.length).toBeGreaterThan(10);
      for (const s of f.samples) expect(Object.keys(s.labels).sort()).toEqual([...f.labelNames].sort());
    }
  });

  it('values by policy; node-wide counters (slot 0) without a policy label; one series per policy and field', () => {
    const fams = statFamilies(
      new Map([
        ['a', counters({ redirected: 5n, bypass_port: 2n, err_full: 1n, msg_slow: 7n })],
        ['b', counters({ redirected: 1n })],
      ]),
      counters({ origdst_unknown: 3n }),
    ).list();
    const v = (name: string, labels: Record<string, string>) =>
      fams.find((f) => f.name === name)?.samples.find((s) => JSON.stringify(s.labels) === JSON.stringify(labels))
        ?.value;
    expect(v(COMMON.redirected.name, { policy: 'a' })).toBe(5);
    expect(v(COMMON.redirected.name, { policy: 'b' })).toBe(1);
    expect(v(COMMON.bypassed.name, { policy: 'a', reason: 'port' })).toBe(2);
    expect(v('meshredir_connections_refused_total', { policy: 'a', reason: 'table_full' })).toBe(1);
    expect(v('meshredir_fastpath_messages_total', { policy: 'a', path: 'tcp' })).toBe(7);
    expect(v('meshredir_original_destinations_unknown_total', {})).toBe(3);
    const perPolicy = STAT_FIELDS.filter((f) => STAT_METRICS[f].scope !== 'node').length;
    expect(fams.flatMap(series)).toHaveLength(2 * perPolicy + (STAT_FIELDS.length - perPolicy));
  });

  it('DNS capture: every field of struct mr_dns_stats has its own series, per policy', () => {
    expect(Object.keys(DNS_STAT_METRICS).sort()).toEqual([...DNS_STAT_FIELDS].sort());
    const zero = Object.fromEntries(DNS_STAT_FIELDS.map((f) => [f, 0n])) as Record<
      (typeof DNS_STAT_FIELDS)[number],
      bigint
    >;
    const fams = dnsFamilies(
      new Map([
        ['a', { ...zero, udp_sendmsg: 4n }],
        ['b', zero],
      ]),
    ).list();
    const all = fams.flatMap(series);
    expect(new Set(all).size).toBe(all.length);
    expect(all).toHaveLength(2 * DNS_STAT_FIELDS.length);
    for (const f of fams) {
      expect(f.name).toMatch(/^meshredir_dns_[a-z_]+$/);
      expect(f.name.endsWith('_total')).toBe(f.type === 'counter');
    }
    const captured = fams.find((f) => f.name === 'meshredir_dns_captured_total')!;
    expect(captured.samples.find((x) => x.labels.policy === 'a' && x.labels.call === 'sendmsg_udp')?.value).toBe(4);
    // The DNS families never share a name with the outbound ones.
    const outbound = new Set(Object.values(STAT_METRICS).map((m) => m.family.name));
    for (const f of fams) expect(outbound.has(f.name)).toBe(false);
  });

  it('inbound (sk_lookup): every field of struct mr_in_stats has its own series, per policy, with the listener gauge', () => {
    expect(Object.keys(IN_STAT_METRICS).sort()).toEqual([...IN_STAT_FIELDS].sort());
    const zero = Object.fromEntries(IN_STAT_FIELDS.map((f) => [f, 0])) as Record<InStatName, number>;
    const fams = inboundFamilies(
      new Map([
        ['a', { counters: { ...zero, intercepted: 3, no_proxy_refused: 2 }, listeners: { ipv4: '77', ipv6: null } }],
        ['b', { counters: zero, listeners: { ipv4: null, ipv6: null } }],
      ]),
    ).list();
    const all = fams.flatMap(series);
    expect(new Set(all).size).toBe(all.length);
    expect(all).toHaveLength(2 * (IN_STAT_FIELDS.length + 2));
    for (const f of fams) {
      expect(f.name).toMatch(/^meshredir_inbound_[a-z_]+$/);
      expect(f.name.endsWith('_total')).toBe(f.type === 'counter');
    }
    const v = (name: string, labels: Record<string, string>) =>
      fams.find((f) => f.name === name)?.samples.find((s) => JSON.stringify(s.labels) === JSON.stringify(labels))
        ?.value;
    // The same family as the iptables mode's inbound REDIRECT/TPROXY counts.
    expect(v(COMMON.inboundRedirected.name, { policy: 'a' })).toBe(3);
    expect(v('meshredir_inbound_no_proxy_total', { policy: 'a', action: 'refused' })).toBe(2);
    expect(v('meshredir_inbound_listener_registered', { policy: 'a', family: 'ipv4' })).toBe(1);
    expect(v('meshredir_inbound_listener_registered', { policy: 'a', family: 'ipv6' })).toBe(0);
  });

  it('the bypass reasons are those of the decision order', () => {
    const reasons = STAT_FIELDS.filter((f) => f.startsWith('bypass_')).map((f) => STAT_METRICS[f].labels?.reason);
    expect(reasons.sort()).toEqual(
      [
        'cidr',
        'destination_is_proxy',
        'loopback',
        'mark',
        'no_proxy_for_family',
        'owner',
        'port',
        'proxy_cgroup',
      ].sort(),
    );
  });

  it('a family is declared once with one set of labels', () => {
    const f = new Families();
    f.add(COMMON.redirected, { policy: 'a' }, 1);
    expect(() => f.add(COMMON.redirected, { policy: 'a', reason: 'x' }, 1)).toThrow(/labels/);
    expect(() => f.declare({ ...COMMON.redirected, type: 'gauge' })).toThrow(/declared twice/);
  });
});

describe('nat rules as metrics', () => {
  const golden = join(import.meta.dirname, '..', 'golden', 'iptables');

  it('every rule that decides (RETURN, REDIRECT, DNAT; TPROXY) in every golden file has a kind; jumps have none', () => {
    const files = [
      ...readdirSync(golden).filter((f) => f.endsWith('.rules')),
      ...readdirSync(join(golden, 'dns'))
        .filter((f) => f.endsWith('.rules'))
        .map((f) => join('dns', f)),
    ];
    for (const file of files) {
      let table = '';
      for (const line of readFileSync(join(golden, file), 'utf8').split('\n')) {
        if (line.startsWith('*')) table = line.slice(1);
        if (!line.startsWith('-A MESHREDIR_')) continue;
        // What the metrics read: nat's deciding rules and mangle's TPROXY rule (raw's CT zones decide nothing).
        const decides =
          table === 'nat' ? / -j (RETURN|REDIRECT|DNAT)\b/.test(line) : table === 'mangle' && / -j TPROXY\b/.test(line);
        if (table === 'nat' || decides) expect(ruleKind(line) !== null, `${file}: ${line}`).toBe(decides);
      }
    }
    const kind = (file: string) =>
      readFileSync(join(golden, 'dns', file), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('-A MESHREDIR_DNS ') && / -j (RETURN|REDIRECT|DNAT)\b/.test(l))
        .map((l) => JSON.stringify(ruleKind(l)));
    expect(kind('sidecar.v4.rules')).toEqual(
      [
        ...Array(2).fill(JSON.stringify({ family: 'dnsBypassed', reason: 'owner' })),
        ...Array(2).fill([
          JSON.stringify({ family: 'dnsCaptured', protocol: 'udp' }),
          JSON.stringify({ family: 'dnsCaptured', protocol: 'tcp' }),
        ]),
      ].flat(),
    );
  });

  it('kinds of the istio-like policy, in the form iptables-save -c prints', () => {
    const kinds = (file: string) =>
      readFileSync(join(golden, file), 'utf8')
        .split('\n')
        .filter((l) => l.startsWith('-A MESHREDIR_'))
        .map((l) => ruleKind(`[0:0] ${l.replace(/-p tcp --dport/, '-p tcp -m tcp --dport')}`))
        .filter(Boolean)
        .map((k) => ('reason' in k! ? `${k.family}:${k.reason}` : k!.family));
    const expected = [
      'inboundRedirected',
      'inboundBypassed:port',
      'inboundBypassed:port',
      'inboundBypassed:port',
      'inboundBypassed:port',
      'redirected',
      'bypassed:inbound_passthrough',
      'bypassed:proxy_cgroup',
      'bypassed:destination_is_proxy',
      'bypassed:owner',
      'bypassed:owner',
      'bypassed:loopback',
      'bypassed:port',
      'bypassed:port',
      'bypassed:cidr',
    ];
    expect(kinds('istio.v4.rules')).toEqual(expected);
    expect(kinds('istio.v6.rules')).toEqual(expected);
  });

  it('counters summed per policy and kind from iptables-save -c', () => {
    const save = [
      '*nat',
      ':MESHREDIR_OUTPUT - [0:0]',
      '[7:420] -A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT',
      '[3:180] -A MESHREDIR_OUTPUT -d 127.0.0.1/32 -p tcp -m tcp --dport 15001 -m comment --comment "meshredir:p" -j RETURN',
      '[2:120] -A MESHREDIR_OUTPUT -m owner --uid-owner 1337 -m comment --comment "meshredir:p" -j RETURN',
      '[1:60] -A MESHREDIR_OUTPUT -p tcp -m tcp --dport 9090 -m comment --comment "meshredir:p" -j RETURN',
      '[9:540] -A MESHREDIR_OUTPUT -m comment --comment "meshredir:p" -j MESHREDIR_REDIRECT',
      '[9:540] -A MESHREDIR_REDIRECT -p tcp -m comment --comment "meshredir:p" -j REDIRECT --to-ports 15001',
      'COMMIT',
    ].join('\n');
    const rules = ruleCounters(save);
    expect(rules).toHaveLength(5); // ours only: not the jump from OUTPUT
    const fams = natFamilies(new Map([['p', [...rules, ...ruleCounters(save)]]])).list(); // two families
    const get = (name: string, reason?: string) =>
      fams.find((f) => f.name === name)!.samples.find((s) => s.labels.reason === reason)!.value;
    expect(get(COMMON.redirected.name)).toBe(18);
    expect(get(COMMON.bypassed.name, 'destination_is_proxy')).toBe(6);
    expect(get(COMMON.bypassed.name, 'owner')).toBe(4);
    expect(get(COMMON.bypassed.name, 'port')).toBe(2);
    expect(get(COMMON.bypassed.name, 'cidr')).toBe(0);
    // No inbound rules, no inbound series.
    expect(fams.find((f) => f.name === 'meshredir_inbound_connections_redirected_total')!.samples).toEqual([]);
  });
});

describe('--metrics-address', () => {
  const parse = (s: string) => listenAddress.safeParse(s);
  it('HOST:PORT with a literal address, [IPv6]:PORT, or off', () => {
    expect(parse('127.0.0.1:9977').data).toEqual({ host: '127.0.0.1', port: 9977 });
    expect(parse('0.0.0.0:0').data).toEqual({ host: '0.0.0.0', port: 0 });
    expect(parse('[::1]:9977').data).toEqual({ host: '::1', port: 9977 });
    expect(parse('off')).toEqual({ success: true, data: undefined });
    for (const bad of ['localhost:9977', '::1:9977', '127.0.0.1', '127.0.0.1:65536', ':9977', '127.0.0.1:x', ''])
      expect(parse(bad).success, bad).toBe(false);
  });
});

describe('health verdicts', () => {
  const t = (ms: number) => new Date(1_000_000 + ms);
  const pass = (over: Partial<PassHealth> = {}): PassHealth => ({
    at: t(0),
    ok: true,
    reason: 'interval',
    durationMs: 100,
    applied: 1,
    notApplied: 0,
    errors: 0,
    states: { applied: 1, waiting: 0, rejected: 0, failed: 0 },
    sourceErrors: 0,
    ...over,
  });
  const health = { startedAt: t(-10_000), interval: 30, stopped: false, lastPass: null };
  const ready = () => ({ ready: true, reason: '8 programs attached' });

  it('live while a pass completed within three intervals and 10 s (from the start before the first)', () => {
    expect(staleAfterSeconds(30)).toBe(100);
    expect(liveness({ ...health, lastPass: pass() }, t(0)).ok).toBe(true);
    expect(liveness({ ...health, lastPass: pass() }, t(99_000)).ok).toBe(true);
    expect(liveness({ ...health, lastPass: pass() }, t(101_000))).toEqual({
      ok: false,
      reason: 'last reconcile pass completed 101.0 s ago (limit 100 s)',
    });
    expect(liveness(health, t(89_000)).ok).toBe(true);
    expect(liveness(health, t(91_000)).ok).toBe(false);
    // A failing pass is still a pass: the loop is alive.
    expect(liveness({ ...health, lastPass: pass({ ok: false, error: 'x' }) }, t(0)).ok).toBe(true);
  });

  it('ready only after a successful pass, with the mode in force; the mode is asked last', () => {
    let asked = 0;
    const mode = () => (asked++, ready());
    expect(readiness(health, mode)).toEqual({ ok: false, reason: 'starting: no reconcile pass completed yet' });
    expect(readiness({ ...health, lastPass: pass({ ok: false, error: 'boom' }) }, mode)).toEqual({
      ok: false,
      reason: 'the last reconcile pass failed: boom',
    });
    expect(readiness({ ...health, stopped: true, lastPass: pass() }, mode).reason).toBe('stopping');
    expect(asked).toBe(0);
    expect(readiness({ ...health, lastPass: pass() }, mode)).toEqual({ ok: true, reason: '8 programs attached' });
    expect(
      readiness({ ...health, lastPass: pass() }, () => ({ ready: false, reason: 'detached: mr_connect4' })),
    ).toEqual({ ok: false, reason: 'detached: mr_connect4' });
    expect(
      readiness({ ...health, lastPass: pass() }, () => {
        throw new Error('cannot read');
      }),
    ).toEqual({ ok: false, reason: 'cannot read' });
  });
});

describe('the endpoint', () => {
  const fakeMode = (families: () => MetricFamily[]) => ({ metrics: families }) as unknown as Mode;

  it('serves /metrics, /healthz, /readyz (200 or 503 with the reason), 404 and 405 otherwise', async () => {
    const m = new AgentMetrics({ mode: 'ebpf', requested: 'auto', reason: 'kernel has "it"' }, '1.2.3');
    m.observe({
      at: new Date(),
      ok: true,
      reason: 'start',
      durationMs: 200,
      applied: 2,
      notApplied: 0,
      errors: 0,
      states: { applied: 2, waiting: 1, rejected: 0, failed: 0 },
      sourceErrors: 1,
    });
    let live = true;
    const errors: Error[] = [];
    let fams: MetricFamily[] = [
      { ...COMMON.redirected, labelNames: ['policy'], samples: [{ labels: { policy: 'a' }, value: 3 }] },
    ];
    const mode = fakeMode(() => fams);
    const ep = await serve(
      { host: '127.0.0.1', port: 0 },
      {
        metrics: () => m.render(mode, (e) => errors.push(e)),
        live: () => ({ ok: live, reason: live ? 'fine' : 'stuck' }),
        ready: () => ({ ok: false, reason: 'starting' }),
      },
      (e) => errors.push(e),
    );
    try {
      const url = `http://${ep.address}`;
      const get = async (path: string, method = 'GET') => {
        const r = await fetch(`${url}${path}`, { method });
        return { status: r.status, body: await r.text(), type: r.headers.get('content-type') };
      };
      const text = (await get('/metrics')).body;
      expect(text).toMatch(/^meshredir_connections_redirected_total\{policy="a"\} 3$/m);
      expect(text).toMatch(/^meshredir_build_info\{version="1\.2\.3"\} 1$/m);
      expect(text).toMatch(/^meshredir_mode_info\{mode="ebpf",requested="auto",reason="kernel has \\"it\\""\} 1$/m);
      expect(text).toMatch(/^meshredir_policies\{state="waiting"\} 1$/m);
      expect(text).toMatch(/^meshredir_policy_source_errors 1$/m);
      expect(text).toMatch(/^meshredir_reconcile_duration_seconds_count 1$/m);
      expect(text).toMatch(/^meshredir_mode_metrics_success 1$/m);
      expect(text).toMatch(/^process_resident_memory_bytes \d+/m);
      expect(text).not.toMatch(/^nodejs_active_handles_total/m); // a gauge named like a counter
      expect((await get('/metrics')).type).toMatch(/^text\/plain; version=0\.0\.4/);
      expect(await get('/healthz')).toMatchObject({ status: 200, body: 'ok: fine\n' });
      live = false;
      expect(await get('/healthz')).toMatchObject({ status: 503, body: 'not ok: stuck\n' });
      expect(await get('/readyz')).toMatchObject({ status: 503, body: 'not ok: starting\n' });
      expect((await get('/readyz', 'HEAD')).status).toBe(503);
      expect((await get('/other')).status).toBe(404);
      expect((await get('/metrics', 'POST')).status).toBe(405);
      // A policy gone: its series go with it. A mode that cannot be read: the rest is still served.
      fams = [{ ...COMMON.redirected, labelNames: ['policy'], samples: [] }];
      expect((await get('/metrics')).body).not.toMatch(/policy="a"/);
      fams = [];
      const broken = fakeMode(() => {
        throw new Error('pins gone');
      });
      const r = await m.render(broken, (e) => errors.push(e));
      expect(r.body).toMatch(/^meshredir_mode_metrics_success 0$/m);
      expect(errors.map((e) => e.message)).toEqual(['pins gone']);
    } finally {
      await ep.close();
    }
  });

  it('an address in use is an error naming it', async () => {
    const faces = {
      metrics: async () => ({ contentType: 'text/plain', body: '' }),
      live: () => ({ ok: true, reason: '' }),
      ready: () => ({ ok: true, reason: '' }),
    };
    const a = await serve({ host: '127.0.0.1', port: 0 }, faces, () => {});
    try {
      const port = Number(a.address.split(':').pop());
      await expect(serve({ host: '127.0.0.1', port }, faces, () => {})).rejects.toThrow(
        `metrics address 127.0.0.1:${port}: EADDRINUSE`,
      );
    } finally {
      await a.close();
    }
  });
});

describe('docs/metrics.md', () => {
  it('names every family and label value meshredir serves', () => {
    const doc = readFileSync(join(import.meta.dirname, '..', '..', 'docs', 'metrics.md'), 'utf8');
    const agent = new AgentMetrics({ mode: 'ebpf', requested: 'ebpf', reason: '' }, '0').registry
      .getMetricsAsArray()
      .map((m) => (m as unknown as { name: string }).name)
      .filter((n) => n.startsWith('meshredir_'));
    const names = [
      ...Object.values(STAT_METRICS).map((m) => m.family.name),
      ...Object.values(DNS_STAT_METRICS).map((m) => m.family.name),
      ...Object.values(IN_STAT_METRICS).map((m) => m.family.name),
      'meshredir_inbound_listener_registered',
      ...INBOUND_WATCH_FAMILIES.map((f) => f.name),
      ...NODE_FAMILIES.map((f) => f.name),
      ...IPTABLES_FAMILIES.map((f) => f.name),
      ...agent,
    ];
    expect(agent.length).toBeGreaterThan(5);
    for (const n of new Set(names)) expect(doc, n).toContain(`\`${n}\``);
    for (const m of [
      ...Object.values(STAT_METRICS),
      ...Object.values(DNS_STAT_METRICS),
      ...Object.values(IN_STAT_METRICS),
    ])
      for (const v of Object.values(m.labels ?? {})) expect(doc, v).toMatch(new RegExp(`[\`"]${v}[\`"]`));
  });
});
