// redirect.kernel.test.ts — eBPF outbound redirection end to end: real cgroups, netns, an
// unmodified HAProxy reading SO_ORIGINAL_DST, and the agent CLI as users run it.
import { expect, it } from 'vitest';
import { mkdirSync } from 'node:fs';
import { Env, kernelDescribe, policyYaml, ORIGDST_PROXY, type Proc } from './harness.js';
import { useLab } from './lab.js';

kernelDescribe('eBPF redirection, sidecar-less (node proxy in its own netns)', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  let node: string, podA: string, podB: string, podC: string, podD: string, up: string;
  let cgA: string, cgB: string, cgC: string, cgD: string, cgProxy: string;
  let p6: Proc;

  useLab(
    {
      bridge: ['10.200.0.1/24', 'fd00:200::1/64'],
      pods: {
        a: ['10.200.0.11/24', 'fd00:200::11/64'],
        b: ['10.200.0.12/24', 'fd00:200::12/64'],
        c: ['10.200.0.13/24', 'fd00:200::13/64'],
        d: ['10.200.0.14/24', 'fd00:200::14/64'],
        up: [
          '10.200.0.100/24',
          'fd00:200::100/64',
          '10.200.0.97/24',
          '10.200.0.120/24',
          'fd00:200::97/64',
          'fd00:200::98/64',
        ],
      },
      cgroups: ['pod-a', 'pod-b', 'pod-c', 'pod-d', 'proxy'],
    },
    async (lab) => {
      ({ env, dir, node } = lab);
      ({ a: podA, b: podB, c: podC, d: podD, up } = lab.ns);
      ({ 'pod-a': cgA, 'pod-b': cgB, 'pod-c': cgC, 'pod-d': cgD, proxy: cgProxy } = lab.cg);
      await env.server(up, '10.200.0.100', 8080, 'up');
      await env.server(up, '10.200.0.100', 9090, 'up9090');
      await env.server(up, 'fd00:200::100', 8080, 'up6');
      for (const [addr, port] of [
        ['10.200.0.97', 8080],
        ['10.200.0.120', 8080],
        ['10.200.0.120', 9090],
        ['fd00:200::97', 8080],
        ['fd00:200::98', 8080],
      ] as const) {
        await env.server(up, addr, port, `up-${addr}-${port}`);
      }
      await env.haproxy(node, cgProxy, '10.200.0.1:15001', 15001);
      // IPv6: HAProxy asks only SOL_IP; this proxy asks IP6T_SO_ORIGINAL_DST on v6 sockets.
      p6 = env.spawn(node, cgProxy, ORIGDST_PROXY, ['--listen6', '[fd00:200::1]:15006', '--mode', 'forward']);
      await env.waitListening(node, 15006, 'origdst-proxy', p6);
      lab.policy(
        'a',
        policyYaml({
          name: 'pod-a',
          cgroup: cgA,
          outbound: '10.200.0.1:15001',
          outbound6: '[fd00:200::1]:15006',
          bypassCgroups: [cgProxy],
          outboundSpec: { excludePorts: [9090], excludeCidrs: ['10.200.0.96/30'] },
        }),
      );
      // Include/exclude lists, nested both ways; the longest prefix decides.
      lab.policy(
        'c',
        policyYaml({
          name: 'pod-c',
          cgroup: cgC,
          outbound: '10.200.0.1:15001',
          bypassCgroups: [cgProxy],
          outboundSpec: {
            includePorts: [8080],
            includeCidrs: ['10.200.0.0/24', '10.200.0.97/32'],
            excludeCidrs: ['10.200.0.96/28'],
          },
        }),
      );
      lab.policy(
        'd',
        policyYaml({
          name: 'pod-d',
          cgroup: cgD,
          outbound6: '[fd00:200::1]:15006',
          bypassCgroups: [cgProxy],
          outboundSpec: { includeCidrs: ['fd00:200::/64', 'fd00:200::97/128'], excludeCidrs: ['fd00:200::/120'] },
        }),
      );
      agent = await lab.agent();
    },
  );

  it('a pod with a policy reaches the upstream through the proxy; getpeername shows the original destination', async () => {
    const r = await env.client(podA, cgA, ['connect', '10.200.0.100', '8080']);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    // The upstream saw the proxy's address, so the connection went through HAProxy…
    expect(r.data).toMatch(/^up 10\.200\.0\.1 \d+$/);
    // …and the application still believes it talks to the original destination.
    expect(r.peer).toEqual({ address: '10.200.0.100', port: 8080 });
  });

  it('a pod without a policy goes direct', async () => {
    const r = await env.client(podB, cgB, ['connect', '10.200.0.100', '8080']);
    expect(r.data).toMatch(/^up 10\.200\.0\.12 \d+$/);
  });

  it('excluded port and excluded CIDR go direct', async () => {
    const port = await env.client(podA, cgA, ['connect', '10.200.0.100', '9090']);
    expect(port.data).toMatch(/^up9090 10\.200\.0\.11 /);
    // pod A excludes 10.200.0.96/30 (.96-.99).
    const cidr = await env.client(podA, cgA, ['connect', '10.200.0.97', '8080']);
    expect(cidr.data).toMatch(/^up-10\.200\.0\.97-8080 10\.200\.0\.11 /);
  });

  it('include lists and nested CIDRs: the longest prefix decides, in both directions (IPv4)', async () => {
    // pod C: includePorts [8080]; include 10.200.0.0/24 and 10.200.0.97/32; exclude 10.200.0.96/28.
    const via = async (addr: string, port: number) =>
      (await env.client(podC, cgC, ['connect', addr, String(port)])).data ?? '';
    expect(await via('10.200.0.120', 8080)).toMatch(/^up-10\.200\.0\.120-8080 10\.200\.0\.1 /); // /24 include → proxy
    expect(await via('10.200.0.100', 8080)).toMatch(/^up 10\.200\.0\.13 /); // /28 exclude inside /24 include → direct
    expect(await via('10.200.0.97', 8080)).toMatch(/^up-10\.200\.0\.97-8080 10\.200\.0\.1 /); // /32 include inside /28 exclude → proxy
    expect(await via('10.200.0.120', 9090)).toMatch(/^up-10\.200\.0\.120-9090 10\.200\.0\.13 /); // port not included → direct
  });

  it('include and exclude CIDRs for IPv6; an IPv6-only policy leaves IPv4 alone', async () => {
    // pod D: include fd00:200::/64 and fd00:200::97/128; exclude fd00:200::/120 (::0-::ff).
    const via = async (addr: string) => (await env.client(podD, cgD, ['connect', addr, '8080'])).data ?? '';
    expect(await via('fd00:200::100')).toMatch(/^up6 fd00:200::1 /); // outside the /120: /64 include → proxy
    expect(await via('fd00:200::98')).toMatch(/^up-fd00:200::98-8080 fd00:200::14 /); // /120 exclude → direct
    expect(await via('fd00:200::97')).toMatch(/^up-fd00:200::97-8080 fd00:200::1 /); // /128 include inside the exclude → proxy
    expect((await env.client(podD, cgD, ['connect', '10.200.0.100', '8080'])).data).toMatch(/^up 10\.200\.0\.14 /);
  });

  it('IPv6 through a proxy that asks IP6T_SO_ORIGINAL_DST; getpeername6 shows the original', async () => {
    const r = await env.client(podA, cgA, ['connect', 'fd00:200::100', '8080']);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.data).toMatch(/^up6 fd00:200::1 \d+$/);
    expect(r.peer).toEqual({ address: 'fd00:200::100', port: 8080 });
  });

  it('IPv4-mapped IPv6 destinations are redirected as IPv4 (to the IPv4 proxy)', async () => {
    const r = await env.client(podA, cgA, ['connect', '::ffff:10.200.0.100', '8080']);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.data).toMatch(/^up 10\.200\.0\.1 \d+$/);
    expect(r.peer).toEqual({ address: '::ffff:10.200.0.100', port: 8080 });
  });

  it('a container cgroup created after the policy was loaded is covered on its first connect', async () => {
    const late = env.cgroup('pod-a/late-container');
    const r = await env.client(podA, late, ['connect', '10.200.0.100', '8080']);
    expect(r.data).toMatch(/^up 10\.200\.0\.1 /);
  });

  it('a uid-1337 workload is still redirected when the policy bypasses by cgroup only', async () => {
    const r = await env.client(podA, cgA, ['connect', '10.200.0.100', '8080'], { uid: 1337 });
    expect(r.data).toMatch(/^up 10\.200\.0\.1 /);
  });

  it('status --json reports the links at the test root and the policy counters', async () => {
    const s = JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as {
      attachPoint: string;
      links: { name: string; attached: boolean }[];
      policies: { name: string; cgroup: string; counters: Record<string, number> }[];
    };
    expect(s.attachPoint).toBe(env.cgRoot);
    expect(s.links.map((l) => l.name).sort()).toEqual([
      'mr_connect4',
      'mr_connect6',
      // DNS capture's hooks: attached on a kernel that has them, whether or not a policy captures DNS — but
      // not mr_dns_release, which runs on every socket close: attached only while DNS capture needs it.
      'mr_dns_recv4',
      'mr_dns_recv6',
      'mr_dns_send4',
      'mr_dns_send6',
      'mr_getpeername4',
      'mr_getpeername6',
      'mr_getsockopt',
      'mr_in_origdst',
      // Not mr_setsockopt: no policy here accelerates (it is attached only while one does).
      'mr_skmsg',
      'mr_sockops',
    ]);
    expect(s.links.every((l) => l.attached)).toBe(true);
    const a = s.policies.find((p) => p.name === 'pod-a')!;
    expect(a.cgroup).toBe(cgA);
    expect(a.counters.redirected).toBeGreaterThanOrEqual(4);
    expect(a.counters.origdst_served).toBeGreaterThanOrEqual(4);
    expect(a.counters.bypass_port).toBeGreaterThanOrEqual(1);
    expect(a.counters.bypass_cidr).toBeGreaterThanOrEqual(1);
    expect(a.counters.bypass_cgroup).toBeGreaterThanOrEqual(1); // HAProxy's own upstream connections
  });

  it('verify: the chain works for pod A, and says which link is broken otherwise', async () => {
    const verify = async (args: string[]) => {
      const p = env.cli(['verify', '--json', '--bpffs', env.bpffs, ...args]);
      const code = await p.exited;
      return {
        code,
        out: JSON.parse(p.out) as { ok: boolean; steps: { step: string; ok: boolean; detail: string }[] },
      };
    };
    const good = await verify(['--cgroup', cgA, '--netns', `/run/netns/${podA}`]);
    expect(good.out.ok, JSON.stringify(good.out.steps)).toBe(true);
    expect(good.code).toBe(0);
    expect(good.out.steps.map((s) => s.step)).toEqual([
      'cgroup',
      'attached',
      'policy',
      'redirect',
      'original destination',
      'getpeername',
      'proxy',
    ]);

    const noPolicy = await verify(['--cgroup', cgB, '--netns', `/run/netns/${podB}`]);
    expect(noPolicy.code).toBe(1);
    expect(noPolicy.out.steps.at(-1)).toMatchObject({ step: 'policy', ok: false });

    const missing = await verify(['--cgroup', `${env.cgRoot}/nope`]);
    expect(missing.out.steps.at(-1)).toMatchObject({ step: 'cgroup', ok: false });

    await env.stop(p6); // the IPv6 proxy goes down
    const down = await verify(['--cgroup', cgA, '--netns', `/run/netns/${podA}`, '--dest', '[fd00:200::100]:8080']);
    expect(down.code).toBe(1);
    expect(down.out.steps.at(-1)).toMatchObject({ step: 'proxy', ok: false });
    expect(down.out.steps.at(-1)!.detail).toMatch(/nothing listens on \[fd00:200::1\]:15006/);
    expect(down.out.steps.find((s) => s.step === 'original destination')).toMatchObject({ ok: true });
  });

  it('SIGTERM leaves redirection in place; cleanup removes it', async () => {
    expect(await env.stop(agent)).toBe(0);
    const r = await env.client(podA, cgA, ['connect', '10.200.0.100', '8080']);
    expect(r.data).toMatch(/^up 10\.200\.0\.1 /);
    await env.cliRun(env.cleanupArgs());
    const d = await env.client(podA, cgA, ['connect', '10.200.0.100', '8080']);
    expect(d.data).toMatch(/^up 10\.200\.0\.11 /);
    mkdirSync(dir, { recursive: true });
  });
});
