// inbound.ts — the bench's inbound scenario (`--only inbound`): what intercepting a pod's incoming
// connections costs, per mechanism. A client in the bench's app netns connects to the pod (the upstream
// netns, 10.250.0.2): direct to the app (no interception), or to a port nothing listens on, taken to the
// pod's inbound listener by iptables REDIRECT (nat), iptables TPROXY (mangle + fwmark routing) or
// sk_lookup (eBPF), each with 0, 1,000 and 10,000 PREROUTING rules ahead of it (the policy's bypass
// sources; eBPF: LPM entries). The listener is an echo server, so only interception is measured, not a
// proxy's forwarding. Modes interleaved and rotated per round; every sample carries the counters of the
// mode in force and is rejected when they show it did not act.
import { join } from 'node:path';
import type { NetnsStatus } from '../modes/iptables/status.js';
import { inboundCounters } from '../modes/ebpf/inbound-status.js';
import type { Policy } from '../policy/schema.js';
import { sampleOf, type LoadResult, type Counters } from './checks.js';
import { benchPolicy, podModes } from './pod-modes.js';
import type { Lab, LabProc } from './lab.js';
import type { Sample, Missing } from './types.js';

export const INBOUND_MODES = ['direct', 'iptables', 'iptables+tproxy', 'sk_lookup'] as const;
export type InboundMode = (typeof INBOUND_MODES)[number];
export const INBOUND_RULES = [0, 1000, 10000];
/** Measurements per round with `modes` runnable: each rule count × mode × (crr, rr). */
export const inboundSteps = (modes: number) => INBOUND_RULES.length * modes * 2;

const POD = '10.250.0.2';
const APP = `${POD}:9100`; // the app: what a direct connection reaches
const INTERCEPTED = `${POD}:8080`; // nothing listens there: only an interception answers
const PORT = 15006; // the pod's inbound listener (an echo server), on the wildcard address

export interface InboundContext {
  lab: Lab;
  rounds: number;
  duration: number;
  warmup: number;
  mrload: string;
  object: string;
  /** The client's cgroup (in the app netns). */
  app: string;
  /** Modes of the outbound scenarios that cannot run here (ebpf, iptables), with why. */
  unavailable: Map<string, string>;
  samples: Sample[];
  missing: Missing[];
  tick: (what: string) => void;
}

/** Why an inbound sample must not count (empty: valid). Pure. */
export function judgeInbound(mode: string, l: LoadResult, c: Counters): string[] {
  const why: string[] = [];
  if (l.errors > 0)
    why.push(`${l.errors} client error(s): ${l.err_connect} connect, ${l.err_reset} reset/EOF, ${l.err_other} other`);
  if (l.requests === 0) why.push('no request completed');
  const n = l.conns;
  const took = c.intercepted ?? 0;
  if (mode !== 'direct' && took < n)
    why.push(`${mode} intercepted ${took} of the ${n} connections that reached the listener`);
  if (mode === 'sk_lookup' && (c.err_assign ?? 0) > 0) why.push(`err_assign ${c.err_assign}`);
  return why;
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 300);

export async function runInbound(x: InboundContext): Promise<void> {
  const { lab } = x;
  inForce = '';
  const pod = lab.cgroup('inpod');
  const proxyCg = lab.cgroup('inpod/proxy');
  const appCg = lab.cgroup('inpod/app');
  // The eBPF programs attach at the pod's cgroup: the client's connects run no hook in any mode.
  const modes = podModes(lab, pod, x.object, 'in');
  const { ebpf, ipt } = modes;
  const policy = (n: number, interception: 'redirect' | 'tproxy'): Policy => {
    const srcs = Array.from({ length: n }, (_, i) => `"172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32"`);
    return benchPolicy(
      `apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: bench-in }
spec:
  cgroup: ${pod}
  netns: ${join('/run/netns', lab.upNs)}
  proxy: { inbound: ${PORT}, bypass: { cgroups: [${proxyCg}] } }
  inbound: { interception: ${interception}, bypassSources: [${srcs.join(', ')}] }
`,
      'bench-in',
    );
  };
  const off = () => {
    inForce = '';
    modes.off();
  };
  const use = (mode: InboundMode, n: number) => {
    off();
    if (mode === 'direct') return;
    const r =
      mode === 'sk_lookup'
        ? ebpf.apply(ebpf.plan({ policies: [policy(n, 'redirect')] }))
        : ipt.apply(ipt.plan({ policies: [policy(n, mode === 'iptables' ? 'redirect' : 'tproxy')] }));
    const bad = [
      ...r.policies.filter((p) => p.state !== 'applied').map((p) => p.reason ?? p.state),
      ...r.notes.filter((m) => m.level === 'error' || m.event === 'inbound_no_listener').map((m) => m.message),
    ];
    if (bad.length) throw new Error(`${mode}: not applied: ${bad.join('; ')}`);
  };
  const counters = (mode: InboundMode): Counters => {
    if (mode === 'sk_lookup') {
      const slot = ebpf.pins.slots().get('bench-in')!;
      return { ...inboundCounters(ebpf.pins, [slot]).get(slot)! };
    }
    if (mode === 'direct') return {};
    const ns = ipt.status().json.iptables as NetnsStatus[];
    return { intercepted: ns.reduce((a, e) => a + Object.values(e.inboundRedirected).reduce((p, q) => p + q, 0), 0) };
  };

  // ---- which modes exist here: tried for real, never faked ----
  const why = new Map<InboundMode, string>();
  if (x.unavailable.has('ebpf')) why.set('sk_lookup', x.unavailable.get('ebpf')!);
  if (x.unavailable.has('iptables')) {
    why.set('iptables', x.unavailable.get('iptables')!);
    why.set('iptables+tproxy', x.unavailable.get('iptables')!);
  }
  const app = lab.start(appCg, x.mrload, ['server', APP], undefined, lab.upNs);
  const listener = lab.start(proxyCg, x.mrload, ['server', `0.0.0.0:${PORT}`, 'transparent'], undefined, lab.upNs);
  try {
    await lab.listening(9100, app, lab.upNs);
    await lab.listening(PORT, listener, lab.upNs);
    for (const m of INBOUND_MODES.filter((m) => m !== 'direct' && !why.has(m))) {
      try {
        use(m, 0);
      } catch (e) {
        why.set(m, `cannot intercept here: ${msg(e)}`);
      }
    }
    off();
    for (const [mode, reason] of why) x.missing.push({ scenario: 'inbound', mode, reason });
    const modes = INBOUND_MODES.filter((m) => !why.has(m));

    for (let round = 1; round <= x.rounds; round++) {
      for (const n of INBOUND_RULES) {
        const k = (round - 1) % modes.length;
        for (const mode of [...modes.slice(k), ...modes.slice(0, k)]) {
          for (const kind of ['crr', 'rr'] as const) {
            const s = await measure(x, { mode, kind, n, round }, () => use(mode, n), counters, { app, listener });
            const said = s.invalid
              ? `REJECTED (${s.invalid.join('; ')})`
              : kind === 'crr'
                ? `${Math.round(s.metrics.rate ?? 0)} conn/s`
                : `p50 ${(s.metrics.p50_us ?? 0).toFixed(1)} µs`;
            x.tick(`inbound ${kind.toUpperCase()}, ${n} rules, ${mode}, round ${round}: ${said}`);
          }
        }
      }
    }
  } finally {
    try {
      off();
    } finally {
      for (const p of [app, listener]) {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
        await p.exited;
      }
    }
  }
}

/** What is in force now ("mode/rules"; '' after a failure or a removal): applied anew only when it changes. */
let inForce = '';

/** One measurement: the mode in force, its counters around the load, the listener's CPU, the verdict. */
async function measure(
  x: InboundContext,
  s: { mode: InboundMode; kind: 'crr' | 'rr'; n: number; round: number },
  apply: () => void,
  counters: (m: InboundMode) => Counters,
  procs: { app: LabProc; listener: LabProc },
): Promise<Sample> {
  const sample: Sample = {
    scenario: 'inbound',
    mode: s.mode,
    variant: `${s.kind}, ${s.n} rules`,
    round: s.round,
    metrics: {},
  };
  try {
    const want = `${s.mode}/${s.n}`;
    if (inForce !== want) {
      inForce = '';
      apply();
      inForce = want;
    }
    const c0 = counters(s.mode);
    const server = s.mode === 'direct' ? procs.app : procs.listener;
    const p0 = x.lab.cpu(server.child.pid!);
    const m0 = x.lab.machine();
    const t0 = performance.now();
    const target = s.mode === 'direct' ? APP : INTERCEPTED;
    const out = await x.lab.run(
      x.lab.ns,
      x.app,
      x.mrload,
      ['client', target, s.kind, s.kind === 'crr' ? '16' : '1', String(x.duration), String(x.warmup), '1'],
      { timeoutMs: 120_000 },
    );
    const wall = (performance.now() - t0) / 1000;
    const m1 = x.lab.machine();
    const p1 = x.lab.cpu(server.child.pid!);
    const c1 = counters(s.mode);
    const l = JSON.parse(out) as LoadResult;
    const got = sampleOf(l, { before: c0, after: c1 }, { wall, server: [p0, p1], machine: [m0, m1] });
    sample.counters = got.counters;
    sample.metrics = got.metrics;
    const why = judgeInbound(s.mode, l, sample.counters);
    if (why.length) sample.invalid = why;
  } catch (e) {
    inForce = '';
    sample.invalid = [`failed: ${msg(e)}`];
  }
  x.samples.push(sample);
  return sample;
}
