// dns-agent.kernel.test.ts — DNS capture driven by the real agent, in both modes, with the real parts of
// dnsfix.ts: a nameserver (dnsmasq) in its own netns, DNS proxies (dnsmasq answering test.zone otherwise: a
// node proxy in the proxy cgroup, a sidecar on loopback in the pod's bypass cgroup), and real clients in
// the pod (getent, dig over UDP and TCP, Node's c-ares, Python sendto/connect/TCP) over IPv4 and IPv6. A
// DNS-only policy (no outbound proxy). Each client gets the proxy's answer with the reply from the
// nameserver it asked; pod B (no policy) gets the nameserver's; the proxy's own queries reach the
// nameserver; a stopped proxy gives a refusal or a timeout; status counts, verify --dns, the dry run and
// cleanup; eBPF: nothing left in mr_dns_socks after 10,000 short-lived sockets, cleanup keeps what a
// connected captured socket needs, and a kernel without the DNS hooks keeps the rest of the eBPF mode.
import { expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Env, kernelDescribe, policyDoc, waitFor, CLI, OBJECT, type Proc } from './harness.js';
import { useLab } from './lab.js';
import {
  DnsLab,
  type Pod,
  type Reply,
  ANSWER,
  NS4,
  NS4B,
  NS6,
  NODE_PROXY4,
  NODE_PROXY6,
  PROXY_PORT,
} from './dnsfix.js';
import type { DnsStatus } from '../../src/modes/ebpf/dns-status.js';

interface Step {
  step: string;
  ok: boolean;
  detail: string;
}

const nodeDns = {
  proxy: `${NODE_PROXY4}:${PROXY_PORT}`,
  proxy6: `[${NODE_PROXY6}]:${PROXY_PORT}`,
  nameservers: [NS4, NS4B, NS6],
};
const sidecarDns = { ...nodeDns, proxy: `127.0.0.1:${PROXY_PORT}`, proxy6: `[::1]:${PROXY_PORT}` };

for (const mode of ['ebpf', 'iptables'] as const) {
  kernelDescribe(`DNS capture by the agent, ${mode} mode`, () => {
    let env: Env;
    let lab: DnsLab;
    let dir: string;
    let agent: Proc;
    let nameserver: Proc;
    let nodeProxy: Proc;
    let sidecarCg: string;
    const a = () => lab.pods.a;
    const b = () => lab.pods.b;
    const state = () => join(env.stateDir, 'iptables.json');
    const paths = () => ['--bpffs', env.bpffs, '--state-dir', env.stateDir, '--iptables-state', state()];

    /** pod-a's policy (JSON is YAML): DNS only, the proxies spared by their cgroups. */
    const policy = (dns: Record<string, unknown>) =>
      writeFileSync(
        join(dir, 'pod-a.yaml'),
        policyDoc('pod-a', {
          cgroup: `${env.cgRoot}/pod-a`,
          netns: `/run/netns/${a().ns}`,
          proxy: { bypass: { cgroups: [lab.proxyCg, sidecarCg] } },
          dns,
        }),
      );
    const status = async () =>
      JSON.parse(await env.cliRun(['status', '--json', ...paths()])) as {
        dns?: DnsStatus;
        iptables?: { policy: string; live: string; dnsCaptured?: Record<string, number>; rules: number }[];
        links?: { name: string }[];
      };
    /** verify --dns for a pod; the pod cgroups hold no process between clients, so its netns is named. */
    const verify = async (pod: Pod): Promise<{ ok: boolean; steps: Step[] }> => {
      // verify reads the installation (bpffs, iptables state); it keeps no state dir of its own.
      const where = ['--cgroup', pod.cg, '--netns', `/run/netns/${pod.ns}`];
      const p = env.cli(['verify', '--json', '--dns', ...where, '--bpffs', env.bpffs, '--iptables-state', state()]);
      await p.exited;
      if (!p.out.trim()) throw new Error(`verify --dns printed nothing: ${p.err}`);
      return JSON.parse(p.out) as { ok: boolean; steps: Step[] };
    };
    /** Polls until `ok`. */
    const until = async <T>(get: () => Promise<T>, ok: (x: T) => boolean, what: string, ms = 15_000) => {
      const end = Date.now() + ms;
      for (;;) {
        const x = await get();
        if (ok(x)) return x;
        if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms: ${JSON.stringify(x)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    /** The proxy the rules or entries now send IPv4 queries to. */
    const inForce = async (proxy: string) =>
      until(
        status,
        (s) =>
          mode === 'ebpf'
            ? s.dns?.policies.some((p) => p.proxy === proxy) === true
            : (s.iptables ?? []).some((n) => n.policy === 'pod-a' && n.live === 'in sync') &&
              readRules().includes(proxy.startsWith('127.') ? `--to-ports ${PROXY_PORT}` : `--to-destination ${proxy}`),
        `pod-a's DNS capture to ${proxy}`,
      );
    /** pod A's nat rules, both backends. */
    const readRules = () =>
      ['nft', 'legacy']
        .map((b) =>
          execFileSync('ip', ['netns', 'exec', a().ns, `iptables-${b}-save`, '-t', 'nat'], { encoding: 'utf8' }),
        )
        .join('');

    useLab(
      {
        policies: 'meshredir-dns-',
        beforeTeardown: async () => {
          if (agent) await env.stop(agent);
          await env.cliRun(['cleanup', '--force', ...paths()]).catch(() => '');
          lab?.cleanup();
        },
      },
      async (l) => {
        ({ env, dir } = l);
        lab = new DnsLab(env);
        sidecarCg = env.cgroup('pod-a/sidecar');
        nameserver = await lab.nameserver();
        nodeProxy = await lab.nodeProxy();
        policy(nodeDns);
        agent = await l.agent(['--mode', mode, '--iptables-state', state(), '--interval', '1']);
        await inForce(nodeDns.proxy);
      },
    );

    it('a node DNS proxy: glibc, dig (UDP, TCP), c-ares and Python get its answer, from the nameserver asked; pod B the nameserver’s', async () => {
      await lab.expectGlibc(ANSWER.proxy);
      for (const ns of [NS4, NS6]) {
        expect(await lab.dig(a(), a().cg, ns, 'test.zone')).toBe(ANSWER.proxy.a);
        expect(await lab.dig(a(), a().cg, ns, 'test.zone', ['+tcp'])).toBe(ANSWER.proxy.a);
        expect(await lab.dig(b(), b().cg, ns, 'test.zone', ['+tcp'])).toBe(ANSWER.nameserver.a);
        expect(await lab.cares(a(), a().cg, ns, 'test.zone')).toBe(ANSWER.proxy.a);
      }
      expect(await lab.cares(b(), b().cg, NS6, 'test.zone')).toBe(ANSWER.nameserver.a);
      await lab.expectPythonClients(ANSWER.proxy.a);
      // The node proxy's own query for fwd.test reaches the nameserver.
      expect(await lab.dig(a(), a().cg, NS4, 'fwd.test')).toBe(ANSWER.fwd.a);
      expect(nameserver.err).toMatch(new RegExp(`fwd\\.test from ${NODE_PROXY4.replace(/\./g, '\\.')}`));
    });

    it('status counts the captured queries; verify --dns passes for pod A and fails for pod B; the dry run shows it', async () => {
      const s = await status();
      if (mode === 'ebpf') {
        expect(s.dns!.available).toBe(true);
        const p = s.dns!.policies.find((x) => x.policy === 'pod-a')!;
        expect(p).toMatchObject({ proxy: nodeDns.proxy, proxy6: nodeDns.proxy6, tcp: true });
        expect((p.nameservers as string[]).sort()).toEqual([NS4, NS4B, NS6].sort());
        expect(p.counters.udp_connect).toBeGreaterThan(5);
        expect(p.counters.udp_sendmsg).toBeGreaterThanOrEqual(3);
        expect(p.counters.tcp_connect).toBeGreaterThanOrEqual(5);
        expect(p.counters.replies).toBeGreaterThan(5);
        expect(p.counters.err_full).toBe(0);
      } else {
        const n = s.iptables!.find((x) => x.policy === 'pod-a')!;
        expect(n.live).toBe('in sync');
        expect(n.dnsCaptured!.ipv4).toBeGreaterThan(5);
        expect(n.dnsCaptured!.ipv6).toBeGreaterThan(3);
      }
      // The agent's /metrics: the same counts as status, in the families docs/metrics.md names.
      const address = agent.err
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { event?: string; address?: string })
        .find((l) => l.event === 'metrics')?.address;
      const metrics = await (await fetch(`http://${address}/metrics`)).text();
      /** The value of the one sample of `name` whose labels include all of `labels` (label order free). */
      const sample = (name: string, labels: Record<string, string>) => {
        const lines = metrics
          .split('\n')
          .filter(
            (l) => l.startsWith(`${name}{`) && Object.entries(labels).every(([k, v]) => l.includes(`${k}="${v}"`)),
          );
        expect(lines, `${name} ${JSON.stringify(labels)}`).toHaveLength(1);
        return Number(lines[0]!.split(' ').pop());
      };
      if (mode === 'ebpf') {
        expect(sample('meshredir_dns_captured_total', { policy: 'pod-a', call: 'connect_udp' })).toBeGreaterThan(5);
        expect(sample('meshredir_dns_captured_total', { policy: 'pod-a', call: 'connect_tcp' })).toBeGreaterThanOrEqual(
          5,
        );
        expect(sample('meshredir_dns_replies_relabelled_total', { policy: 'pod-a' })).toBeGreaterThan(5);
      } else {
        expect(sample('meshredir_dns_flows_captured_total', { policy: 'pod-a', protocol: 'udp' })).toBeGreaterThan(5);
        expect(
          sample('meshredir_dns_flows_captured_total', { policy: 'pod-a', protocol: 'tcp' }),
        ).toBeGreaterThanOrEqual(5);
      }
      const v = await verify(a());
      expect(
        v.steps.filter((x) => !x.ok),
        JSON.stringify(v.steps),
      ).toEqual([]);
      const want =
        mode === 'ebpf'
          ? ['dns links', 'dns policy', 'dns capture', 'dns getpeername', 'dns state', 'dns proxy']
          : ['dns rules', 'dns capture', 'dns bypass', 'dns proxy'];
      expect(want.filter((x) => !v.steps.some((y) => y.step === x))).toEqual([]);
      const vb = await verify(b());
      expect(vb.ok).toBe(false);
      const dry = env.cli(env.agentArgs(dir, ['--dry-run', '--mode', mode, '--iptables-state', state()]));
      expect(await dry.exited, dry.err).toBe(0);
      if (mode === 'ebpf') {
        const d = JSON.parse(dry.out) as {
          dns: { available: boolean; entries: { mr_dns_pol: unknown[]; mr_dns_ns: unknown[] } };
        };
        expect(d.dns.available).toBe(true);
        expect(d.dns.entries.mr_dns_pol).toHaveLength(1);
        expect(d.dns.entries.mr_dns_ns).toHaveLength(3);
      } else {
        expect(dry.out).toMatch(/# IPv4: in sync, nothing to apply/);
      }
    });

    it('a sidecar DNS proxy on loopback in the pod (its bypass cgroup): its answer for the apps, its own upstream queries reach the nameserver', async () => {
      const sidecar = await lab.dnsmasq(a().ns, sidecarCg, ['127.0.0.1', '::1'], PROXY_PORT, ANSWER.sidecar, {
        forwardTo: NS4,
      });
      policy(sidecarDns);
      try {
        await inForce(sidecarDns.proxy);
        await lab.expectSidecar();
        // No loop: the sidecar forwards fwd.test to the nameserver, from the pod's own address.
        expect(nameserver.err).toMatch(/fwd\.test from 10\.77\.0\.2\b/);
        const v = await verify(a());
        expect(
          v.steps.filter((x) => !x.ok),
          JSON.stringify(v.steps),
        ).toEqual([]);
        // Proxy down: what a dead nameserver gives, never an answer from elsewhere.
        await env.stop(sidecar);
        await lab.expectProxyDown({ connect: NS4, tcp: NS6, sendto: NS4 });
        expect(await lab.getent(a(), a().cg, 'ahostsv4', 'test.zone')).toEqual(['ERR']);
        const broken = await verify(a());
        expect(broken.steps.find((x) => !x.ok)?.step).toBe('dns proxy');
      } finally {
        await env.stop(sidecar);
        policy(nodeDns);
        await inForce(nodeDns.proxy);
      }
    });

    it('node proxy down: a refusal (connected UDP, TCP) or a timeout (sendto), never an answer from elsewhere', async () => {
      await env.stop(nodeProxy);
      try {
        await lab.expectProxyDown({ connect: NS4, tcp: NS4, sendto: NS6 });
        expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).not.toContain(ANSWER.nameserver.a);
      } finally {
        nodeProxy = await lab.nodeProxy();
      }
    });

    it(`${mode === 'ebpf' ? '10,000' : '2,000'} queries from short-lived sockets: all answered by the proxy, from the nameserver${mode === 'ebpf' ? ', and no entry left' : ''}`, async () => {
      const n = mode === 'ebpf' ? 10_000 : 2_000;
      const r = await lab.dnsq<{
        ok: number;
        failed: number;
        answers: Record<string, number>;
        sources: Record<string, number>;
      }>(a(), a().cg, ['loop', String(n), 'test.zone', NS4], 240_000);
      expect(r).toEqual({ ok: n, failed: 0, answers: { [ANSWER.proxy.a]: n }, sources: { [NS4]: n } });
      if (mode === 'ebpf') {
        const s = await until(status, (x) => x.dns!.openSockets === 0, 'no captured socket open');
        expect(s.dns!.openSockets).toBe(0);
      }
    }, 300_000);

    if (mode === 'ebpf') {
      it('cleanup keeps what an open connected captured socket needs (its replies still from the nameserver); --force removes it', async () => {
        const hold = env.spawn(
          a().ns,
          a().cg,
          '/usr/bin/python3',
          [join(env.toolsDir, 'dnsq.py'), 'hold', 'test.zone', NS4],
          {
            stdin: true,
          },
        );
        await waitFor(() => hold.out.includes('\n'), 'hold: first reply', hold);
        expect(JSON.parse(hold.out.trim()) as Reply).toMatchObject({
          answer: ANSWER.proxy.a,
          from: { address: NS4, port: 53 },
        });
        await env.stop(agent);
        const c = env.cli(['cleanup', '--json', ...paths()]);
        await c.exited;
        const kept = (JSON.parse(c.out) as { kept: string[] }).kept.join('\n');
        expect(kept).toMatch(/mr_dns_recv4/);
        expect(kept).toMatch(/mr_dns_socks/);
        // New queries are not captured any more; the held socket's next reply still shows the nameserver.
        expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
        hold.child.stdin!.end();
        await hold.exited;
        const second = JSON.parse(hold.out.trim().split('\n').pop()!) as Reply;
        expect(second).toMatchObject({ id: 8, answer: ANSWER.proxy.a, from: { address: NS4, port: 53 } });
        // Closed: a second cleanup removes the rest.
        const again = env.cli(['cleanup', '--json', ...paths()]);
        expect(await again.exited, again.out).toBe(0);
        agent = await env.agent(dir, ['--mode', mode, '--interval', '1']);
        await inForce(nodeDns.proxy);
      });

      it('a kernel without the DNS hooks (recvmsg4 refused): the rest of the eBPF mode loads, DNS is off and says why, queries go direct', async () => {
        await env.stop(agent);
        await env.cliRun(['cleanup', '--force', ...paths()]);
        const fault = { MESHREDIR_FAULT: 'no-hook:cgroup/recvmsg4' };
        const pr = env.spawn(
          null,
          null,
          process.execPath,
          [CLI, 'probe', '--json', '--object', OBJECT, '--cgroup-parent', env.cgRootDir],
          { env: fault },
        );
        expect(await pr.exited, pr.err).toBe(0);
        const probe = JSON.parse(pr.out) as {
          mode: string;
          object: { loads: boolean; attaches: boolean; without?: Record<string, string> };
        };
        expect(probe.mode).toBe('ebpf');
        expect(probe.object).toMatchObject({ loads: true, attaches: true });
        expect(Object.keys(probe.object.without ?? {})).toEqual(['mr_dns_recv4']);
        const args = env.agentArgs(dir, ['--interval', '1', '--iptables-state', state()]);
        const degraded = env.spawn(null, null, process.execPath, [CLI, ...args], { env: fault });
        try {
          await waitFor(
            () => degraded.err.includes('redirect-ready') || degraded.out.includes('redirect-ready'),
            'agent ready',
            degraded,
            30_000,
          );
          const s = await status();
          expect(s.dns!.available).toBe(false);
          // recvmsg4 missing: the hooks that need it (release, recvmsg6: DNS_NEEDS) and sendmsg4/6 stay off too.
          expect(Object.keys(s.dns!.unavailable!).sort()).toEqual([
            'mr_dns_recv4',
            'mr_dns_recv6',
            'mr_dns_release',
            'mr_dns_send4',
            'mr_dns_send6',
          ]);
          expect(s.dns!.unavailable!.mr_dns_recv4).toMatch(/not offered|not attached/);
          expect(s.dns!.policies).toEqual([]); // nothing written: nothing is captured
          expect((s.links ?? []).map((l) => l.name)).toContain('mr_connect4');
          expect((s.links ?? []).map((l) => l.name)).not.toContain('mr_dns_send4');
          expect(degraded.err).toMatch(/dns_unavailable/);
          expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
          const v = await verify(a());
          expect(v.ok).toBe(false);
        } finally {
          await env.stop(degraded);
          await env.cliRun(['cleanup', '--force', ...paths()]);
        }
        agent = await env.agent(dir, ['--mode', mode, '--interval', '1']);
        await inForce(nodeDns.proxy);
        expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
      });
    }
  });
}
