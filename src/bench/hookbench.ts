// hookbench.ts — the bench's `hooks` scenario: per connection (or request), how often each of
// meshredir's hooks runs, for which callback, on which side (client, proxy, server), and what it costs,
// with the programs of an agent started for it (this build's, or another build's CLI given with
// --hooks-agent, for before/after). Two agents, one after the other: the plain object, measured with
// BPF run-time statistics (calls and ns per program), then the profiling build of the same sources
// (build/meshredir-prof.bpf.o: calls by callback and side; its counting would inflate the times).
// The fast path's policy accelerates only while its own variant runs, as a node with no accelerating
// policy would (mr_setsockopt, the kTLS guard, is attached only while one accelerates).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { tmpdir } from 'node:os';
import type { LabProc } from './lab.js';
import { startHaproxy } from './haproxy.js';
import type { Sample } from './types.js';
import { D_REDIRECT, SERVER, UPSTREAM, HOP_ECHO, rotate, type Run, type ScenarioDef } from './run.js';
import type { LoadResult } from './checks.js';
import { attachedPrograms, costs, snapshot, HookCounts } from './hooks.js';
import { enableStats } from '../bpf/prog.js';
import { EbpfMode } from '../modes/ebpf/index.js';
import { cgroupId } from '../util/host.js';
import { Pins } from '../modes/ebpf/pins.js';
import { PolicyFlag } from '../bpf/abi.js';

export const HOOK_VARIANTS = ['redirect-only', 'client uncovered', 'through HAProxy', 'fast path rr 1KiB'] as const;

/** The scenario: one mode, the agent's programs (this build's, or --hooks-agent's). */
export const hooks: ScenarioDef = {
  modes: ['ebpf'],
  steps: () => HOOK_VARIANTS.length * 2, // a timing pass and a counting pass
  missing: (mode) => (mode === 'ebpf' && !haproxyHere() ? 'haproxy is not installed' : undefined),
  run: (r) => hooksScenario(r),
};

function haproxyHere(): boolean {
  try {
    execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
const SIDES = ['client', 'proxy', 'server', 'other'] as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function hooksScenario(x: Run): Promise<void> {
  const { o, lab } = x;
  const cg = { attach: x.attach, srv: x.srvCg, proxy: x.proxyCg, free: x.free };
  const addr = { redirect: D_REDIRECT, server: SERVER, upstream: UPSTREAM, echo: HOP_ECHO };
  const agentCli = o.hooksAgent ?? o.cli;
  const mode = o.hooksAgent ? `ebpf (${o.hooksAgent})` : 'ebpf';
  x.use('direct'); // the agent's programs are the only ones
  // One policy per variant, each on its own client cgroup.
  const cgs = {
    'redirect-only': lab.cgroup('att/hk-app'),
    'through HAProxy': lab.cgroup('att/hk-haproxy'),
    'fast path rr 1KiB': lab.cgroup('att/hk-fast'),
    'client uncovered': cg.free,
  };
  const dir = mkdtempSync(join(tmpdir(), 'meshredir-bench-hooks-'));
  const bpffs = `${lab.bpffs}-hooks`;
  const procs: LabProc[] = [];
  const pol = (name: string, cgroup: string, proxy: string, accelerate = false) =>
    writeFileSync(
      join(dir, `${name}.yaml`),
      `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ${name} }\nspec:\n  cgroup: ${cgroup}\n  netns: ${lab.netnsPath}\n  accelerate: ${accelerate}\n  proxy: { outbound: "${proxy}", bypass: { cgroups: [${cg.proxy}], uids: [1337] } }\n`,
    );
  pol('hooks-rr', cgs['redirect-only'], addr.server);
  pol('hooks-haproxy', cgs['through HAProxy'], '127.0.0.1:15001');
  pol('hooks-fast', cgs['fast path rr 1KiB'], addr.echo, false);
  /** Makes the fast path's policy accelerate for its variant only; waits until the agent applied it (and
   * attached or detached the kTLS guard, in a build that attaches it on demand: it pins its program). */
  const fastFor = async (v: (typeof HOOK_VARIANTS)[number]) => {
    const on = v === 'fast path rr 1KiB';
    pol('hooks-fast', cgs['fast path rr 1KiB'], addr.echo, on);
    const pins = new Pins(bpffs);
    const applied = () => {
      const slot = pins.slots().get('hooks-fast');
      const flags = pins.entries<[number, { flags: number }][]>('mr_policies').find(([s]) => s === slot)?.[1].flags;
      const guard = !existsSync(pins.progPin('mr_setsockopt')) || existsSync(pins.linkPin('mr_setsockopt')) === on;
      return flags !== undefined && Boolean(flags & PolicyFlag.ACCELERATE) === on && guard;
    };
    for (let i = 0; i < 200 && !applied(); i++) await sleep(50);
    if (!applied()) throw new Error(`hooks-fast: accelerate ${on} not applied after 10 s`);
  };
  /** Starts the agent (with `object`, or its own default); resolves once it is redirect-ready. */
  const startAgent = async (object?: string) => {
    const agent = spawn(
      process.execPath,
      [
        agentCli,
        'agent',
        '--policies',
        dir,
        '--cgroup-root',
        cg.attach,
        '--bpffs',
        bpffs,
        '--state-dir',
        join(dir, 'state'),
        '--mode',
        'ebpf',
        '--interval',
        '600',
        '--cleanup-on-exit',
        ...(object ? ['--object', object] : []),
      ],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    let err = '';
    agent.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const exited = new Promise<void>((r) => agent.on('exit', () => r()));
    const stop = async () => {
      if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
      await exited;
      if (existsSync(bpffs)) new EbpfMode({ bpffs }).cleanup({ force: true });
    };
    for (let i = 0; i < 600 && !err.includes('redirect-ready'); i++) {
      if (agent.exitCode !== null) break;
      await sleep(50);
    }
    if (!err.includes('redirect-ready')) {
      await stop();
      throw new Error(`hooks agent not ready: ${err.slice(-300)}`);
    }
    return stop;
  };
  const profObject = o.hooksAgent
    ? join(dirname(o.hooksAgent), '..', '..', 'build', 'meshredir-prof.bpf.o')
    : (o.hookprof ?? join(dirname(o.object), 'meshredir-prof.bpf.o'));
  try {
    // The far ends: HAProxy (as in the proxy scenario) and its upstream, the fast path's echo server.
    const upstream = lab.start(cg.srv, o.mrload, ['server', addr.upstream], undefined, lab.upNs);
    procs.push(upstream);
    const echo = lab.start(cg.proxy, o.mrload, ['server', addr.echo]);
    procs.push(echo);
    const haproxy = startHaproxy(lab, cg.proxy, 'hooks-haproxy.cfg');
    procs.push(haproxy);
    await lab.listening(9000, upstream, lab.upNs);
    await lab.listening(Number(addr.echo.split(':')[1]), echo);
    await lab.listening(15001, haproxy);
    const side = sideOf({
      client: [...Object.values(cgs)],
      proxy: [cg.proxy],
      server: [cg.srv],
      mount: lab.cgMount,
      // A handshake's request socket is counted under its listener's port.
      ports: {
        server: [Number(addr.server.split(':')[1]), Number(addr.upstream.split(':')[1])],
        proxy: [15001, Number(addr.echo.split(':')[1])],
      },
    });
    const load: Record<
      (typeof HOOK_VARIANTS)[number],
      { target: string; kind: 'crr' | 'rr'; conc: number; size: number }
    > = {
      'redirect-only': { target: addr.redirect, kind: 'crr', conc: 16, size: 1 },
      'client uncovered': { target: addr.server, kind: 'crr', conc: 16, size: 1 },
      'through HAProxy': { target: addr.upstream, kind: 'crr', conc: 16, size: 1 },
      'fast path rr 1KiB': { target: addr.redirect, kind: 'rr', conc: 1, size: 1024 },
    };
    /** Runs the variant's load; returns its units: requests (request/response) or connections. Without
     * warm-up, so that every call counted belongs to a counted unit (the few still in flight when the
     * run ends are not counted: < 0.5% of a run). */
    const run = async (v: (typeof HOOK_VARIANTS)[number]): Promise<{ units: number; errors: number }> => {
      const l = load[v];
      const out = await lab.run(lab.ns, cgs[v], o.mrload, [
        'client',
        l.target,
        l.kind,
        String(l.conc),
        String(o.duration),
        '0',
        String(l.size),
      ]);
      const r = JSON.parse(out) as LoadResult;
      return { units: r.mode === 'rr' ? r.requests : r.conns, errors: r.errors };
    };
    const samples = new Map<string, Sample>();
    const sampleOf = (v: string, round: number) => {
      const k = `${v}|${round}`;
      if (!samples.has(k)) {
        const s: Sample = { scenario: 'hooks', mode, variant: v, round, metrics: {} };
        samples.set(k, s);
        x.samples.push(s);
      }
      return samples.get(k)!;
    };
    const fail = (s: Sample, why: string) => (s.invalid = [...(s.invalid ?? []), why]);

    // Pass 1, the plain programs: run-time statistics per program.
    let stop = await startAgent();
    try {
      for (let round = 1; round <= o.rounds; round++)
        for (const v of rotate(HOOK_VARIANTS, round)) {
          const s = sampleOf(v, round);
          try {
            await fastFor(v);
            const progs = attachedPrograms(bpffs);
            const off = enableStats();
            let r: { units: number; errors: number };
            let per: ReturnType<typeof costs>;
            try {
              const a = snapshot(progs);
              r = await run(v);
              per = costs(progs, a, snapshot(progs));
            } finally {
              off();
            }
            let total = 0;
            s.metrics.units = r.units;
            for (const p of per) {
              if (!p.calls) continue;
              s.metrics[`calls:${p.link}`] = p.calls / r.units;
              s.metrics[`ns:${p.link}`] = p.ns / p.calls;
              s.metrics[`nsunit:${p.link}`] = p.ns / r.units;
              total += p.ns / r.units;
            }
            s.metrics.ns_total = total;
            if (r.errors) fail(s, `${r.errors} client error(s)`);
          } catch (e) {
            fail(s, `failed: ${(e as Error).message.split('\n')[0]}`);
          }
          x.tick(
            `per-hook cost, ${v}, round ${round}: ${s.invalid ? `REJECTED (${s.invalid.join('; ')})` : `${(s.metrics.ns_total ?? 0).toFixed(0)} ns of BPF per ${load[v].kind === 'rr' ? 'request' : 'connection'}`}`,
          );
        }
    } finally {
      await stop();
    }

    // Pass 2, the profiling build: calls per callback and side.
    if (!existsSync(profObject)) {
      for (const s of samples.values()) fail(s, `no profiling build at ${profObject} (make build makes it)`);
      return;
    }
    stop = await startAgent(profObject);
    try {
      const progs = attachedPrograms(bpffs);
      const counts = HookCounts.open(progs);
      if (!counts) throw new Error(`${profObject} is not a profiling build (its programs have no mr_hookprof map)`);
      try {
        for (let round = 1; round <= o.rounds; round++)
          for (const v of rotate(HOOK_VARIANTS, round)) {
            const s = sampleOf(v, round);
            try {
              await fastFor(v);
              counts.reset();
              const r = await run(v);
              for (const c of counts.read()) {
                const k = `${c.link}:${c.op}:${side(c.cgroup)}`;
                s.metrics[`op:${k}`] = (s.metrics[`op:${k}`] ?? 0) + c.calls / r.units;
                if (c.ns) s.metrics[`opns:${k}`] = (s.metrics[`opns:${k}`] ?? 0) + c.ns / r.units;
              }
              if (r.errors) fail(s, `${r.errors} client error(s) (counting pass)`);
            } catch (e) {
              fail(s, `counting failed: ${(e as Error).message.split('\n')[0]}`);
            }
            x.tick(`per-hook calls by callback and side, ${v}, round ${round}${s.invalid ? ': REJECTED' : ''}`);
          }
      } finally {
        counts.close();
      }
    } finally {
      await stop();
    }
  } finally {
    for (const p of procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGTERM');
    await Promise.all(procs.map((p) => p.exited));
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Which side a socket's cgroup (by id) is on. */
function sideOf(c: {
  client: string[];
  proxy: string[];
  server: string[];
  mount: string;
  ports: { server: number[]; proxy: number[] };
}): (id: bigint) => (typeof SIDES)[number] {
  const ids = new Map<bigint, (typeof SIDES)[number]>();
  for (const s of ['client', 'proxy', 'server'] as const)
    for (const path of c[s]) {
      const id = cgroupId(join(c.mount, path));
      if (id !== null) ids.set(id, s);
    }
  const PORT = 1n << 63n;
  for (const s of ['server', 'proxy'] as const) for (const p of c.ports[s]) ids.set(PORT | BigInt(p), s);
  return (id) => ids.get(id) ?? 'other';
}
