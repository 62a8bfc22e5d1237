// control.ts — the bench's control-plane scenario (`control`), `rounds` times: 10,000 entries applied
// (eBPF map entries, iptables rules), load + attach, agent start to redirect-ready, Node's own start,
// agent RSS; then the agent's reaction to cgroups made and removed (cgroup-latency.ts).
import { join } from 'node:path';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { execFileSync } from 'node:child_process';
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
        const agent = await startAgent(o.cli, { policies: dir, cgroupRoot: x.attach, bpffs });
        try {
          const ready = performance.now() - t;
          await new Promise((r) => setTimeout(r, 500));
          const rss = lab.rss(agent.pid);
          push('ebpf', 'agent start to redirect-ready', round, { ms: ready });
          push('ebpf', 'agent RSS', round, { mib: rss / 1048576 });
          said.push(`agent ready in ${ready.toFixed(0)} ms, RSS ${(rss / 1048576).toFixed(0)} MiB`);
        } finally {
          await agent.stop();
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
