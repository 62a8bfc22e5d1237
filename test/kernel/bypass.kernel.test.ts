// bypass.kernel.test.ts — the three ways to recognise the proxy, in both modes (eBPF and iptables), in the
// sidecar topology: an unmodified HAProxy running as an ordinary uid (1500) in the pod's proxy cgroup.
//   pod "cg": the policy bypasses by cgroup only. The app goes through HAProxy and HAProxy's own
//             connections go out (no loop); a workload running as uid 1337 (istio's proxy uid, not in
//             this policy) in the app cgroup is still redirected. Then the proxy cgroup is deleted and
//             re-created while the agent runs: its cgroup watch makes the new one the proxy at once; and
//             while no agent runs: the rules point at the deleted cgroup (status and verify say so, in
//             iptables mode) until the agent is back.
//   pod "mk": the policy also names a socket mark, 0x539/0xfff: a socket with SO_MARK 0x539 (or any mark
//             that is 0x539 under the mask) goes direct, one without a mark or with another is redirected.
// Every address is on the test's own veths; root; netns mr-*, cgroups meshredir-test-*.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyDoc, sh, waitFor, TOOLS, type Proc } from './harness.js';

type Mode = 'ebpf' | 'iptables';
process.env.MESHREDIR_LOG_LEVEL = 'debug';

kernelDescribe('bypass by cgroup, mark and uid, in both modes', () => {
  for (const mode of ['ebpf', 'iptables'] as Mode[]) {
    describe(mode, () => {
      let env: Env;
      let dir: string;
      let state: string;
      let agent: Proc;
      let pod: string, mk: string, up: string;
      let cgApp: string, cgProxy: string, cgMkApp: string, cgMkProxy: string;
      let haproxy: Proc;
      const policies: Record<string, string> = {};

      /** Connections made by test/tools/each.py: [host, port, uid, gid, cgroup, mark] each. */
      const each = (ns: string, conns: [string, number, number, number, string, number][]) =>
        JSON.parse(
          sh('nsenter', [
            `--net=/run/netns/${ns}`,
            'python3',
            join(TOOLS, 'each.py'),
            JSON.stringify(conns.map(([h, p, u, g, cg, m]) => [h, p, u, g, env.cgDir(cg), m])),
          ]),
        ) as { data?: string; error?: string }[];
      const logs = () =>
        agent.err
          .split('\n')
          .filter((l) => l.startsWith('{'))
          .map((l) => JSON.parse(l) as Record<string, unknown>);
      const status = async () =>
        JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--iptables-state', state])) as Record<
          string,
          unknown
        >;

      beforeAll(async () => {
        env = new Env();
        dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
        state = join(dir, 'state', 'iptables.json');
        pod = env.netns('pod');
        mk = env.netns('mk');
        up = env.netns('up');
        // .11 of each pod is HAProxy's source address only: the upstream tells the proxy from the app.
        env.veth(pod, 'eth0', ['10.206.0.1/24', '10.206.0.11/24'], up, 'eth0', ['10.206.0.2/24']);
        env.veth(mk, 'eth0', ['10.207.0.1/24', '10.207.0.11/24'], up, 'eth1', ['10.207.0.2/24']);
        cgApp = env.cgroup('pod/app');
        cgProxy = env.cgroup('pod/proxy');
        cgMkApp = env.cgroup('mk/app');
        cgMkProxy = env.cgroup('mk/proxy');
        await env.server(up, '0.0.0.0', 8080, 'up');
        // The app container (like a pod's pause container, it keeps the pod's netns findable by its cgroup
        // while the proxy's container is gone).
        env.spawn(pod, cgApp, 'sleep', ['3600']);
        // An ordinary uid, named by no policy: only its cgroup tells it is the proxy.
        haproxy = await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1500, source: '10.206.0.11' });
        await env.haproxy(mk, cgMkProxy, '127.0.0.1:15001', 15001, { uid: 1500, source: '10.207.0.11' });
        policies.cg = policyDoc('cg', {
          cgroup: `${env.cgRoot}/pod`,
          proxy: { outbound: '127.0.0.1:15001', bypass: { cgroups: [cgProxy] } },
        });
        policies.mk = policyDoc('mk', {
          cgroup: `${env.cgRoot}/mk`,
          proxy: { outbound: '127.0.0.1:15001', bypass: { cgroups: [cgMkProxy], marks: ['0x539/0xfff'] } },
        });
        for (const [name, text] of Object.entries(policies)) writeFileSync(join(dir, `${name}.yaml`), text);
        // No periodic reconcile: only the agent's watches (policy files, cgroups) make it reconcile.
        agent = await env.agent(dir, ['--mode', mode, '--iptables-state', state, '--interval', '3600']);
      });

      afterAll(async () => {
        if (agent) await env.stop(agent);
        if (mode === 'iptables')
          await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
        const problems = await env?.teardown();
        rmSync(dir, { recursive: true, force: true });
        expect(problems).toEqual([]);
      });

      it('a policy that bypasses by cgroup only: the app goes through HAProxy (uid 1500), whose own connections leave (no loop)', async () => {
        for (let i = 0; i < 3; i++) {
          const r = await env.client(pod, cgApp, ['connect', '10.206.0.2', '8080']);
          // The upstream saw HAProxy's source address: HAProxy read the original destination and its own
          // connection to it went out instead of back into HAProxy.
          expect(r.data).toMatch(/^up 10\.206\.0\.11 \d+$/);
          expect(r.peer).toEqual({ address: '10.206.0.2', port: 8080 });
        }
        if (mode === 'iptables') {
          const save = sh('ip', ['netns', 'exec', pod, 'iptables-save', '-t', 'nat']);
          expect(save).toContain(
            `-A MESHREDIR_OUTPUT -m cgroup --path "${cgProxy}" -m comment --comment "meshredir:cg" -j RETURN`,
          );
          expect(save).not.toMatch(/--uid-owner|--gid-owner/);
        } else {
          const s = (await status()) as { policies: { name: string; counters: Record<string, number> }[] };
          const c = s.policies.find((p) => p.name === 'cg')!.counters;
          expect(c.redirected).toBeGreaterThanOrEqual(3);
          expect(c.bypass_cgroup).toBeGreaterThanOrEqual(3);
        }
      });

      it('a workload running as uid 1337 in the app cgroup is redirected: 1337 is not in this policy', async () => {
        const r = await env.client(pod, cgApp, ['connect', '10.206.0.2', '8080'], { uid: 1337 });
        expect(r.data).toMatch(/^up 10\.206\.0\.11 /);
        // The same uid in the proxy cgroup is the proxy, by its cgroup.
        const p = await env.client(pod, cgProxy, ['connect', '10.206.0.2', '8080'], { uid: 1337 });
        expect(p.data).toMatch(/^up 10\.206\.0\.1 /);
      });

      it('SO_MARK: the policy mark (0x539/0xfff) goes direct, also with bits outside the mask; no mark or another mark is redirected', async () => {
        const to = (mark: number): [string, number, number, number, string, number] => [
          '10.207.0.2',
          8080,
          0,
          0,
          cgMkApp,
          mark,
        ];
        const r = each(mk, [to(0x539), to(0), to(0x1539), to(0x538), to(0x2000), to(0x539)]);
        const direct = /^up 10\.207\.0\.1 /;
        const proxied = /^up 10\.207\.0\.11 /;
        expect(r.map((x) => x.data ?? x.error)).toEqual([
          expect.stringMatching(direct), // the policy's mark
          expect.stringMatching(proxied), // no mark
          expect.stringMatching(direct), // 0x1539 & 0xfff = 0x539: the bits outside the mask do not count
          expect.stringMatching(proxied), // 0x538: another mark under the mask
          expect.stringMatching(proxied), // 0x2000: only bits outside the mask, so 0 under it
          expect.stringMatching(direct),
        ]);
        if (mode === 'ebpf') {
          const s = (await status()) as { policies: { name: string; counters: Record<string, number> }[] };
          const c = s.policies.find((p) => p.name === 'mk')!.counters;
          expect(c.bypass_mark).toBe(3);
          // The other policy has no marks: its connects never read one.
          expect(s.policies.find((p) => p.name === 'cg')!.counters.bypass_mark).toBe(0);
        } else {
          const save = sh('ip', ['netns', 'exec', mk, 'iptables-save', '-t', 'nat']);
          expect(save).toContain(
            '-A MESHREDIR_OUTPUT -m mark --mark 0x539/0xfff -m comment --comment "meshredir:mk" -j RETURN',
          );
        }
      });

      /** The proxy's container goes: its processes, then its cgroup; a new one is made under the same path. */
      const recreateProxyCgroup = async () => {
        await env.stop(haproxy);
        await waitFor(() => {
          try {
            rmdirSync(env.cgDir(cgProxy)); // empty once the kernel has seen HAProxy go
            return true;
          } catch {
            return false;
          }
        }, 'the proxy cgroup removed');
        mkdirSync(env.cgDir(cgProxy));
      };
      const fromProxyCgroup = () => each(pod, [['10.206.0.2', 8080, 0, 0, cgProxy, 0]])[0]!;

      it('the proxy cgroup deleted and re-created while the agent runs: the agent sees it (its cgroup watch) and the new cgroup is the proxy at once, long before the interval', async () => {
        const t0 = Date.now();
        await recreateProxyCgroup();
        // No policy file touched and the interval is an hour: only the agent's watch on the cgroups the
        // policies name can make the new cgroup the proxy's (a connection from it then goes out direct).
        await waitFor(
          () => /^up 10\.206\.0\.1 /.test(fromProxyCgroup().data ?? ''),
          'new proxy cgroup recognised',
          agent,
          5000,
        );
        expect(Date.now() - t0).toBeLessThan(10_000);
        // The log is read as the agent writes it: wait for the line rather than expect it already there.
        await waitFor(
          () => logs().some((l) => l.event === 'reconciled' && String(l.reason).includes(`cgroup ${cgProxy} `)),
          'a reconcile for the proxy cgroup in the log',
          agent,
        );
        if (mode === 'iptables') {
          type S = { iptables: { policy: string; live: string; staleCgroups: string[] }[] };
          const ns = ((await status()) as S).iptables.find((n2) => n2.policy === 'cg')!;
          expect(ns).toMatchObject({ live: 'in sync', staleCgroups: [] });
        }
        // The proxy starts again in it: the app goes through it, and its connections out are not looped.
        haproxy = await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1500, source: '10.206.0.11' });
        for (let i = 0; i < 3; i++)
          expect((await env.client(pod, cgApp, ['connect', '10.206.0.2', '8080'])).data).toMatch(/^up 10\.206\.0\.11 /);
      });

      it('the proxy cgroup re-created while no agent runs: until the agent is back the rules point at the deleted cgroup (status and verify say so in iptables mode); the agent repairs it as it starts', async () => {
        await env.stop(agent); // what it installed stays
        await recreateProxyCgroup();
        // Not the proxy's yet: a connection from it is redirected to the proxy port (nothing listens there
        // yet: refused). With the proxy started, that would be a loop.
        expect([fromProxyCgroup()]).toEqual([{ error: 'ECONNREFUSED' }]);
        if (mode === 'iptables') {
          type S = { iptables: { policy: string; live: string; staleCgroups: string[] }[] };
          const ns = ((await status()) as S).iptables.find((n) => n.policy === 'cg')!;
          expect(ns.staleCgroups).toEqual([
            expect.stringMatching(
              new RegExp(
                `^the rule for bypass cgroup ${cgProxy} points at a cgroup that no longer exists \\(id \\d+; the path is now id \\d+, re-created\\)`,
              ),
            ),
          ]);
          expect(ns.live).toMatch(/^drifted: the rule for bypass cgroup .* \(repaired at the next reconcile\)$/);
          const v = env.cli([
            'verify',
            '--json',
            '--bpffs',
            env.bpffs,
            '--iptables-state',
            state,
            '--cgroup',
            cgApp,
            '--netns',
            `/run/netns/${pod}`,
            '--dest',
            '10.206.0.2:8080',
          ]);
          expect(await v.exited).toBe(1);
          const steps = (JSON.parse(v.out) as { steps: { step: string; ok: boolean; detail: string }[] }).steps;
          expect(steps.at(-1)).toMatchObject({
            step: 'rules',
            ok: false,
            detail: expect.stringMatching(
              /points at a cgroup that no longer exists .*the agent adds it again at its next reconcile$/,
            ),
          });
        }
        agent = await env.agent(dir, ['--mode', mode, '--iptables-state', state, '--interval', '3600']);
        expect(fromProxyCgroup().data).toMatch(/^up 10\.206\.0\.1 /);
        if (mode === 'iptables') {
          type S = { iptables: { policy: string; live: string; staleCgroups: string[] }[] };
          const ns = ((await status()) as S).iptables.find((n2) => n2.policy === 'cg')!;
          expect(ns).toMatchObject({ live: 'in sync', staleCgroups: [] });
        }
        haproxy = await env.haproxy(pod, cgProxy, '127.0.0.1:15001', 15001, { uid: 1500, source: '10.206.0.11' });
        for (let i = 0; i < 3; i++)
          expect((await env.client(pod, cgApp, ['connect', '10.206.0.2', '8080'])).data).toMatch(/^up 10\.206\.0\.11 /);
      });
    });
  }
});
