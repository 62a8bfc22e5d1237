// bench.ts — `meshredir bench`: every mode measured in one run on one machine, modes interleaved
// round by round (A B C A B C …), medians and min–max, ratios to the direct path.
import { join } from 'node:path';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { Lab, type LabProc } from './lab.js';
import { EbpfMode } from '../modes/ebpf/ebpf.js';
import { IptablesMode } from '../modes/iptables/iptables.js';
import { parsePolicyText } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';

export const SCENARIOS = ['crr', 'scale', 'proxy', 'hop', 'control'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export interface BenchOptions {
  only: Scenario[];
  rounds: number;
  /** Seconds per measurement. */
  duration: number;
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
}

interface Load {
  rate: number;
  p50_us: number;
  p99_us: number;
  errors: number;
  requests: number;
  client_user: number;
  client_sys: number;
}

const D_REDIRECT = '10.250.0.99:80'; // nothing answers there: only a redirect reaches a server
const SERVER = '127.0.0.1:9000'; // the server next to the app (redirect-only and hop scenarios)
const UPSTREAM = '10.250.0.2:9000'; // the server in the upstream namespace (through-proxy scenario)

export async function runBench(o: BenchOptions): Promise<{ samples: Sample[]; env: Record<string, unknown> }> {
  const lab = new Lab();
  const samples: Sample[] = [];
  const ebpf = new EbpfMode({ bpffs: lab.bpffs, cgroupRoot: join(lab.cgMount, lab.cgRoot), object: o.object });
  const ipt = new IptablesMode({ stateFile: lab.stateFile, lockWait: 10 });
  const app = lab.cgroup('app');
  const srvCg = lab.cgroup('srv');
  const proxyCg = lab.cgroup('proxy');
  const steps = { done: 0, total: 0 };
  try {
    ebpf.ensureLoaded();
    const server = lab.spawn(srvCg, o.mrload, ['server', '0.0.0.0:9000']);
    await lab.waitListening(9000, server);
    const upstream = lab.spawn(srvCg, o.mrload, ['server', UPSTREAM], undefined, lab.upNs);
    await lab.waitListening(9000, upstream, lab.upNs);

    const policy = (p: { proxy: string; exclusions?: number; accelerate?: boolean }): Policy => {
      const excl = Array.from({ length: p.exclusions ?? 0 }, (_, i) => `"172.${16 + (i >> 16)}.${(i >> 8) & 255}.${i & 255}/32"`);
      const text = `apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: bench }
spec:
  cgroup: ${lab.cgroup('app')}
  netns: ${lab.netnsPath}
  accelerate: ${p.accelerate ? 'true' : 'false'}
  proxy: { outbound: "${p.proxy}", bypass: { cgroups: [${proxyCg}], uids: [1337] } }
  outbound: { excludeCidrs: [${excl.join(', ')}] }
`;
      const r = parsePolicyText(text, 'bench');
      if (r.errors.length) throw new Error(r.errors.map((e) => e.message).join('; '));
      return r.policies[0]!;
    };
    /** Puts exactly one mode in force for the app cgroup. */
    const iptApply = (p: Policy) => {
      const r = ipt.apply([p]);
      const bad = [...r.skipped.map((x) => x.reason), ...r.failed.map((x) => x.reason)];
      if (bad.length) throw new Error(`iptables mode did not apply the bench policy: ${bad.join('; ')}`);
    };
    const iptCleanup = () => {
      const bad = ipt.cleanup().filter((x) => x.outcome === 'failed');
      if (bad.length) throw new Error(`iptables cleanup failed: ${bad.map((x) => x.detail).join('; ')}`);
    };
    const use = (mode: string, p?: Policy) => {
      if (mode === 'iptables') {
        ebpf.applyPolicies([]);
        iptApply(p!);
      } else if (mode.startsWith('ebpf')) {
        iptCleanup();
        ebpf.applyPolicies([p!]);
      } else {
        iptCleanup();
        ebpf.applyPolicies([]);
      }
    };
    const load = async (target: string, kind: 'crr' | 'rr', conc: number, size = 1): Promise<Load> => {
      const out = await lab.run(app, o.mrload, ['client', target, kind, String(conc), String(o.duration), '0.3', String(size)]);
      try {
        return JSON.parse(out) as Load;
      } catch {
        throw new Error(`load generator (${kind} to ${target}) printed no result: ${JSON.stringify(out.slice(0, 300))}`);
      }
    };
    const tick = (what: string) => o.progress(`[${++steps.done}/${steps.total}] ${what}`);

    // Count the steps up front so progress can say how far along it is.
    const plan: Record<Scenario, number> = {
      crr: o.rounds * 3,
      scale: o.rounds * 3 * 2,
      proxy: o.rounds * 5 * 2,
      hop: o.rounds * 4 * 2,
      control: 3,
    };
    steps.total = o.only.reduce((a, s) => a + plan[s], 0);

    if (o.only.includes('crr')) {
      const p = policy({ proxy: SERVER });
      for (let round = 1; round <= o.rounds; round++) {
        for (const mode of ['direct', 'iptables', 'ebpf']) {
          use(mode, p);
          const r = await load(mode === 'direct' ? SERVER : D_REDIRECT, 'crr', 16);
          samples.push({ scenario: 'crr', mode, variant: '1B', round, metrics: { rate: r.rate, p50_us: r.p50_us, p99_us: r.p99_us, errors: r.errors, client_cpu: r.client_user + r.client_sys } });
          tick(`redirect-only CRR, ${mode}, round ${round}: ${Math.round(r.rate)} conn/s`);
        }
      }
    }

    if (o.only.includes('scale')) {
      const ps = new Map([0, 1000, 10000].map((n) => [n, policy({ proxy: SERVER, exclusions: n })]));
      for (let round = 1; round <= o.rounds; round++) {
        for (const n of [0, 1000, 10000]) {
          for (const mode of ['iptables', 'ebpf']) {
            use(mode, ps.get(n));
            const r = await load(D_REDIRECT, 'crr', 16);
            samples.push({ scenario: 'scale', mode, variant: String(n), round, metrics: { rate: r.rate, p50_us: r.p50_us, p99_us: r.p99_us, errors: r.errors } });
            tick(`CRR with ${n} exclusions, ${mode}, round ${round}: ${Math.round(r.rate)} conn/s`);
          }
        }
      }
    }

    let haproxy: LabProc | undefined;
    if (o.only.includes('proxy')) {
      const cfg = lab.writeTmp(
        'haproxy.cfg',
        ['global', '  maxconn 4096', '  nbthread 1', 'defaults', '  mode tcp', '  timeout connect 5s', '  timeout client 30s', '  timeout server 30s',
          'frontend transparent', '  bind 127.0.0.1:15001', '  default_backend orig', 'backend orig', '  server o 0.0.0.0:0',
          'frontend explicit', '  bind 127.0.0.1:15002', '  default_backend fixed', 'backend fixed', `  server s ${UPSTREAM}`, ''].join('\n'),
      );
      haproxy = lab.spawn(proxyCg, 'haproxy', ['-db', '-f', cfg], 1337);
      await lab.waitListening(15002, haproxy);
      const p = policy({ proxy: '127.0.0.1:15001' });
      const pa = policy({ proxy: '127.0.0.1:15001', accelerate: true });
      for (let round = 1; round <= o.rounds; round++) {
        for (const mode of ['direct', 'explicit', 'iptables', 'ebpf', 'ebpf+sk_msg']) {
          use(mode === 'explicit' ? 'direct' : mode, mode === 'ebpf+sk_msg' ? pa : p);
          const target = mode === 'explicit' ? '127.0.0.1:15002' : UPSTREAM;
          const crr = await load(target, 'crr', 16);
          samples.push({ scenario: 'proxy', mode, variant: 'crr', round, metrics: { rate: crr.rate, errors: crr.errors, client_cpu: crr.client_user + crr.client_sys } });
          tick(`through HAProxy, CRR, ${mode}, round ${round}: ${Math.round(crr.rate)} conn/s`);
          const rr = await load(target, 'rr', 1);
          samples.push({ scenario: 'proxy', mode, variant: 'rr', round, metrics: { rate: rr.rate, p50_us: rr.p50_us, p99_us: rr.p99_us, errors: rr.errors } });
          tick(`through HAProxy, RR, ${mode}, round ${round}: p50 ${rr.p50_us.toFixed(1)} µs`);
        }
      }
      await stop(haproxy);
    }

    if (o.only.includes('hop')) {
      // The app↔proxy hop alone: the "proxy" is the echo server itself, reached by redirection.
      const plain = policy({ proxy: SERVER });
      const fast = policy({ proxy: SERVER, accelerate: true });
      for (let round = 1; round <= o.rounds; round++) {
        for (const size of [64, 1024, 16384, 65536]) {
          for (const mode of ['ebpf', 'ebpf+sk_msg']) {
            use('ebpf', mode === 'ebpf' ? plain : fast);
            const rr = await load(D_REDIRECT, 'rr', 1, size);
            const stream = await load(D_REDIRECT, 'rr', 8, size); // 8 in flight: a stream-like load
            samples.push({ scenario: 'hop', mode, variant: `${size}B`, round, metrics: { p50_us: rr.p50_us, p99_us: rr.p99_us, rr_rate: rr.rate, mbytes_s: (stream.rate * size * 2) / 1e6, errors: rr.errors + stream.errors } });
            tick(`app↔proxy hop ${size} B, ${mode}, round ${round}: p50 ${rr.p50_us.toFixed(1)} µs, ${((stream.rate * size * 2) / 1e6).toFixed(0)} MB/s`);
          }
        }
      }
    }

    if (o.only.includes('control')) {
      use('direct');
      const big = policy({ proxy: SERVER, exclusions: 10000 });
      let t = performance.now();
      const w = ebpf.applyPolicies([big]);
      samples.push({ scenario: 'control', mode: 'ebpf', variant: 'apply 10000 entries', round: 1, metrics: { ms: performance.now() - t, writes: w.writes } });
      ebpf.applyPolicies([]);
      tick(`apply 10,000 map entries: ${(performance.now() - t).toFixed(0)} ms`);
      t = performance.now();
      iptApply(big);
      samples.push({ scenario: 'control', mode: 'iptables', variant: 'apply 10000 entries', round: 1, metrics: { ms: performance.now() - t } });
      iptCleanup();
      tick(`apply 10,000 iptables rules: ${(performance.now() - t).toFixed(0)} ms`);

      const dir = mkdtempSync(join(tmpdir(), 'meshredir-bench-policies-'));
      const bpffs = `${lab.bpffs}-agent`;
      try {
        writeFileSync(join(dir, 'p.yaml'), `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: a }\nspec:\n  cgroup: ${app}\n  proxy: { outbound: "${SERVER}" }\n`);
        t = performance.now();
        const { spawn } = await import('node:child_process');
        const agent = spawn(process.execPath, [o.cli, 'agent', '--policies', dir, '--cgroup-root', lab.cgRoot, '--bpffs', bpffs, '--mode', 'ebpf', '--cleanup-on-exit'], { stdio: ['ignore', 'ignore', 'pipe'] });
        let err = '';
        await new Promise<void>((resolve, reject) => {
          agent.stderr!.on('data', (d: Buffer) => {
            err += d.toString();
            if (err.includes('redirect-ready')) resolve();
          });
          agent.on('exit', (c) => reject(new Error(`agent exited ${c}: ${err}`)));
        });
        const ready = performance.now() - t;
        await new Promise((r) => setTimeout(r, 500));
        const rss = lab.rss(agent.pid!);
        agent.kill('SIGTERM');
        await new Promise((r) => agent.on('exit', r));
        samples.push({ scenario: 'control', mode: 'ebpf', variant: 'agent start to redirect-ready', round: 1, metrics: { ms: ready } });
        samples.push({ scenario: 'control', mode: 'ebpf', variant: 'agent RSS', round: 1, metrics: { mib: rss / 1048576 } });
        tick(`agent: ready in ${ready.toFixed(0)} ms, RSS ${(rss / 1048576).toFixed(1)} MiB`);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }
    return { samples, env: { netns: lab.ns, cgroup: lab.cgRoot } };
  } finally {
    try {
      ipt.cleanup();
    } finally {
      ebpf.cleanup();
      await lab.teardown();
    }
  }
}

async function stop(p: LabProc): Promise<void> {
  p.child.kill('SIGTERM');
  await p.exited;
}
