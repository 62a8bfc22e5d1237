// run.ts — what every bench scenario shares in one run: the lab's cgroups, the eBPF and iptables modes
// with exactly one of them in force at a time, which modes can run here, the bench policy, one
// measurement (load, counters, CPU, verdict) and the progress line. Scenarios (one file each, listed in
// scenarios.ts) get a Run and add their samples to it.
import { join } from 'node:path';
import { existsSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import type { Lab, LabProc, Placement } from './lab.js';
import { judge, combine, EBPF_COUNTERS, type LoadResult, type Counters } from './checks.js';
import { EbpfMode } from '../modes/ebpf/index.js';
import { IptablesMode } from '../modes/iptables/index.js';
import type { NetnsStatus } from '../modes/iptables/status.js';
import { stats } from '../modes/ebpf/counters.js';
import { parsePolicyText } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import { isDisturbed } from './paired.js';
import { BYPASSED, WARMUP, HOP_SIZES, baseMode, type BenchOptions, type Sample, type Missing } from './types.js';

export const D_REDIRECT = '10.250.0.99:80'; // nothing answers there: only a redirect reaches a server
export const SERVER = '127.0.0.1:9000'; // the server next to the app (redirect-only scenarios)
export const HOP_ECHO = '127.0.0.1:9001'; // the hop's "proxy": an echo server in the policy's proxy cgroup
export const HOP_SINK = '127.0.0.1:9002'; // … and a sink there, for the one-direction stream
export const UPSTREAM = '10.250.0.2:9000'; // the server in the upstream namespace (through-proxy scenario)
/** The eBPF programs attached with the policy, the client in a cgroup they do not cover (dialling the
 * server itself): what having the programs attached costs everyone else (the server side still runs
 * them). */
export const UNCOVERED = 'ebpf (client uncovered)';
/** eBPF with `meshredir trace --json` running beside it (every decision written to the ring and read):
 * what a running trace costs. Without one the programs write nothing (crr's ebpf mode). */
export const TRACED = 'ebpf (traced)';

/** One scenario of the bench, registered by name in scenarios.ts. */
export interface ScenarioDef {
  /** The modes it compares, interleaved round by round (none: it times the control plane itself). */
  modes: readonly string[];
  /** Measurements per round with `modes` of its modes runnable (for progress and its estimate). */
  steps: (modes: number, hopSizes: readonly number[]) => number;
  /** Why a mode cannot run in this scenario beyond the mode's own availability (a missing tool). */
  missing?: (mode: string) => string | undefined;
  /** Whether its processes are placed on CPUs by --placement (else where the scheduler puts them). */
  pinned?: boolean;
  /** Whether `--aa` may add the A/A copy of a mode (its code runs a mode by baseMode(mode)). */
  aa?: boolean;
  /** Measures, adding to r.samples; `modes` are those of its modes that can run here. */
  run: (r: Run, modes: string[]) => Promise<void>;
}

/** Plans and applies in one step, as the agent does. */
export function ebpfApply(m: EbpfMode, policies: Policy[]) {
  return m.apply(m.plan({ policies }));
}

import { msg } from './progress.js';
export { rotate, msg, stop, say, fastNote } from './progress.js';

type LoadKind = 'crr' | 'rr' | 'stream';
/** How often a disturbed measurement is made again by default (see measure(); --retries). */
const RETRIES = 2;

export class Run {
  readonly samples: Sample[] = [];
  readonly missing: Missing[] = [];
  readonly hopSizes: number[];
  /** --placement: where the processes of the scenarios that are pinned run (lab.ts). */
  readonly placement: Placement;
  readonly ebpf: EbpfMode;
  readonly ipt: IptablesMode;
  /** Where the programs attach (att/), and outside it (free/: a client the programs do not cover). */
  readonly attach: string;
  readonly free: string;
  /** The clients' cgroup, the servers', and the policy's proxy (bypass) cgroup, all below `attach`. */
  readonly app: string;
  readonly srvCg: string;
  readonly proxyCg: string;
  /** Modes that cannot run here (ebpf, ebpf+sk_msg, iptables), with why: tried for real in probe(). */
  readonly unavailable = new Map<string, string>();
  /** The redirect-only scenarios' server (SERVER, in srvCg), started by the run before any scenario. */
  server?: LabProc;
  readonly started = performance.now();
  private readonly steps = { done: 0, total: 0 };
  private ebpfLoaded = false;
  private iptInForce = false;

  constructor(
    readonly o: BenchOptions,
    readonly lab: Lab,
  ) {
    this.hopSizes = o.hopSizes ?? HOP_SIZES;
    this.placement = o.placement ?? 'split';
    lab.placement = this.placement; // the redirect-only server, started before any scenario
    this.attach = lab.cgroup('att');
    this.free = lab.cgroup('free');
    this.ebpf = new EbpfMode({
      bpffs: lab.bpffs,
      attach: { cgroupRoot: join(lab.cgMount, this.attach), object: o.object },
    });
    this.ipt = new IptablesMode({ iptablesState: lab.stateFile, lockWait: 10 });
    this.app = lab.cgroup('att/app');
    this.srvCg = lab.cgroup('att/srv');
    this.proxyCg = lab.cgroup('att/proxy');
  }

  /** The bench policy: the app's cgroup and netns redirected to `proxy`, with `exclusions` /32s excluded. */
  policy(p: { proxy: string; exclusions?: number; accelerate?: boolean }): Policy {
    const excl = Array.from(
      { length: p.exclusions ?? 0 },
      (_, i) => `"172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32"`,
    );
    const text = `apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: bench }
spec:
  cgroup: ${this.app}
  netns: ${this.lab.netnsPath}
  accelerate: ${p.accelerate ? 'true' : 'false'}
  proxy: { outbound: "${p.proxy}", bypass: { cgroups: [${this.proxyCg}], uids: [1337] } }
  outbound: { excludeCidrs: [${excl.join(', ')}] }
`;
    const r = parsePolicyText(text, 'bench');
    if (r.errors.length) throw new Error(r.errors.map((e) => e.message).join('; '));
    return r.policies[0]!;
  }

  /** Which modes exist here: each is tried for real; what fails is reported, not faked. */
  probe(): void {
    try {
      const skmsg = ebpfApply(this.ebpf, []).notes.find(
        (n) => n.event === 'unavailable' && n.fields?.program === 'mr_skmsg',
      );
      this.ebpfLoaded = true;
      if (skmsg) this.unavailable.set('ebpf+sk_msg', `no sk_msg link on this kernel (needs 6.10): ${skmsg.message}`);
    } catch (e) {
      for (const m of ['ebpf', 'ebpf+sk_msg', TRACED, UNCOVERED, BYPASSED])
        this.unavailable.set(m, `the eBPF mode cannot load here: ${msg(e)}`);
    }
    try {
      this.iptApply(this.policy({ proxy: SERVER }));
      this.iptCleanup();
    } catch (e) {
      this.unavailable.set('iptables', `the iptables mode cannot apply here: ${msg(e)}`);
      try {
        this.ipt.cleanup();
      } catch {
        // nothing applied
      }
    }
  }

  iptApply(p: Policy): void {
    const r = this.ipt.apply(this.ipt.plan({ policies: [p] }));
    const bad = r.policies.filter((x) => x.state !== 'applied').map((x) => x.reason ?? x.state);
    if (bad.length) throw new Error(`iptables mode did not apply the bench policy: ${bad.join('; ')}`);
  }

  iptCleanup(): void {
    const bad = this.ipt.cleanup().failed;
    if (bad.length) throw new Error(`iptables cleanup failed: ${bad.join('; ')}`);
    const left = this.lab.natRulesOfOurs();
    if (left.length) throw new Error(`MESHREDIR rules still in the bench netns after cleanup (${left.join(', ')})`);
  }

  /** Tells the run that the eBPF programs were loaded (or removed) outside use(). */
  setLoaded(v: boolean): void {
    this.ebpfLoaded = v;
  }

  private detachEbpf(): void {
    // By the pins, not the flag alone: a load that failed half-way may have attached some links.
    if (!this.ebpfLoaded && !existsSync(this.lab.bpffs)) return;
    this.ebpf.cleanup({ force: true });
    this.ebpfLoaded = false;
    if (existsSync(this.lab.bpffs)) throw new Error(`eBPF pins still under ${this.lab.bpffs} after cleanup`);
  }

  /** Exactly one mode in force; direct and iptables runs have no eBPF program attached. */
  use(mode: string, p?: Policy): void {
    if (mode !== 'iptables' && this.iptInForce) {
      this.iptCleanup();
      this.iptInForce = false;
    }
    if (!mode.startsWith('ebpf')) this.detachEbpf();
    if (mode === 'iptables') {
      this.iptInForce = true; // before applying: a half-applied set must be cleaned up too
      this.iptApply(p!);
    } else if (mode.startsWith('ebpf')) {
      ebpfApply(this.ebpf, [p!]);
      this.ebpfLoaded = true;
    }
  }

  private counters(mode: string): Counters {
    if (mode.startsWith('ebpf')) {
      const out: Counters = Object.fromEntries(EBPF_COUNTERS.map((k) => [k, 0]));
      for (const s of stats(this.ebpf.pins).values()) for (const k of EBPF_COUNTERS) out[k]! += Number(s[k]);
      return out;
    }
    if (mode === 'iptables') {
      const netns = this.ipt.status().json.iptables as NetnsStatus[];
      const n = netns.reduce((a, e) => a + Object.values(e.redirected).reduce((x, y) => x + y, 0), 0);
      return { ipt_redirected: n };
    }
    return {};
  }

  /** The i-th load generator of a measurement (i > 0: the others side by side; lab.ts's cpuOf). */
  private async client(
    i: number,
    target: string,
    kind: LoadKind,
    conc: number,
    size = 1,
    cg = this.app,
  ): Promise<LoadResult> {
    const o = this.o;
    const [cmd, args] = this.lab.pinned(i ? 'client2' : 'client', o.mrload, [
      ...['client', target, kind, String(conc), String(o.duration), String(WARMUP), String(size)],
    ]);
    const out = await this.lab.run(this.lab.ns, cg, cmd, args, { timeoutMs: 120_000 });
    try {
      return JSON.parse(out) as LoadResult;
    } catch {
      throw new Error(`load generator (${kind} to ${target}) printed no result: ${JSON.stringify(out.slice(0, 300))}`);
    }
  }

  /**
   * One measurement: puts the mode in force, reads its counters, runs `clients` load generators side
   * by side, reads the counters and the CPU time of the watched processes and of the machine again,
   * and judges the sample. A failure anywhere is a rejected sample, not the end of the run. A sample
   * during which something else took CPU where the bench runs (paired.ts: DISTURBED) is measured again,
   * up to --retries times (RETRIES by default); the least disturbed is kept, with `retries` saying how many were made.
   */
  async measure(...a: Parameters<Run['once']>): Promise<Sample> {
    let best = await this.once(...a);
    for (let i = 1; i <= (this.o.retries ?? RETRIES) && !best.invalid && isDisturbed(best); i++) {
      const x = await this.once(...a);
      x.metrics.retries = i;
      // A retry that failed never replaces a sample that was only disturbed.
      if (!x.invalid && x.metrics.others_cpu! < best.metrics.others_cpu!) best = x;
      else best.metrics.retries = i;
    }
    this.samples.push(best);
    return best;
  }

  private async once(
    s: { scenario: string; mode: string; variant: string; round: number },
    setup: { policyMode?: string; policy?: Policy },
    load: { target: string; kind: LoadKind; conc: number; size?: number; clients?: number; cg?: string },
    watch: Record<string, { child: { pid?: number | undefined } } | undefined>,
    metrics: (l: LoadResult) => Record<string, number>,
    opts: { viaProxy?: boolean } = {},
  ): Promise<Sample> {
    const lab = this.lab;
    const sample: Sample = { ...s, metrics: {} };
    const mode = baseMode(s.mode); // an A/A copy is measured, counted and judged as its mode
    try {
      this.use(setup.policyMode ?? mode, setup.policy);
      const c0 = this.counters(mode);
      const procs = Object.entries(watch).filter((e): e is [string, { child: { pid: number } }] => !!e[1]?.child.pid);
      const p0 = procs.map(([, p]) => lab.cpu(p.child.pid));
      const g0 = procs.map(([, p]) => lab.sched(p.child.pid));
      const m0 = lab.machine();
      const b0 = lab.busyWhereWeRun();
      const t0 = performance.now();
      const rs = await Promise.all(
        Array.from({ length: load.clients ?? 1 }, (_, i) =>
          this.client(i, load.target, load.kind, load.conc, load.size, load.cg),
        ),
      );
      const wall = (performance.now() - t0) / 1000;
      const m1 = lab.machine();
      const b1 = lab.busyWhereWeRun();
      const p1 = procs.map(([, p]) => lab.cpu(p.child.pid));
      const g1 = procs.map(([, p]) => lab.sched(p.child.pid));
      const c1 = this.counters(mode);
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
        // Where the scheduler ran things (not summarised; in the JSON, for finding the bench's noise).
        ...(l.migrations === undefined ? {} : { client_migr: l.migrations, client_nivcsw: l.nivcsw ?? 0 }),
        ...Object.fromEntries(procs.map(([name], i) => [`${name}_migr`, g1[i]!.migrations - g0[i]!.migrations])),
        ...Object.fromEntries(procs.map(([name], i) => [`${name}_on`, g1[i]!.cpu])),
      };
      // Cores busy with anything but the client and the watched processes on the CPUs they run on
      // (another job, or interrupt work charged to nobody): what makes a sample disturbed (paired.ts).
      const own = l.client_user + l.client_sys + procs.reduce((a, [name]) => a + sample.metrics[`${name}_cpu`]!, 0);
      sample.metrics.others_cpu = Math.max(0, (b1 - b0) / wall - own);
      const why = judge(mode, l, sample.counters, opts);
      if (why.length) sample.invalid = why;
    } catch (e) {
      sample.invalid = [`failed: ${msg(e)}`];
    }
    return sample;
  }

  /** Sets how many measurements the run will make (once the modes that can run are known). */
  plan(total: number): void {
    this.steps.total = total;
  }

  /** One measurement done: its progress line, with an estimate of the time left. */
  tick(what: string): void {
    const steps = this.steps;
    steps.done++;
    const el = (performance.now() - this.started) / 1000;
    const eta =
      steps.done < steps.total ? `, ~${Math.round((el / steps.done) * (steps.total - steps.done))} s left` : '';
    this.o.progress(`[${steps.done}/${steps.total}${eta}] ${what}`);
  }

  /** The fast path's flow-control bound is the peer netns's tcp_rmem maximum (at least 4 MiB). */
  tcpRmem(): string {
    return execFileSync('ip', ['netns', 'exec', this.lab.ns, 'sysctl', '-n', 'net.ipv4.tcp_rmem'], {
      encoding: 'utf8',
    })
      .trim()
      .split(/\s+/)
      .join(' ');
  }

  /** Removes whatever a mode left in force, then the lab; also when the run failed. */
  async close(): Promise<void> {
    try {
      this.ipt.cleanup();
    } finally {
      try {
        this.ebpf.cleanup({ force: true });
      } finally {
        await this.lab.teardown();
      }
    }
  }
}

const delta = (a: Counters, b: Counters): Counters =>
  Object.fromEntries(Object.keys(b).map((k) => [k, b[k]! - (a[k] ?? 0)]));
