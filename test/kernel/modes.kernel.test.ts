// modes.kernel.test.ts — one sidecar scenario against both modes (eBPF and iptables), HAProxy with
// `server o 0.0.0.0:0` inside the pod netns on 127.0.0.1:15001 running as uid 1337. Where the modes
// differ, the test says so. Then iptables-only proofs: idempotency, drift repair, cleanup that spares
// foreign rules, a held xtables lock, and auto choosing iptables when eBPF capabilities are dropped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { spawn } from 'node:child_process';
import { Env, kernelDescribe, policyYaml, sh, waitFor, CLI, type Proc } from './harness.js';

type Mode = 'ebpf' | 'iptables';

kernelDescribe('both modes, sidecar topology', () => {
  for (const mode of ['ebpf', 'iptables'] as Mode[]) {
    describe(mode, () => {
      let env: Env;
      let dir: string;
      let state: string;
      let agent: Proc;
      let pod: string, up: string, cgApp: string, cgProxy: string;
      const start = (extra: string[] = []) =>
        env.agent(dir, ['--mode', mode, '--iptables-state', state, '--interval', '1', ...extra]);
      const connect = async (port = 8080, uid?: number) =>
        (await env.client(pod, cgApp, ['connect', '10.202.0.2', String(port)], uid === undefined ? {} : { uid }));
      const save = (ns: string) => sh('ip', ['netns', 'exec', ns, 'iptables-save', '-t', 'nat']);

      beforeAll(async () => {
        env = new Env();
        dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
        state = join(dir, 'state', 'iptables.json');
        pod = env.netns('pod');
        up = env.netns('up');
        // 10.202.0.11 is used only by the proxy (HAProxy's `source`): the upstream tells who dialled.
        env.veth(pod, 'eth0', ['10.202.0.1/24', '10.202.0.11/24'], up, 'eth0', ['10.202.0.2/24']);
        cgApp = env.cgroup('pod/app');
        cgProxy = env.cgroup('pod/proxy');
        await env.server(up, '10.202.0.2', 8080, 'up');
        await env.server(up, '10.202.0.2', 9090, 'up9090');
        await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1337, source: '10.202.0.11' });
        writeFileSync(
          join(dir, 'pod.yaml'),
          policyYaml({ name: 'pod', cgroup: `${env.cgRoot}/pod`, outbound: '127.0.0.1:15001', bypassCgroups: [cgProxy], uids: [1337], outboundSpec: { excludePorts: [9090] } }),
        );
        agent = await start();
      });

      afterAll(async () => {
        if (agent) await env.stop(agent);
        if (mode === 'iptables') await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs]);
        const problems = await env?.teardown();
        rmSync(dir, { recursive: true, force: true });
        expect(problems).toEqual([]);
      });

      it('the app reaches the upstream through HAProxy, which read SO_ORIGINAL_DST', async () => {
        const r = await connect();
        expect(r.data).toMatch(/^up 10\.202\.0\.11 \d+$/);
        // eBPF: the getpeername hook; iptables: conntrack's reverse NAT. Same answer.
        expect(r.peer).toEqual({ address: '10.202.0.2', port: 8080 });
      });

      it('an excluded port goes direct', async () => {
        expect((await connect(9090)).data).toMatch(/^up9090 10\.202\.0\.1 /);
      });

      it('a uid-1337 workload is bypassed (the policy lists uid 1337 for both modes)', async () => {
        expect((await connect(8080, 1337)).data).toMatch(/^up 10\.202\.0\.1 /);
      });

      it(`status shows the ${mode} state`, async () => {
        const s = JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--iptables-state', state])) as { mode: string; iptables?: { netns: string; backend: string; rules: number }[] };
        if (mode === 'ebpf') expect(s.mode).toBe('ebpf');
        else {
          // Difference: no pins in iptables mode; the state lives in the pod's nat table.
          expect(s.iptables).toEqual([expect.objectContaining({ backend: 'nft', rules: expect.any(Number) })]);
          expect(save(pod)).toMatch(/-A MESHREDIR_REDIRECT -p tcp -m comment --comment "meshredir:pod" -j REDIRECT --to-ports 15001/);
        }
      });

      if (mode === 'iptables') {
        it('applying three times leaves one set of rules; an in-sync reconcile writes nothing', async () => {
          const once = save(pod).split('\n').filter((l) => l.includes('MESHREDIR'));
          await env.stop(agent);
          for (let i = 0; i < 2; i++) {
            agent = await start();
            await env.stop(agent);
          }
          agent = await start();
          expect(save(pod).split('\n').filter((l) => l.includes('MESHREDIR'))).toEqual(once);
          expect(once.filter((l) => l.startsWith('-A OUTPUT'))).toHaveLength(1);
        });

        it('a flushed chain is restored within one interval', async () => {
          sh('ip', ['netns', 'exec', pod, 'iptables', '-t', 'nat', '-F', 'MESHREDIR_OUTPUT']);
          expect((await connect()).data).toMatch(/^up 10\.202\.0\.1 /); // broken: direct
          await waitFor(() => save(pod).includes('-A MESHREDIR_OUTPUT -m comment --comment "meshredir:pod" -j MESHREDIR_REDIRECT'), 'drift repaired', agent, 5000);
          expect((await connect()).data).toMatch(/^up 10\.202\.0\.11 /);
        });

        it('a held xtables lock: bounded wait, clear error, then recovery', async () => {
          await env.stop(agent);
          sh('ip', ['netns', 'exec', pod, 'iptables', '-t', 'nat', '-F', 'MESHREDIR_OUTPUT']); // something to repair
          // Hold the legacy xtables lock file the way iptables does (flock on /run/xtables.lock).
          const holder = spawn('ip', ['netns', 'exec', pod, 'flock', '/run/xtables.lock', 'sleep', '30']);
          await new Promise((r) => setTimeout(r, 300));
          try {
            const p = env.cli(['agent', '--policies', dir, '--mode', 'iptables', '--iptables-state', state, '--iptables-backend', 'legacy', '--lock-wait', '1', '--interval', '60']);
            await waitFor(() => /xtables lock was held by another process for more than 1s/.test(p.err), 'lock error', undefined, 10_000);
            await env.stop(p);
          } finally {
            holder.kill();
          }
          agent = await start();
          expect((await connect()).data).toMatch(/^up 10\.202\.0\.11 /);
        });

        it('cleanup removes every MESHREDIR line and leaves foreign rules alone', async () => {
          sh('ip', ['netns', 'exec', pod, 'iptables', '-t', 'nat', '-A', 'OUTPUT', '-p', 'udp', '--dport', '5353', '-j', 'RETURN']);
          await env.stop(agent);
          await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs]);
          const after = save(pod);
          expect(after).not.toMatch(/MESHREDIR/);
          expect(after).toMatch(/-A OUTPUT -p udp -m udp --dport 5353 -j RETURN/);
          expect((await connect()).data).toMatch(/^up 10\.202\.0\.1 /);
          agent = await start();
        });
      }
    });
  }

  describe('auto mode without the capabilities eBPF needs', () => {
    let env: Env;
    let dir: string;
    afterAll(async () => {
      const problems = await env?.teardown();
      rmSync(dir, { recursive: true, force: true });
      expect(problems).toEqual([]);
    });

    it('chooses iptables by itself, says why, and redirects correctly', async () => {
      env = new Env();
      dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
      const state = join(dir, 'state.json');
      const pod = env.netns('pod');
      const up = env.netns('up');
      env.veth(pod, 'eth0', ['10.202.0.1/24', '10.202.0.11/24'], up, 'eth0', ['10.202.0.2/24']);
      const cgApp = env.cgroup('pod/app');
      const cgProxy = env.cgroup('pod/proxy');
      await env.server(up, '10.202.0.2', 8080, 'up');
      await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1337, source: '10.202.0.11' });
      writeFileSync(join(dir, 'pod.yaml'), policyYaml({ name: 'pod', cgroup: `${env.cgRoot}/pod`, outbound: '127.0.0.1:15001', uids: [1337] }));
      // Like istio-init: the agent runs in the pod's netns, with CAP_NET_ADMIN but no CAP_BPF/SYS_ADMIN
      // (nsenter, not `ip netns exec`, which would remount /sys and hide the cgroup2 mount).
      const p = env.spawn(null, null, 'nsenter', [`--net=/run/netns/${pod}`, 'capsh', '--drop=cap_bpf,cap_sys_admin,cap_perfmon', '--', '-c', `exec ${process.execPath} ${CLI} agent --policies ${dir} --iptables-state ${state} --interval 60`]);
      await waitFor(() => p.err.includes('redirect-ready'), 'agent ready', p, 30_000);
      const chose = p.err.split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { event?: string; mode?: string; reason?: string }).find((l) => l.event === 'mode')!;
      expect(chose.mode).toBe('iptables');
      expect(chose.reason).toMatch(/bpf_map_create: EPERM/);
      const r = await env.client(pod, cgApp, ['connect', '10.202.0.2', '8080']);
      expect(r.data).toMatch(/^up 10\.202\.0\.11 /);
      await env.stop(p);
      sh(process.execPath, [CLI, 'cleanup', '--iptables-state', state, '--bpffs', env.bpffs]);
      expect(sh('ip', ['netns', 'exec', pod, 'iptables-save', '-t', 'nat'])).not.toMatch(/MESHREDIR/);
      void readFileSync;
    });
  });
});
