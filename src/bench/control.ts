// control.ts — the bench's control-plane scenario (`control`), `rounds` times: 10,000 entries applied
// (eBPF map entries, iptables rules), load + attach, agent start to redirect-ready (metrics endpoint on
// and off), the CLI's start (--version, status), agent RSS; then the agent's reaction to cgroups made and
// removed (cgroup-latency.ts).
import { join } from 'node:path';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import { SERVER, ebpfApply, msg, type Run, type ScenarioDef } from './run.js';
import { cgroupLatency } from './cgroup-latency.js';
import { startAgent } from './agent-proc.js';

export const control: ScenarioDef = {
  modes: [], // it compares no modes: it times each one's control plane, reporting the missing itself
  steps: () => 1,
  run: async (r) => {
    await timings(r);
    await cgroupLatency(r.o, r.lab, r);
  },
};

async function timings(x: Run): Promise<void> {
  const { o, lab, app } = x;
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
    // Node and the CLI alone (what every agent start pays before meshredir does anything), and `status`
    // where nothing is installed (paths of nothing: it reads them, finds none and exits 3).
    const none = join(tmpdir(), 'meshredir-bench-none');
    const starts: [string, string[], number][] = [
      ['node + CLI start (--version)', ['--version'], 0],
      ['CLI status, nothing installed', ['status', '--bpffs', none, '--state-dir', none, '--iptables-state', none], 3],
    ];
    for (const [variant, args, code] of starts) {
      try {
        const t = performance.now();
        const r = spawnSync(process.execPath, [o.cli, ...args], { stdio: 'ignore' });
        const ms = performance.now() - t;
        if (r.status !== code) throw new Error(`exited ${r.status ?? r.signal}, not ${code}`);
        push('node', variant, round, { ms });
      } catch (e) {
        fail('node', variant, round, e);
      }
    }
    // The agent as deployed (its /metrics endpoint on), then without the endpoint.
    const agents: [string, string[]][] = [
      ['agent start to redirect-ready', []],
      ['agent start to redirect-ready (metrics off)', ['--metrics-address', 'off']],
    ];
    for (const [variant, extra] of x.unavailable.has('ebpf') ? [] : agents) {
      x.use('direct'); // the bench's own programs off: the agent's are the only ones
      const dir = mkdtempSync(join(tmpdir(), 'meshredir-bench-policies-'));
      const bpffs = `${lab.bpffs}-agent`;
      try {
        writeFileSync(
          join(dir, 'p.yaml'),
          `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: a }\nspec:\n  cgroup: ${app}\n  proxy: { outbound: "${SERVER}" }\n`,
        );
        const t = performance.now();
        const agent = await startAgent(o.cli, { policies: dir, cgroupRoot: x.attach, bpffs, extra });
        try {
          const ready = performance.now() - t;
          push('ebpf', variant, round, { ms: ready });
          said.push(`${variant.replace('agent start to redirect-ready', 'agent ready')} in ${ready.toFixed(0)} ms`);
          if (extra.length === 0) {
            await new Promise((r) => setTimeout(r, 500));
            const rss = lab.rss(agent.pid);
            push('ebpf', 'agent RSS', round, { mib: rss / 1048576 });
            said.push(`RSS ${(rss / 1048576).toFixed(0)} MiB`);
          }
        } finally {
          await agent.stop();
        }
      } catch (e) {
        fail('ebpf', variant, round, e);
      } finally {
        rmSync(dir, { recursive: true, force: true });
        rmSync(`${dir}-state`, { recursive: true, force: true });
      }
    }
    x.tick(`control plane, round ${round}: ${said.join(', ') || 'neither mode can run here (see missing)'}`);
  }
}
