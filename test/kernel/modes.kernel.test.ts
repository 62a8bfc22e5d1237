// modes.kernel.test.ts — one sidecar scenario against both modes (eBPF and iptables). Two pods, each
// with its proxy inside its own netns running as uid 1337: HAProxy (`server o 0.0.0.0:0`) on
// 127.0.0.1:15001 for IPv4, and for IPv6 (HAProxy cannot ask the IPv6 original destination)
// build/origdst-proxy on [::1]:15002, which answers with what IP6T_SO_ORIGINAL_DST said.
//   pod "pod": excluded port; include/exclude CIDRs nested both ways; IPv6; inbound (REDIRECT / sk_lookup);
//              loopback left alone; a container cgroup created after the policy.
//   pod "inc": includePorts, and redirectLoopback (loopback destinations through the proxy).
// Where the modes differ, the test says so. Then iptables-only proofs: idempotency and an in-sync
// reconcile that writes nothing, drift repair, a held xtables lock that leaves redirection working,
// cleanup that spares foreign rules, verify; and `auto` choosing iptables when eBPF capabilities
// are dropped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyDoc, policyYaml, sh, waitFor, CLI, ORIGDST_PROXY, type Proc } from './harness.js';

type Mode = 'ebpf' | 'iptables';

// The agents of this file log their in-sync reconciles too (the in-sync test counts them).
process.env.MESHREDIR_LOG_LEVEL = 'debug';

kernelDescribe('both modes, sidecar topology', () => {
  for (const mode of ['ebpf', 'iptables'] as Mode[]) {
    describe(mode, () => {
      let env: Env;
      let dir: string;
      let state: string;
      let agent: Proc;
      let pod: string, inc: string, up: string;
      let cgApp: string, cgProxy: string, cgIncApp: string, cgIncProxy: string;
      const start = (extra: string[] = []) =>
        env.agent(dir, ['--mode', mode, '--iptables-state', state, '--interval', '1', ...extra]);
      type Where = { uid?: number; cg?: string | null; ns?: string };
      const connect = async (host: string, port: number, opts: Where = {}) =>
        env.client(
          opts.ns ?? pod,
          opts.cg === undefined ? cgApp : opts.cg,
          ['connect', host, String(port)],
          opts.uid === undefined ? {} : { uid: opts.uid },
        );
      const data = async (host: string, port: number, opts: Where = {}) => (await connect(host, port, opts)).data ?? '';
      /** Polls an async condition until it holds (convergence, not timing: the bound only ends a hang). */
      const until = async <T>(get: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> => {
        for (let i = 0; i < 200; i++) {
          const v = await get();
          if (ok(v)) return v;
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error(`${what}: never happened`);
      };
      const save = (ns: string, tool = 'iptables-save') => sh('ip', ['netns', 'exec', ns, tool, '-t', 'nat']);
      const ours = (ns: string, tool?: string) =>
        save(ns, tool)
          .split('\n')
          .filter((l) => l.includes('MESHREDIR'));
      const logs = (p: Proc) =>
        p.err
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);

      beforeAll(async () => {
        env = new Env();
        dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
        state = join(dir, 'state', 'iptables.json');
        pod = env.netns('pod');
        inc = env.netns('inc');
        up = env.netns('up');
        // 10.202.0.11 / 10.203.0.11 are used only by the proxies (HAProxy's `source`): the upstream
        // tells who dialled. The upstream's extra addresses sit inside and around the pod's CIDRs.
        env.veth(pod, 'eth0', ['10.202.0.1/24', '10.202.0.11/24', 'fd00:202::1/64'], up, 'eth0', [
          '10.202.0.2/24',
          '10.202.0.17/24',
          '10.202.0.33/24',
          '10.202.0.41/24',
          '10.204.0.2/24',
          'fd00:202::2/64',
          'fd00:202::12/64',
        ]);
        env.ip(pod, 'route', 'add', '10.204.0.0/24', 'via', '10.202.0.2');
        env.veth(inc, 'eth0', ['10.203.0.1/24', '10.203.0.11/24'], up, 'eth1', ['10.203.0.2/24']);
        cgApp = env.cgroup('pod/app');
        cgProxy = env.cgroup('pod/proxy');
        cgIncApp = env.cgroup('inc/app');
        cgIncProxy = env.cgroup('inc/proxy');
        await env.server(up, '0.0.0.0', 8080, 'up');
        await env.server(up, '0.0.0.0', 9090, 'up9090');
        await env.server(up, '::', 8080, 'up6');
        await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1337, source: '10.202.0.11' });
        const p6 = env.spawn(pod, cgProxy, ORIGDST_PROXY, ['--listen6', '[::1]:15002', '--mode', 'report'], {
          uid: 1337,
        });
        await env.waitListening(pod, 15002, 'origdst-proxy [::1]:15002', p6);
        await env.haproxy(inc, cgIncProxy, '127.0.0.1:15001', 15001, { uid: 1337, source: '10.203.0.11' });
        // In the pods: a loopback-only server, and for inbound: the app's ports and an inbound proxy
        // that answers with the original destination.
        await env.server(pod, '127.0.0.1', 7000, 'lo7000');
        await env.server(inc, '127.0.0.1', 7000, 'lo7000');
        await env.server(pod, '0.0.0.0', 7070, 'app7070');
        await env.server(pod, '0.0.0.0', 2222, 'app2222');
        // In the proxy's cgroup (as uid 1337): the eBPF mode takes the listener a process of the policy holds.
        const pin = env.spawn(pod, cgProxy, ORIGDST_PROXY, ['--listen', '0.0.0.0:15006', '--mode', 'report'], {
          uid: 1337,
        });
        await env.waitListening(pod, 15006, 'inbound origdst-proxy', pin);
        writeFileSync(
          join(dir, 'pod.yaml'),
          policyDoc('pod', {
            cgroup: `${env.cgRoot}/pod`,
            proxy: {
              outbound: '127.0.0.1:15001',
              outbound6: '[::1]:15002',
              inbound: 15006,
              bypass: { cgroups: [cgProxy], uids: [1337] },
            },
            outbound: {
              excludePorts: [9090],
              // Longest prefix wins: .17 (exclude /28 in include /24) direct, .41 (include /29 in
              // exclude /27) redirected, .33 direct, 10.204.0.2 (in no include) direct.
              includeCidrs: ['10.202.0.0/24', '10.202.0.40/29', 'fd00:202::/64'],
              excludeCidrs: ['10.202.0.16/28', '10.202.0.32/27', 'fd00:202::10/124'],
            },
            inbound: { excludePorts: [2222] },
          }),
        );
        writeFileSync(
          join(dir, 'inc.yaml'),
          policyDoc('inc', {
            cgroup: `${env.cgRoot}/inc`,
            proxy: { outbound: '127.0.0.1:15001', bypass: { cgroups: [cgIncProxy], uids: [1337] } },
            outbound: { includePorts: [8080, 7000], redirectLoopback: true },
          }),
        );
        agent = await start();
      });

      afterAll(async () => {
        if (agent) await env.stop(agent);
        if (mode === 'iptables')
          await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
        const problems = await env?.teardown();
        rmSync(dir, { recursive: true, force: true });
        expect(problems).toEqual([]);
      });

      it('the app reaches the upstream through HAProxy, which read SO_ORIGINAL_DST', async () => {
        const r = await connect('10.202.0.2', 8080);
        expect(r.data).toMatch(/^up 10\.202\.0\.11 \d+$/);
        // eBPF: the getpeername hook; iptables: conntrack's reverse NAT. Same answer.
        expect(r.peer).toEqual({ address: '10.202.0.2', port: 8080 });
      });

      it('an excluded port goes direct', async () => {
        expect(await data('10.202.0.2', 9090)).toMatch(/^up9090 10\.202\.0\.1 /);
      });

      it('a uid-1337 workload is bypassed (the policy lists uid 1337 for both modes)', async () => {
        expect(await data('10.202.0.2', 8080, { uid: 1337 })).toMatch(/^up 10\.202\.0\.1 /);
      });

      it('CIDRs by longest prefix: an exclude inside an include, and an include inside an exclude, win', async () => {
        expect(await data('10.202.0.17', 8080)).toMatch(/^up 10\.202\.0\.1 /); // exclude /28 inside include /24
        expect(await data('10.202.0.41', 8080)).toMatch(/^up 10\.202\.0\.11 /); // include /29 inside exclude /27
        expect(await data('10.202.0.33', 8080)).toMatch(/^up 10\.202\.0\.1 /); // exclude /27
        expect(await data('10.204.0.2', 8080)).toMatch(/^up 10\.202\.0\.1 /); // in no include: direct
      });

      it('IPv6 goes to the IPv6 proxy, which reads the original destination (IP6T_SO_ORIGINAL_DST)', async () => {
        const r = await connect('fd00:202::2', 8080);
        expect(r.data).toMatch(/^ORIGDST fd00:202::2 8080 PEER /);
        expect(r.peer).toEqual({ address: 'fd00:202::2', port: 8080 });
        // An IPv6 exclude (/124) inside the IPv6 include (/64) goes direct.
        expect(await data('fd00:202::12', 8080)).toMatch(/^up6 fd00:202::1 /);
      });

      it('a loopback destination goes direct unless redirectLoopback (pod "inc"): then through the proxy', async () => {
        expect(await data('127.0.0.1', 7000)).toMatch(/^lo7000 127\.0\.0\.1 /);
        expect(await data('127.0.0.1', 7000, { ns: inc, cg: cgIncApp })).toMatch(/^lo7000 10\.203\.0\.11 /);
      });

      it('includePorts (pod "inc"): a listed port is redirected, any other goes direct', async () => {
        expect(await data('10.203.0.2', 8080, { ns: inc, cg: cgIncApp })).toMatch(/^up 10\.203\.0\.11 /);
        expect(await data('10.203.0.2', 9090, { ns: inc, cg: cgIncApp })).toMatch(/^up9090 10\.203\.0\.1 /);
      });

      it('a container cgroup created after the policy is covered', async () => {
        const late = env.cgroup('pod/late-container');
        expect(await data('10.202.0.2', 8080, { cg: late })).toMatch(/^up 10\.202\.0\.11 /);
      });

      it('inbound: intercepted to spec.proxy.inbound (iptables: REDIRECT; eBPF: sk_lookup), except spec.inbound.excludePorts', async () => {
        const fromUp = (port: number) => data('10.202.0.1', port, { ns: up, cg: null });
        // Same answer in both modes: the proxy's SO_ORIGINAL_DST is the pod's address and port (iptables:
        // conntrack; eBPF: the accepted socket's local address, served by mr_in_origdst), and its peer
        // the client's own address.
        await until(
          () => fromUp(7070),
          (d) => d.startsWith('ORIGDST'),
          'inbound intercepted',
        );
        expect(await fromUp(7070)).toMatch(/^ORIGDST 10\.202\.0\.1 7070 PEER 10\.202\.0\.2 /);
        expect(await fromUp(2222)).toMatch(/^app2222 10\.202\.0\.2 /);
      });

      it(`status shows the ${mode} state`, async () => {
        const status = async () =>
          JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--iptables-state', state])) as Record<
            string,
            unknown
          >;
        if (mode === 'ebpf') {
          const s = (await status()) as {
            mode: string;
            policies: { name: string; counters: Record<string, number> }[];
            unsupported: string[];
            inbound: { policy: string; counters: { intercepted: number } }[];
          };
          expect(s.mode).toBe('ebpf');
          expect(s.policies.map((p) => p.name).sort()).toEqual(['inc', 'pod']);
          expect(s.policies.find((p) => p.name === 'pod')!.counters.redirected).toBeGreaterThan(0);
          expect(s.unsupported).toEqual([]);
          expect(s.inbound.find((p) => p.policy === 'pod')!.counters.intercepted).toBeGreaterThan(0);
          return;
        }
        // Difference: no pins in iptables mode; the state lives in each pod's nat table. A client
        // that joined its cgroup before entering the netns can make one reconcile wait, so converge.
        type S = {
          mode: string;
          policies: { policy: string; outcome: string; netns: string; backend: string; families: string[] }[];
          iptables: {
            policy: string;
            live: string;
            redirected: Record<string, number>;
            inboundRedirected: Record<string, number>;
          }[];
          unsupported: string[];
        };
        const s = await until(
          async () => (await status()) as S,
          (x) => x.policies.length === 2 && x.policies.every((p) => p.outcome === 'applied'),
          'both policies applied',
        );
        expect(s.mode).toBe('iptables');
        expect(s.policies.map((p) => [p.policy, p.outcome, p.backend, p.families]).sort()).toEqual([
          ['inc', 'applied', 'nft', ['ipv4']],
          ['pod', 'applied', 'nft', ['ipv4', 'ipv6']],
        ]);
        const podNs = s.iptables.find((n) => n.policy === 'pod')!;
        expect(podNs.live).toBe('in sync');
        expect(podNs.redirected.ipv4).toBeGreaterThan(0);
        expect(podNs.redirected.ipv6).toBeGreaterThan(0);
        expect(podNs.inboundRedirected.ipv4).toBeGreaterThan(0);
        expect(s.unsupported.join('\n')).toMatch(
          /scope: the rules live in the pod network namespace and apply to every process in it/,
        );
        expect(s.unsupported.join('\n')).toMatch(/one policy per network namespace/);
        expect(ours(pod)).toContain(
          '-A MESHREDIR_REDIRECT -p tcp -m comment --comment "meshredir:pod" -j REDIRECT --to-ports 15001',
        );
        expect(ours(pod, 'ip6tables-save')).toContain(
          '-A MESHREDIR_REDIRECT -p tcp -m comment --comment "meshredir:pod" -j REDIRECT --to-ports 15002',
        );
      });

      if (mode === 'iptables') {
        it('applying three times leaves one set of rules; an in-sync reconcile writes nothing', async () => {
          const once = [...ours(pod), ...ours(pod, 'ip6tables-save')];
          await env.stop(agent);
          for (let i = 0; i < 2; i++) {
            agent = await start();
            await env.stop(agent);
          }
          agent = await start();
          expect([...ours(pod), ...ours(pod, 'ip6tables-save')]).toEqual(once);
          expect(once.filter((l) => l.startsWith('-A OUTPUT'))).toHaveLength(2); // one per family
          // In sync: across two more reconciles the state file is not rewritten and no restore runs
          // (a restore would reset our counters).
          await data('10.202.0.2', 8080);
          // From an in-sync reconcile after that client is gone (it joined its cgroup before its netns,
          // which can make one reconcile wait and record that).
          const inSync = () => logs(agent).filter((l) => l.msg === 'in sync').length;
          const n0 = inSync();
          await waitFor(() => inSync() >= n0 + 1, 'an in-sync reconcile', agent, 10_000);
          const counters = () =>
            ['iptables-save', 'ip6tables-save'].flatMap((t) =>
              sh('ip', ['netns', 'exec', pod, t, '-c', '-t', 'nat'])
                .split('\n')
                .filter((l) => l.includes('MESHREDIR')),
            );
          const before = { mtime: statSync(state).mtimeMs, counters: counters() };
          expect(before.counters.find((l) => l.includes('-j REDIRECT --to-ports 15001'))).toMatch(/^\[[1-9]\d*:/);
          const n = inSync();
          await waitFor(() => inSync() >= n + 2, 'two more in-sync reconciles', agent, 10_000);
          expect(statSync(state).mtimeMs).toBe(before.mtime);
          expect(counters()).toEqual(before.counters);
        });

        it('a flushed chain is restored within one interval', async () => {
          sh('ip', ['netns', 'exec', pod, 'iptables', '-t', 'nat', '-F', 'MESHREDIR_OUTPUT']);
          expect(await data('10.202.0.2', 8080)).toMatch(/^up 10\.202\.0\.1 /); // broken: direct
          await waitFor(
            () =>
              save(pod).includes(
                '-A MESHREDIR_OUTPUT -d 10.202.0.0/24 -m comment --comment "meshredir:pod" -j MESHREDIR_REDIRECT',
              ),
            'drift repaired',
            agent,
            5000,
          );
          expect(await data('10.202.0.2', 8080)).toMatch(/^up 10\.202\.0\.11 /);
          // A repair of something the agent did not do itself is a warning, naming what and where.
          await waitFor(
            () =>
              logs(agent).some(
                (l) =>
                  l.level === 40 &&
                  /^pod: our IPv4 rules in netns \S+ were not as applied \(a flushed chain or an edited rule: not done by this agent\); restored$/.test(
                    String(l.msg),
                  ),
              ),
            'the repair warned about',
            agent,
            5000,
          );
        });

        it('a held xtables lock when moving to another backend: bounded wait, clear error, redirection keeps working; then the move', async () => {
          await env.stop(agent);
          const nftBefore = ours(pod);
          // Hold the legacy xtables lock the way iptables-legacy does (flock on /run/xtables.lock).
          const holder = env.spawn(
            null,
            null,
            'python3',
            [
              '-c',
              "import fcntl,sys\nf=open('/run/xtables.lock','a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()",
            ],
            { stdin: true },
          );
          await waitFor(() => holder.out.includes('locked'), 'lock held', holder);
          try {
            const p = env.cli([
              'agent',
              '--policies',
              dir,
              '--mode',
              'iptables',
              '--iptables-state',
              state,
              '--state-dir',
              env.stateDir,
              '--iptables-backend',
              'legacy',
              '--lock-wait',
              '1',
              '--interval',
              '60',
            ]);
            await waitFor(
              () => /xtables lock was held by another process for more than 1s/.test(p.err),
              'lock error',
              undefined,
              10_000,
            );
            expect(p.err).toMatch(/moving the rules from nft to legacy failed: .*the rules stay on nft, unchanged/);
            await env.stop(p);
          } finally {
            holder.child.stdin!.end();
            await holder.exited;
          }
          // Nothing was taken away: the nft rules are intact and still redirect.
          expect(ours(pod)).toEqual(nftBefore);
          expect(await data('10.202.0.2', 8080)).toMatch(/^up 10\.202\.0\.11 /);
          // Lock free: the rules move to legacy, and leave nft.
          agent = await start(['--iptables-backend', 'legacy']);
          expect(ours(pod, 'iptables-legacy-save').length).toBe(nftBefore.length);
          expect(ours(pod)).toEqual([]);
          expect(await data('10.202.0.2', 8080)).toMatch(/^up 10\.202\.0\.11 /);
          await env.stop(agent);
          agent = await start(['--iptables-backend', 'nft']);
          expect(ours(pod)).toEqual(nftBefore);
          expect(ours(pod, 'iptables-legacy-save')).toEqual([]);
        });

        it('verify follows the chain in the pod netns: rules, the decision for a destination, the proxy listening', async () => {
          const verify = async (...args: string[]) => {
            const p = env.cli([
              'verify',
              '--json',
              '--bpffs',
              env.bpffs,
              '--iptables-state',
              state,
              '--cgroup',
              cgApp,
              ...args,
            ]);
            const code = await p.exited;
            return {
              code,
              out: JSON.parse(p.out) as {
                ok: boolean;
                mode: string;
                steps: { step: string; ok: boolean; detail: string }[];
              },
            };
          };
          const good = await verify('--netns', `/run/netns/${pod}`, '--dest', '10.202.0.2:8080');
          expect(good.out).toMatchObject({ ok: true, mode: 'iptables' });
          expect(good.code).toBe(0);
          expect(good.out.steps.map((s) => s.step)).toEqual([
            'cgroup',
            'policy',
            'netns',
            'rules',
            'redirect',
            'proxy',
            // The policy intercepts inbound too: its own chain (REDIRECT to 15006, something listening).
            'inbound rules',
            'inbound proxy',
          ]);
          const nested = await verify('--netns', `/run/netns/${pod}`, '--dest', '10.202.0.17:8080');
          expect(nested.out.steps.at(-1)).toMatchObject({
            step: 'redirect',
            ok: false,
            detail: expect.stringMatching(/-d 10\.202\.0\.16\/28 .*-j RETURN" lets it pass/),
          });
          const v6 = await verify('--netns', `/run/netns/${pod}`, '--dest', '[fd00:202::2]:8080');
          expect(v6.out.ok, JSON.stringify(v6.out.steps)).toBe(true);
          expect(v6.out.steps.find((s) => s.step === 'proxy')!.detail).toMatch(/a socket listens on \[::1\]:15002/);
        });

        it('cleanup removes every MESHREDIR line and leaves foreign rules alone', async () => {
          sh('ip', [
            'netns',
            'exec',
            pod,
            'iptables',
            '-t',
            'nat',
            '-A',
            'OUTPUT',
            '-p',
            'udp',
            '--dport',
            '5353',
            '-j',
            'RETURN',
          ]);
          await env.stop(agent);
          await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
          const after = save(pod);
          expect(after).not.toMatch(/MESHREDIR/);
          expect(save(pod, 'ip6tables-save')).not.toMatch(/MESHREDIR/);
          expect(save(inc)).not.toMatch(/MESHREDIR/);
          expect(after).toMatch(/-A OUTPUT -p udp -m udp --dport 5353 -j RETURN/);
          expect(await data('10.202.0.2', 8080)).toMatch(/^up 10\.202\.0\.1 /);
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
      writeFileSync(
        join(dir, 'pod.yaml'),
        policyYaml({ name: 'pod', cgroup: `${env.cgRoot}/pod`, outbound: '127.0.0.1:15001', uids: [1337] }),
      );
      // Like istio-init: the agent runs in the pod's netns, with CAP_NET_ADMIN but no CAP_BPF/SYS_ADMIN
      // (nsenter, not `ip netns exec`, which would remount /sys and hide the cgroup2 mount).
      const p = env.spawn(null, null, 'nsenter', [
        `--net=/run/netns/${pod}`,
        'capsh',
        '--drop=cap_bpf,cap_sys_admin,cap_perfmon',
        '--',
        '-c',
        `exec ${process.execPath} ${CLI} agent --policies ${dir} --iptables-state ${state} --state-dir ${env.stateDir} --interval 60`,
      ]);
      await waitFor(() => p.err.includes('redirect-ready'), 'agent ready', p, 30_000);
      const chose = p.err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { event?: string; mode?: string; reason?: string })
        .find((l) => l.event === 'mode')!;
      expect(chose.mode).toBe('iptables');
      expect(chose.reason).toMatch(/bpf_map_create: EPERM/);
      const r = await env.client(pod, cgApp, ['connect', '10.202.0.2', '8080']);
      expect(r.data).toMatch(/^up 10\.202\.0\.11 /);
      await env.stop(p);
      sh(process.execPath, [
        CLI,
        'cleanup',
        '--iptables-state',
        state,
        '--bpffs',
        env.bpffs,
        '--state-dir',
        env.stateDir,
      ]);
      expect(sh('ip', ['netns', 'exec', pod, 'iptables-save', '-t', 'nat'])).not.toMatch(/MESHREDIR/);
    });
  });
});
