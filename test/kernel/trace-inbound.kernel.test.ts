// trace-inbound.kernel.test.ts — `meshredir trace --json` shows inbound interception's sk_lookup decisions
// beside the real agent: a connection from another pod handed to an unmodified HAProxy sidecar (the client
// as `from`, the pod's address as the original destination, HAProxy's listener as where it went), HAProxy's
// own connection to the app bypassed (loopback: from the pod itself), an excluded port bypassed; one event
// each, with no process (sk_lookup runs for a packet), and none for a trace filtered by process.
import { expect, it } from 'vitest';
import { join } from 'node:path';
import { Env, kernelDescribe, policyDoc, waitFor, type Proc } from './harness.js';
import { useLab } from './lab.js';
import { decisions, useTracers } from './tracing.js';

const B4 = '10.202.0.12';

kernelDescribe('trace: inbound sk_lookup decisions', () => {
  let env: Env;
  let agent: Proc;
  let podA: string, cgClient: string;

  const trace = useTracers(() => env);
  const registered = async () => {
    const s = JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir])) as {
      inbound: { policy: string; listeners: { ipv4?: unknown } }[];
    };
    return Boolean(s.inbound.find((p) => p.policy === 'pod-b')?.listeners.ipv4);
  };

  useLab(
    {
      policies: 'meshredir-test-trace-inbound-',
      bridge: ['10.202.0.1/24'],
      pods: { a: ['10.202.0.11/24'], b: [`${B4}/24`] },
      // client: no policy, so the client's connect is not redirected outbound
      cgroups: ['client', 'pod-b', 'pod-b/proxy', 'pod-b/app'],
    },
    async (lab) => {
      env = lab.env;
      podA = lab.ns.a;
      const podB = lab.ns.b;
      cgClient = lab.cg.client;
      const { 'pod-b': cgB, 'pod-b/proxy': cgProxyB, 'pod-b/app': cgAppB } = lab.cg;
      for (const [port, name] of [
        [8080, 'app-b'],
        [9090, 'app-9090'],
      ] as const) {
        const p = env.spawn(podB, cgAppB, process.execPath, [join(env.toolsDir, 'server.mjs'), B4, String(port), name]);
        await waitFor(() => p.out.includes('ready'), name, p);
      }
      await env.haproxy(podB, cgProxyB, '127.0.0.1:15006', 15006);
      lab.policy(
        'pod-b',
        policyDoc('pod-b', {
          cgroup: cgB,
          proxy: { inbound: 15006, bypass: { cgroups: [cgProxyB] } },
          inbound: { excludePorts: [9090] },
        }),
      );
      agent = await lab.agent(['--interval', '1']);
      const end = Date.now() + 15_000;
      while (!(await registered())) {
        if (Date.now() > end) throw new Error(`HAProxy's listener not registered: ${agent.err.slice(-2000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
  );

  it('intercepted (client → pod → proxy listener), bypassed from the pod itself and by port: one event each, no process', async () => {
    const t = await trace('--policy', 'pod-b');
    const via = await env.client(podA, cgClient, ['connect', B4, '8080']);
    expect(via.ok, JSON.stringify(via)).toBe(true);
    expect(via.data).toMatch(new RegExp(`^app-b ${B4.replace(/\./g, '\\.')} `)); // the app saw HAProxy
    const direct = await env.client(podA, cgClient, ['connect', B4, '9090']);
    expect(direct.data).toMatch(/^app-9090 10\.202\.0\.11 /);
    const lookups = () => decisions(t).filter((d) => d.hook === 'sk_lookup');
    await waitFor(() => lookups().length >= 3, 'three sk_lookup decisions', t).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300));
    expect(await env.stop(t, 'SIGINT')).toBe(0);
    const none = { pid: 0, comm: '', cgroup: '-', policy: 'pod-b', hook: 'sk_lookup' };
    const got = lookups();
    expect(got, JSON.stringify(got.map((d) => [d.decision, d.reason, d.from, d.original, d.to]))).toHaveLength(3);
    expect(got).toContainEqual(
      expect.objectContaining({
        ...none,
        decision: 'redirect',
        reason: 'inbound_intercepted',
        metric: 'meshredir_inbound_connections_redirected_total',
        from: `10.202.0.11:${via.local!.port}`,
        original: `${B4}:8080`,
        to: '127.0.0.1:15006',
      }),
    );
    expect(got).toContainEqual(
      expect.objectContaining({
        ...none,
        decision: 'bypass',
        reason: 'loopback',
        metric: 'meshredir_inbound_connections_bypassed_total',
        from: expect.stringMatching(new RegExp(`^${B4.replace(/\./g, '\\.')}:\\d+$`)),
        original: `${B4}:8080`,
        to: `${B4}:8080`,
      }),
    );
    expect(got).toContainEqual(
      expect.objectContaining({
        ...none,
        decision: 'bypass',
        reason: 'port',
        from: `10.202.0.11:${direct.local!.port}`,
        original: `${B4}:9090`,
        to: `${B4}:9090`,
      }),
    );

    // A trace filtered by process sees no sk_lookup event: it runs for a packet, in no process.
    const byCgroup = await trace('--cgroup', cgClient);
    expect((await env.client(podA, cgClient, ['connect', B4, '8080'])).ok).toBe(true);
    await new Promise((r) => setTimeout(r, 500));
    expect(await env.stop(byCgroup, 'SIGINT')).toBe(0);
    expect(decisions(byCgroup).filter((d) => d.hook === 'sk_lookup')).toEqual([]);
  });
});
