// bench.ts — `meshredir bench`: every mode measured in one run on one machine, modes interleaved
// round by round (A B C, then B C A, …), medians and min–max, ratios to a baseline. Every sample
// carries the counters of the mode that was in force and is rejected when they show that the mode did
// not act; a mode that cannot run here is reported missing with the reason, never faked.
import { join } from 'node:path';
import { mkdtempSync, writeFileSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawn, execFileSync } from 'node:child_process';
import { Lab, type LabProc } from './lab.js';
import { judge, combine, EBPF_COUNTERS, type LoadResult, type Counters } from './checks.js';
import { EbpfMode } from '../modes/ebpf/index.js';
import { IptablesMode } from '../modes/iptables/index.js';
import type { NetnsStatus } from '../modes/iptables/status.js';
import { stats } from '../modes/ebpf/counters.js';
import { parsePolicyText } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import { INBOUND_MODES, inboundSteps, runInbound } from './inbound.js';

export const SCENARIOS = ['crr', 'scale', 'proxy', 'hop', 'inbound', 'control'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchOptions {
  only: Scenario[];
  rounds: number;
  /** Seconds per measurement (after a warm-up of WARMUP seconds). */
  duration: number;
  /** Message sizes of the hop scenario. */
  hopSizes?: number[];
  object: string;
  mrload: string;
  cli: string;
  progress: (line: string) => void;
}

export interface Sample {
  scenario: Scenario;
  mode: string;
  variant: string;
  round: number;
  metrics: Record<string, number>;
  /** What the mode in force did during the measurement (counter deltas; see checks.ts). */
  counters?: Counters;
  /** Why the sample was rejected; absent when it is valid. Rejected samples stay in the JSON and
   * out of the medians. */
  invalid?: string[];
}

/** A mode that could not run here, with why (instead of a sample). */
export interface Missing {
  scenario: Scenario;
  mode: string;
  reason: string;
}

export interface BenchResult {
  samples: Sample[];
  missing: Missing[];
  env: Record<string, unknown>;
}

export const WARMUP = 0.3;
export const HOP_SIZES = [64, 1024, 16384, 65536];
const D_REDIRECT = '10.250.0.99:80'; // nothing answers there: only a redirect reaches a server
const SERVER = '127.0.0.1:9000'; // the server next to the app (redirect-only scenarios)
const HOP_ECHO = '127.0.0.1:9001'; // the hop's "proxy": an echo server in the policy's proxy cgroup
const HOP_SINK = '127.0.0.1:9002'; // … and a sink there, for the one-direction stream
const UPSTREAM = '10.250.0.2:9000'; // the server in the upstream namespace (through-proxy scenario)

/** Mode order of a round: rotated by one each round, so no mode always runs first (or after the same). */
export function rotate<T>(xs: readonly T[], round: number): T[] {
  const k = xs.length ? (round - 1) % xs.length : 0;
  return [...xs.slice(k), ...xs.slice(0, k)];
}

export const MODES: Record<Exclude<Scenario, 'control'>, string[]> = {
  crr: ['direct', 'iptables', 'ebpf'],
  scale: ['iptables', 'ebpf'],
  proxy: ['direct', 'explicit', 'iptables', 'ebpf', 'ebpf+sk_msg'],
  hop: ['ebpf', 'ebpf+sk_msg'],
  inbound: [...INBOUND_MODES], // inbound.ts
};

/** How many measurements a run makes with the modes that can run (for progress and its estimate). */
export function plannedSteps(
  only: Scenario[],
  rounds: number,
  hopSizes = HOP_SIZES,
  modes: (s: Exclude<Scenario, 'control'>) => number = (s) => MODES[s].length,
): number {
  const per: Record<Scenario, number> = {
    crr: modes('crr') * 2, // × (1 client, 2 clients)
    scale: modes('scale') * 3, // × 3 policy sizes
    proxy: modes('proxy') * 2, // × (crr, rr)
    hop: modes('hop') * hopSizes.length * 2, // × sizes × (rr, stream)
    inbound: inboundSteps(modes('inbound')),
    control: 1,
  };
  return only.reduce((a, s) => a + per[s] * rounds, 0);
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300);

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const lab = new Lab();
  const samples: Sample[] = [];
  const missing: Missing[] = [];
  const hopSizes = o.hopSizes ?? HOP_SIZES;
  const ebpf = new EbpfMode({
    bpffs: lab.bpffs,
    attach: { cgroupRoot: join(lab.cgMount, lab.cgRoot), object: o.object },
  });
  const ipt = new IptablesMode({ iptablesState: lab.stateFile, lockWait: 10 });
  const app = lab.cgroup('app');
  const srvCg = lab.cgroup('srv');
  const proxyCg = lab.cgroup('proxy');
  const steps = { done: 0, total: plannedSteps(o.only, o.rounds, hopSizes) };
  const started = performance.now();
  const tick = (what: string) => {
    steps.done++;
    const el = (performance.now() - started) / 1000;
    const eta =
      steps.done < steps.total ? `, ~${Math.round((el / steps.done) * (steps.total - steps.done))} s left` : '';
    o.progress(`[${steps.done}/${steps.total}${eta}] ${what}`);
  };
  try {
    const policy = (p: { proxy: string; exclusions?: number; accelerate?: boolean }): Policy => {
      const excl = Array.from(
        { length: p.exclusions ?? 0 },
        (_, i) => `"172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32"`,
      );
      const text = `apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: bench }
spec:
  cgroup: ${app}
  netns: ${lab.netnsPath}
  accelerate: ${p.accelerate ? 'true' : 'false'}
  proxy: { outbound: "${p.proxy}", bypass: { cgroups: [${proxyCg}], uids: [1337] } }
  outbound: { excludeCidrs: [${excl.join(', ')}] }
`;
      const r = parsePolicyText(text, 'bench');
      if (r.errors.length) throw new Error(r.errors.map((e) => e.message).join('; '));
      return r.policies[0]!;
    };

    // ---- which modes exist here: each is tried for real; what fails is reported, not faked ----
    const unavailable = new Map<string, string>();
    let ebpfLoaded = false;
    try {
      const skmsg = ebpfApply(ebpf, []).notes.find(
        (n) => n.event === 'unavailable' && n.fields?.program === 'mr_skmsg',
      );
      ebpfLoaded = true;
      if (skmsg) unavailable.set('ebpf+sk_msg', `no sk_msg link on this kernel (needs 6.10): ${skmsg.message}`);
    } catch (e) {
      unavailable.set('ebpf', `the eBPF mode cannot load here: ${msg(e)}`);
      unavailable.set('ebpf+sk_msg', `the eBPF mode cannot load here: ${msg(e)}`);
    }
    const iptApply = (p: Policy) => {
      const r = ipt.apply(ipt.plan([p]));
      const bad = r.policies.filter((x) => x.state !== 'applied').map((x) => x.reason ?? x.state);
      if (bad.length) throw new Error(`iptables mode did not apply the bench policy: ${bad.join('; ')}`);
    };
    const iptCleanup = () => {
      const bad = ipt.cleanup().failed;
      if (bad.length) throw new Error(`iptables cleanup failed: ${bad.join('; ')}`);
      const left = lab.natRulesOfOurs();
      if (left.length) throw new Error(`MESHREDIR rules still in the bench netns after cleanup (${left.join(', ')})`);
    };
    try {
      iptApply(policy({ proxy: SERVER }));
      iptCleanup();
    } catch (e) {
      unavailable.set('iptables', `the iptables mode cannot apply here: ${msg(e)}`);
      try {
        ipt.cleanup();
      } catch {
        // nothing applied
      }
    }
    let haproxyMissing: string | undefined;
    try {
      execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    } catch (e) {
      haproxyMissing = `haproxy cannot run here: ${msg(e)}`;
    }
    const extraMissing: Partial<Record<Scenario, Record<string, string>>> = haproxyMissing
      ? { proxy: Object.fromEntries(MODES.proxy.filter((m) => m !== 'direct').map((m) => [m, haproxyMissing!])) }
      : {};
    const why = (scenario: Scenario, m: string) => extraMissing[scenario]?.[m] ?? unavailable.get(m);
    /** The modes of a scenario that can run; the others are recorded as missing, once. */
    const runnable = (scenario: Exclude<Scenario, 'control'>) =>
      MODES[scenario].filter((m) => {
        const w = why(scenario, m);
        if (w) missing.push({ scenario, mode: m, reason: w });
        return !w;
      });
    steps.total = plannedSteps(o.only, o.rounds, hopSizes, (s) => MODES[s].filter((m) => !why(s, m)).length);

    // ---- exactly one mode in force; direct and iptables runs have no eBPF program attached ----
    let iptInForce = false;
    const detachEbpf = () => {
      // By the pins, not the flag alone: a load that failed half-way may have attached some links.
      if (!ebpfLoaded && !existsSync(lab.bpffs)) return;
      ebpf.cleanup({ force: true });
      ebpfLoaded = false;
      if (existsSync(lab.bpffs)) throw new Error(`eBPF pins still under ${lab.bpffs} after cleanup`);
    };
    const use = (mode: string, p?: Policy) => {
      if (mode !== 'iptables' && iptInForce) {
        iptCleanup();
        iptInForce = false;
      }
      if (!mode.startsWith('ebpf')) detachEbpf();
      if (mode === 'iptables') {
        iptInForce = true; // before applying: a half-applied set must be cleaned up too
        iptApply(p!);
      } else if (mode.startsWith('ebpf')) {
        ebpfApply(ebpf, [p!]);
        ebpfLoaded = true;
      }
    };
    const counters = (mode: string): Counters => {
      if (mode.startsWith('ebpf')) {
        const out: Counters = Object.fromEntries(EBPF_COUNTERS.map((k) => [k, 0]));
        for (const s of stats(ebpf.pins).values()) for (const k of EBPF_COUNTERS) out[k]! += Number(s[k]);
        return out;
      }
      if (mode === 'iptables') {
        const netns = ipt.status().json.iptables as NetnsStatus[];
        const n = netns.reduce((a, e) => a + Object.values(e.redirected).reduce((x, y) => x + y, 0), 0);
        return { ipt_redirected: n };
      }
      return {};
    };
    const delta = (a: Counters, b: Counters): Counters =>
      Object.fromEntries(Object.keys(b).map((k) => [k, b[k]! - (a[k] ?? 0)]));

    const client = async (
      target: string,
      kind: 'crr' | 'rr' | 'stream',
      conc: number,
      size = 1,
    ): Promise<LoadResult> => {
      const out = await lab.run(
        lab.ns,
        app,
        o.mrload,
        ['client', target, kind, String(conc), String(o.duration), String(WARMUP), String(size)],
        { timeoutMs: 120_000 },
      );
      try {
        return JSON.parse(out) as LoadResult;
      } catch {
        throw new Error(
          `load generator (${kind} to ${target}) printed no result: ${JSON.stringify(out.slice(0, 300))}`,
        );
      }
    };

    /**
     * One measurement: puts the mode in force, reads its counters, runs `clients` load generators side
     * by side, reads the counters and the CPU time of the watched processes and of the machine again,
     * and judges the sample. A failure anywhere is a rejected sample, not the end of the run.
     */
    const measure = async (
      s: { scenario: Scenario; mode: string; variant: string; round: number },
      setup: { policyMode?: string; policy?: Policy },
      load: { target: string; kind: 'crr' | 'rr' | 'stream'; conc: number; size?: number; clients?: number },
      watch: Record<string, LabProc | undefined>,
      metrics: (l: LoadResult) => Record<string, number>,
      opts: { viaProxy?: boolean } = {},
    ): Promise<Sample> => {
      const sample: Sample = { ...s, metrics: {} };
      try {
        use(setup.policyMode ?? s.mode, setup.policy);
        const c0 = counters(s.mode);
        const procs = Object.entries(watch).filter((e): e is [string, LabProc] => !!e[1]?.child.pid);
        const p0 = procs.map(([, p]) => lab.cpu(p.child.pid!));
        const m0 = lab.machine();
        const t0 = performance.now();
        const rs = await Promise.all(
          Array.from({ length: load.clients ?? 1 }, () => client(load.target, load.kind, load.conc, load.size)),
        );
        const wall = (performance.now() - t0) / 1000;
        const m1 = lab.machine();
        const p1 = procs.map(([, p]) => lab.cpu(p.child.pid!));
        const c1 = counters(s.mode);
        const l = combine(rs);
        sample.counters = { ...delta(c0, c1), conns: l.conns };
        sample.metrics = {
          ...metrics(l),
          errors: l.errors,
          client_user: l.client_user,
          client_sys: l.client_sys,
          ...Object.fromEntries(
            procs.map(([name], i) => [`${name}_cpu`, (p1[i]!.user + p1[i]!.sys - p0[i]!.user - p0[i]!.sys) / wall]),
          ),
          idle: (m1.idle - m0.idle) / Math.max(1e-9, m1.total - m0.total),
        };
        const why = judge(s.mode, l, sample.counters, opts);
        if (why.length) sample.invalid = why;
      } catch (e) {
        sample.invalid = [`failed: ${msg(e)}`];
      }
      samples.push(sample);
      return sample;
    };
    const say = (x: Sample, text: string) => (x.invalid ? `REJECTED (${x.invalid.join('; ')})` : text);
    const fastNote = (x: Sample) =>
      x.mode === 'ebpf+sk_msg' && x.counters
        ? `, msg_fast ${x.counters.msg_fast ?? 0} / msg_slow ${x.counters.msg_slow ?? 0}`
        : '';

    // The fast path's flow-control bound is the peer netns's tcp_rmem maximum (at least 4 MiB).
    const tcpRmem = execFileSync('ip', ['netns', 'exec', lab.ns, 'sysctl', '-n', 'net.ipv4.tcp_rmem'], {
      encoding: 'utf8',
    })
      .trim()
      .split(/\s+/)
      .join(' ');
    const server = lab.start(srvCg, o.mrload, ['server', SERVER]);
    await lab.listening(9000, server);

    if (o.only.includes('crr')) {
      const p = policy({ proxy: SERVER });
      const modes = runnable('crr');
      for (let round = 1; round <= o.rounds; round++) {
        for (const mode of rotate(modes, round)) {
          // One client with 16 in flight, and two side by side with 8 each: if two clients get a
          // clearly higher rate, one client was the bottleneck.
          for (const clients of [1, 2]) {
            const x = await measure(
              { scenario: 'crr', mode, variant: clients === 1 ? '1B' : '1B, 2 clients', round },
              { policy: p },
              { target: mode === 'direct' ? SERVER : D_REDIRECT, kind: 'crr', conc: 16 / clients, clients },
              { server },
              (l) => ({ rate: l.rate, p50_us: l.p50_us, p99_us: l.p99_us }),
            );
            tick(
              `redirect-only CRR, ${mode}, ${clients} client(s), round ${round}: ${say(x, `${Math.round(x.metrics.rate ?? 0)} conn/s`)}`,
            );
          }
        }
      }
    }

    if (o.only.includes('scale')) {
      const sizes = [0, 1000, 10000];
      const ps = new Map(sizes.map((n) => [n, policy({ proxy: SERVER, exclusions: n })]));
      const modes = runnable('scale');
      for (let round = 1; round <= o.rounds; round++) {
        for (const n of sizes) {
          for (const mode of rotate(modes, round)) {
            const x = await measure(
              { scenario: 'scale', mode, variant: String(n), round },
              { policy: ps.get(n)! },
              { target: D_REDIRECT, kind: 'crr', conc: 16 },
              { server },
              (l) => ({
                rate: l.rate,
                p50_us: l.p50_us,
                p99_us: l.p99_us,
              }),
            );
            tick(
              `CRR with ${n} exclusions, ${mode}, round ${round}: ${say(x, `${Math.round(x.metrics.rate ?? 0)} conn/s`)}`,
            );
          }
        }
      }
    }

    if (o.only.includes('proxy')) {
      const modes = runnable('proxy');
      const upstream = lab.start(srvCg, o.mrload, ['server', UPSTREAM], undefined, lab.upNs);
      await lab.listening(9000, upstream, lab.upNs);
      let haproxy: LabProc | undefined;
      if (!haproxyMissing) {
        const cfg = lab.tmpFile(
          'haproxy.cfg',
          [
            'global',
            '  maxconn 4096',
            '  nbthread 1',
            'defaults',
            '  mode tcp',
            '  timeout connect 5s',
            '  timeout client 30s',
            '  timeout server 30s',
            'frontend transparent',
            '  bind 127.0.0.1:15001',
            '  default_backend orig',
            'backend orig',
            '  server o 0.0.0.0:0',
            'frontend explicit',
            '  bind 127.0.0.1:15002',
            '  default_backend fixed',
            'backend fixed',
            `  server s ${UPSTREAM}`,
            '',
          ].join('\n'),
        );
        // In the policy's proxy (bypass) cgroup and as uid 1337: its own connections are never
        // redirected, by either mode, and the fast path accepts its sockets.
        haproxy = lab.start(proxyCg, 'haproxy', ['-db', '-f', cfg], 1337);
        await lab.listening(15002, haproxy);
      }
      const p = policy({ proxy: '127.0.0.1:15001' });
      const pa = policy({ proxy: '127.0.0.1:15001', accelerate: true });
      for (let round = 1; round <= o.rounds; round++) {
        for (const mode of rotate(modes, round)) {
          const setup = { policyMode: mode === 'explicit' ? 'direct' : mode, policy: mode === 'ebpf+sk_msg' ? pa : p };
          const target = mode === 'explicit' ? '127.0.0.1:15002' : UPSTREAM;
          const watch = { server: upstream, haproxy: mode === 'direct' ? undefined : haproxy };
          const viaProxy = { viaProxy: mode.startsWith('ebpf') };
          const crr = await measure(
            { scenario: 'proxy', mode, variant: 'crr', round },
            setup,
            { target, kind: 'crr', conc: 16 },
            watch,
            (l) => ({ rate: l.rate }),
            viaProxy,
          );
          tick(
            `through HAProxy, CRR, ${mode}, round ${round}: ${say(crr, `${Math.round(crr.metrics.rate ?? 0)} conn/s${fastNote(crr)}`)}`,
          );
          const rr = await measure(
            { scenario: 'proxy', mode, variant: 'rr', round },
            setup,
            { target, kind: 'rr', conc: 1 },
            watch,
            (l) => ({ rate: l.rate, p50_us: l.p50_us, p99_us: l.p99_us }),
            viaProxy,
          );
          tick(
            `through HAProxy, RR, ${mode}, round ${round}: ${say(rr, `p50 ${(rr.metrics.p50_us ?? 0).toFixed(1)} µs${fastNote(rr)}`)}`,
          );
        }
      }
      use('direct');
      for (const x of [haproxy, upstream]) if (x) await stop(x);
    }

    if (o.only.includes('hop')) {
      // The app↔proxy hop alone: the "proxy" is an echo server (request/response) or a sink (stream),
      // both in the policy's proxy cgroup, reached by redirection.
      const echo = lab.start(proxyCg, o.mrload, ['server', HOP_ECHO]);
      const sink = lab.start(proxyCg, o.mrload, ['sink', HOP_SINK]);
      await lab.listening(9001, echo);
      await lab.listening(9002, sink);
      const pol = {
        rr: { ebpf: policy({ proxy: HOP_ECHO }), 'ebpf+sk_msg': policy({ proxy: HOP_ECHO, accelerate: true }) },
        stream: { ebpf: policy({ proxy: HOP_SINK }), 'ebpf+sk_msg': policy({ proxy: HOP_SINK, accelerate: true }) },
      };
      const modes = runnable('hop') as ('ebpf' | 'ebpf+sk_msg')[];
      for (let round = 1; round <= o.rounds; round++) {
        for (const size of hopSizes) {
          for (const mode of rotate(modes, round)) {
            const rr = await measure(
              { scenario: 'hop', mode, variant: `rr ${size}B`, round },
              { policy: pol.rr[mode] },
              { target: D_REDIRECT, kind: 'rr', conc: 1, size },
              { server: echo },
              (l) => ({
                rate: l.rate,
                p50_us: l.p50_us,
                p99_us: l.p99_us,
              }),
            );
            tick(
              `app→proxy hop, RR ${size} B, ${mode}, round ${round}: ${say(rr, `p50 ${(rr.metrics.p50_us ?? 0).toFixed(1)} µs${fastNote(rr)}`)}`,
            );
            const st = await measure(
              { scenario: 'hop', mode, variant: `stream ${size}B`, round },
              { policy: pol.stream[mode] },
              { target: D_REDIRECT, kind: 'stream', conc: 1, size },
              { server: sink },
              (l) => ({
                mbytes_s: l.mbytes_s,
                e2e_mbytes_s: l.e2e_mbytes_s,
                drain_ms: l.drain_ms,
              }),
            );
            tick(
              `app→proxy hop, stream ${size} B, ${mode}, round ${round}: ${say(st, `${(st.metrics.mbytes_s ?? 0).toFixed(0)} MB/s${fastNote(st)}`)}`,
            );
          }
        }
      }
      use('direct');
      await stop(echo);
      await stop(sink);
    }

    if (o.only.includes('inbound')) {
      use('direct'); // the outbound scenarios' programs and rules off: inbound.ts puts in force its own
      await runInbound({
        lab,
        rounds: o.rounds,
        duration: o.duration,
        warmup: WARMUP,
        mrload: o.mrload,
        object: o.object,
        app,
        unavailable,
        samples,
        missing,
        tick,
      });
    }

    if (o.only.includes('control')) {
      await control(o, lab, app, {
        ebpf,
        use,
        iptApply,
        iptCleanup,
        policy,
        unavailable,
        samples,
        missing,
        tick,
        setLoaded: (v) => (ebpfLoaded = v),
      });
    }
    return {
      samples,
      missing,
      env: { netns: lab.ns, cgroup: lab.cgRoot, tcp_rmem: tcpRmem, seconds: (performance.now() - started) / 1000 },
    };
  } finally {
    try {
      ipt.cleanup();
    } finally {
      try {
        ebpf.cleanup({ force: true });
      } finally {
        await lab.teardown();
      }
    }
  }
}

interface ControlCtx {
  ebpf: EbpfMode;
  use: (mode: string, p?: Policy) => void;
  iptApply: (p: Policy) => void;
  iptCleanup: () => void;
  policy: (p: { proxy: string; exclusions?: number }) => Policy;
  unavailable: Map<string, string>;
  samples: Sample[];
  missing: Missing[];
  tick: (what: string) => void;
  setLoaded: (v: boolean) => void;
}

/** The control plane, `rounds` times: 10,000 entries applied (eBPF map entries, iptables rules),
 * load + attach, agent start to redirect-ready, Node's own start, agent RSS. */
async function control(o: BenchOptions, lab: Lab, app: string, x: ControlCtx): Promise<void> {
  const big = x.policy({ proxy: SERVER, exclusions: 10000 });
  const push = (mode: string, variant: string, round: number, metrics: Record<string, number>) =>
    x.samples.push({ scenario: 'control', mode, variant, round, metrics });
  const fail = (mode: string, variant: string, round: number, e: unknown) =>
    x.samples.push({ scenario: 'control', mode, variant, round, metrics: {}, invalid: [`failed: ${msg(e)}`] });
  for (const m of ['ebpf', 'iptables']) {
    const why = x.unavailable.get(m);
    if (why) x.missing.push({ scenario: 'control', mode: m, reason: why });
  }
  for (let round = 1; round <= o.rounds; round++) {
    const said: string[] = [];
    if (!x.unavailable.has('ebpf')) {
      try {
        x.use('direct'); // nothing attached: the next load is cold
        let t = performance.now();
        ebpfApply(x.ebpf, []);
        x.setLoaded(true);
        push('ebpf', 'load + attach (in-process)', round, { ms: performance.now() - t });
        t = performance.now();
        const w = ebpfApply(x.ebpf, [big]);
        push('ebpf', 'apply 10000 entries', round, { ms: performance.now() - t, writes: w.writes });
        said.push(`eBPF apply ${(performance.now() - t).toFixed(0)} ms`);
        t = performance.now();
        const w2 = ebpfApply(x.ebpf, [big]);
        push('ebpf', 're-apply 10000 entries (in sync)', round, { ms: performance.now() - t, writes: w2.writes });
        t = performance.now();
        ebpfApply(x.ebpf, []);
        push('ebpf', 'remove 10000 entries', round, { ms: performance.now() - t });
      } catch (e) {
        fail('ebpf', 'apply 10000 entries', round, e);
      }
    }
    if (!x.unavailable.has('iptables')) {
      try {
        x.use('direct');
        const t = performance.now();
        x.iptApply(big);
        push('iptables', 'apply 10000 entries', round, { ms: performance.now() - t });
        said.push(`iptables apply ${(performance.now() - t).toFixed(0)} ms`);
        x.iptCleanup();
      } catch (e) {
        fail('iptables', 'apply 10000 entries', round, e);
        try {
          x.iptCleanup();
        } catch {
          // reported by the next use()
        }
      }
    }
    // Node and the CLI alone (what every agent start pays before meshredir does anything).
    try {
      const t = performance.now();
      execFileSync(process.execPath, [o.cli, '--version'], { stdio: 'ignore' });
      push('node', 'node + CLI start (--version)', round, { ms: performance.now() - t });
    } catch (e) {
      fail('node', 'node + CLI start (--version)', round, e);
    }
    if (!x.unavailable.has('ebpf')) {
      x.use('direct'); // the bench's own programs off: the agent's are the only ones
      const dir = mkdtempSync(join(tmpdir(), 'meshredir-bench-policies-'));
      const bpffs = `${lab.bpffs}-agent`;
      try {
        writeFileSync(
          join(dir, 'p.yaml'),
          `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: a }\nspec:\n  cgroup: ${app}\n  proxy: { outbound: "${SERVER}" }\n`,
        );
        const t = performance.now();
        const agent = spawn(
          process.execPath,
          [
            o.cli,
            'agent',
            '--policies',
            dir,
            '--cgroup-root',
            lab.cgRoot,
            '--bpffs',
            bpffs,
            '--mode',
            'ebpf',
            '--state-dir',
            `${dir}-state`,
            '--cleanup-on-exit',
          ],
          { stdio: ['ignore', 'ignore', 'pipe'] },
        );
        let err = '';
        const exited = new Promise<void>((r) => agent.on('exit', () => r()));
        try {
          await new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`agent not ready after 60 s: ${err.slice(-300)}`)), 60_000);
            agent.stderr!.on('data', (d: Buffer) => {
              err += d.toString();
              if (err.includes('redirect-ready')) {
                clearTimeout(timer);
                resolve();
              }
            });
            agent.on('exit', (c) => {
              clearTimeout(timer);
              reject(new Error(`agent exited ${c}: ${err.slice(-300)}`));
            });
          });
          const ready = performance.now() - t;
          await new Promise((r) => setTimeout(r, 500));
          const rss = lab.rss(agent.pid!);
          push('ebpf', 'agent start to redirect-ready', round, { ms: ready });
          push('ebpf', 'agent RSS', round, { mib: rss / 1048576 });
          said.push(`agent ready in ${ready.toFixed(0)} ms, RSS ${(rss / 1048576).toFixed(0)} MiB`);
        } finally {
          if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
          await exited;
          // The agent removes its pins on exit (--cleanup-on-exit); a crashed one would leave them.
          if (existsSync(bpffs)) new EbpfMode({ bpffs }).cleanup({ force: true });
        }
      } catch (e) {
        fail('ebpf', 'agent start to redirect-ready', round, e);
      } finally {
        rmSync(dir, { recursive: true, force: true });
        rmSync(`${dir}-state`, { recursive: true, force: true });
      }
    }
    x.tick(`control plane, round ${round}: ${said.join(', ') || 'neither mode can run here (see missing)'}`);
  }
}

/** Plans and applies in one step, as the agent does. */
function ebpfApply(m: EbpfMode, policies: Policy[]) {
  return m.apply(m.plan(policies));
}

async function stop(p: LabProc): Promise<void> {
  if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
  await p.exited;
}
