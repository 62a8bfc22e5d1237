// trace-reasons.kernel.test.ts — `meshredir trace --json` as a second process beside the real agent shows
// one event per connect() with the decision and reason the programs counted, for every bypass reason of the
// connect programs (proxy cgroup, owner by uid and by gid, mark, port, CIDR, loopback, no proxy for the
// family, the proxy itself) and of DNS capture (proxy cgroup, owner, mark, destination), and a wrong-netns
// refusal: real connects from forked processes in a test pod (test/tools/connects.py), told apart by pid; a
// DNS reply relabelled by recvmsg4 (a UDP echo as the DNS proxy).
// Then the agent restarts with --trace-ring-bytes 4096: the pinned ring is replaced by a one-page ring, and
// a flood of connects makes `trace` report drops, with events + drops = connects.
import { expect, it } from 'vitest';
import { join } from 'node:path';
import { Env, kernelDescribe, policyYaml, waitFor, type Proc } from './harness.js';
import { Lab, useLab } from './lab.js';
import { decisions, lines, useTracers } from './tracing.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { openPinned, closeFd } from '../../src/bpf/fd.js';
import { mapInfo } from '../../src/bpf/map.js';
import { TRACE_RING } from '../../src/bpf/abi.js';
import type { TraceRecord } from '../../src/modes/ebpf/trace-event.js';

type Conn = [proto: 'tcp' | 'udp', host: string, port: number, uid: number, gid: number, mark: number];

const BYPASSED = 'meshredir_connections_bypassed_total';
const DNS_BYPASSED = 'meshredir_dns_bypassed_total';

kernelDescribe('trace: every reason, and drops with a small ring', () => {
  let env: Env;
  let lab: Lab;
  let agent: Proc;
  let node: string, podA: string, podN: string, cgA: string, cgN: string, cgProxy: string;

  const trace = useTracers(() => env);
  /** Each connect from its own process in the pod netns and cgroup: [{pid, result}]. */
  const connects = async (ns: string, cg: string, conns: Conn[]) =>
    JSON.parse(await env.run(ns, cg, 'python3', [join(env.toolsDir, 'connects.py'), JSON.stringify(conns)])) as {
      pid: number;
      result: string;
    }[];
  const ringBytes = () => {
    const pin = new Pins(env.bpffs).mapPin(TRACE_RING);
    const fd = openPinned(pin, pin);
    try {
      return mapInfo(fd, pin).maxEntries;
    } finally {
      closeFd(fd);
    }
  };

  useLab(
    {
      policies: 'meshredir-test-trace-reasons-',
      bridge: ['10.201.0.1/24'],
      pods: { a: ['10.201.0.11/24'], up: ['10.201.0.100/24', '10.201.0.101/24'] },
      cgroups: ['pod-a', 'pod-n', 'proxy'],
    },
    async (l) => {
      lab = l;
      ({ env, node } = l);
      const { up } = l.ns;
      podA = l.ns.a;
      podN = env.netns('n'); // pod N's netns, which its policy names (on no bridge)
      ({ 'pod-a': cgA, 'pod-n': cgN, proxy: cgProxy } = l.cg);
      await env.server(up, '10.201.0.100', 8080, 'up');
      await env.server(up, '10.201.0.100', 9090, 'port');
      await env.server(up, '10.201.0.101', 8080, 'cidr');
      // The "proxy" is a plain test server: a connect straight to it must not loop back through a real proxy.
      await env.server(node, '10.201.0.1', 15001, 'proxy');
      const a = JSON.parse(
        policyYaml({
          name: 'pod-a',
          cgroup: cgA,
          outbound: '10.201.0.1:15001', // IPv4 only: IPv6 connects bypass (no proxy for the family)
          bypassCgroups: [cgProxy],
          uids: [1337],
          gids: [1338],
          outboundSpec: { excludePorts: [9090], excludeCidrs: ['10.201.0.101/32'] },
        }),
      ) as { spec: { proxy: { bypass: Record<string, unknown> } } & Record<string, unknown> };
      a.spec.proxy.bypass.marks = ['0x539'];
      // On port 53: a query to the proxy itself is then a port-53 call the DNS decision sees (and bypasses).
      a.spec.dns = { proxy: '10.201.0.1:53', all: true }; // UDP connects only: nothing is sent
      l.policy('pod-a', JSON.stringify(a));
      // Pod N's policy names its netns: a connect from its cgroup but another netns is refused.
      l.policy(
        'pod-n',
        policyYaml({ name: 'pod-n', cgroup: cgN, netns: `/run/netns/${podN}`, outbound: '10.201.0.1:15001' }),
      );
      agent = await l.agent(['--interval', '1']);
    },
  );

  it('one event per connect with its decision and reason: each bypass reason of connect and of DNS capture, and a wrong-netns refusal', async () => {
    const t = await trace();
    const want: [Conn, Partial<TraceRecord>, string][] = [
      [
        ['tcp', '10.201.0.100', 8080, 0, 0, 0],
        { decision: 'redirect', reason: 'redirected', to: '10.201.0.1:15001' },
        'ok',
      ],
      [['tcp', '10.201.0.100', 8080, 1337, 0, 0], { decision: 'bypass', reason: 'owner', metric: BYPASSED }, 'ok'],
      [['tcp', '10.201.0.100', 8080, 0, 1338, 0], { decision: 'bypass', reason: 'owner', metric: BYPASSED }, 'ok'],
      [['tcp', '10.201.0.100', 8080, 0, 0, 0x539], { decision: 'bypass', reason: 'mark', metric: BYPASSED }, 'ok'],
      [['tcp', '10.201.0.100', 9090, 0, 0, 0], { decision: 'bypass', reason: 'port', metric: BYPASSED }, 'ok'],
      [['tcp', '10.201.0.101', 8080, 0, 0, 0], { decision: 'bypass', reason: 'cidr', metric: BYPASSED }, 'ok'],
      [
        ['tcp', '127.0.0.1', 8080, 0, 0, 0],
        { decision: 'bypass', reason: 'loopback', metric: BYPASSED },
        'ECONNREFUSED',
      ],
      [
        ['tcp', '::1', 8080, 0, 0, 0],
        { hook: 'connect6', decision: 'bypass', reason: 'no_proxy_for_family' },
        'ECONNREFUSED',
      ],
      [['tcp', '10.201.0.1', 15001, 0, 0, 0], { decision: 'bypass', reason: 'destination_is_proxy' }, 'ok'],
      [
        ['udp', '10.201.0.100', 53, 0, 0, 0],
        { decision: 'redirect', reason: 'connect_udp', to: '10.201.0.1:53' },
        'ok',
      ],
      [['udp', '10.201.0.100', 53, 1337, 0, 0], { decision: 'bypass', reason: 'owner', metric: DNS_BYPASSED }, 'ok'],
      [['udp', '10.201.0.100', 53, 0, 1338, 0], { decision: 'bypass', reason: 'owner', metric: DNS_BYPASSED }, 'ok'],
      [['udp', '10.201.0.100', 53, 0, 0, 0x539], { decision: 'bypass', reason: 'mark', metric: DNS_BYPASSED }, 'ok'],
      [['udp', '10.201.0.1', 53, 0, 0, 0], { decision: 'bypass', reason: 'destination', metric: DNS_BYPASSED }, 'ok'],
      [['udp', '::1', 53, 0, 0, 0], { hook: 'connect6', decision: 'bypass', reason: 'destination' }, 'ok'],
    ];
    const fromPod = await connects(
      podA,
      cgA,
      want.map(([c]) => c),
    );
    const fromProxy = await connects(podA, cgProxy, [
      ['tcp', '10.201.0.100', 8080, 0, 0, 0],
      ['udp', '10.201.0.100', 53, 0, 0, 0],
    ]);
    const fromOtherNetns = await connects(podA, cgN, [['tcp', '10.201.0.100', 8080, 0, 0, 0]]);
    expect(fromPod.map((r) => r.result)).toEqual(want.map(([, , result]) => result));
    expect([...fromProxy, ...fromOtherNetns].map((r) => r.result)).toEqual(['ok', 'ok', 'EPERM']);
    const all = [...fromPod, ...fromProxy, ...fromOtherNetns];
    // The test's own connects (its pids), on the connect hooks: the proxy's SO_ORIGINAL_DST answers are not.
    const mine = () => decisions(t).filter((d) => all.some((r) => r.pid === d.pid));
    // On a timeout, the assertions below name the connect whose event is missing.
    await waitFor(() => mine().length >= all.length, `${all.length} decisions`, t).catch(() => undefined);
    await new Promise((r) => setTimeout(r, 300)); // a second event for any of them would show by now
    expect(await env.stop(t, 'SIGINT')).toBe(0);
    const byPid = (pid: number) => mine().filter((d) => d.pid === pid);
    const counts = all.map((r) => byPid(r.pid).length);
    expect(counts, JSON.stringify(mine().map((d) => [d.pid, d.hook, d.decision, d.reason, d.original]))).toEqual(
      all.map(() => 1),
    );
    const common = { comm: 'python3', policy: 'pod-a', hook: 'connect4' } as const;
    want.forEach(([[, host, port], expected], i) => {
      const original = host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
      const to = expected.decision === 'bypass' ? original : undefined;
      expect(byPid(fromPod[i]!.pid)[0], `${original} ${expected.reason}`).toMatchObject({
        ...common,
        cgroup: cgA,
        original,
        ...(to ? { to } : {}),
        ...expected,
      });
    });
    expect(byPid(fromProxy[0]!.pid)[0]).toMatchObject({
      ...common,
      cgroup: cgProxy,
      decision: 'bypass',
      reason: 'proxy_cgroup',
      metric: BYPASSED,
      original: '10.201.0.100:8080',
      to: '10.201.0.100:8080',
    });
    expect(byPid(fromProxy[1]!.pid)[0]).toMatchObject({
      ...common,
      decision: 'bypass',
      reason: 'proxy_cgroup',
      metric: DNS_BYPASSED,
      original: '10.201.0.100:53',
    });
    expect(byPid(fromOtherNetns[0]!.pid)[0]).toMatchObject({
      ...common,
      policy: 'pod-n',
      cgroup: cgN,
      decision: 'refuse',
      reason: 'wrong_netns',
      metric: 'meshredir_connections_refused_total',
      original: '10.201.0.100:8080',
    });
    expect(lines(t).at(-1)).toMatchObject({ type: 'end', lost: '0' });
  });

  it('shows a DNS reply whose source was relabelled (recvmsg4): from the DNS proxy, shown as from the nameserver asked', async () => {
    // The DNS proxy: a UDP echo on the proxy's address, in the node's netns.
    const echo = env.spawn(node, null, 'python3', [
      '-c',
      [
        'import socket',
        's=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
        "s.bind(('10.201.0.1', 53))",
        "print('ready', flush=True)",
        'while True:',
        '    d, a = s.recvfrom(512)',
        '    s.sendto(d, a)',
      ].join('\n'),
    ]);
    await waitFor(() => echo.out.includes('ready'), 'the DNS echo', echo);
    const t = await trace('--cgroup', cgA);
    const py = [
      'import socket',
      'u=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)',
      'u.settimeout(5)',
      "u.sendto(b'query', ('10.201.0.100', 53))",
      'd, a = u.recvfrom(512)',
      'print(d.decode(), a[0], a[1])',
    ].join('\n');
    expect((await env.run(podA, cgA, 'python3', ['-c', py])).trim()).toBe('query 10.201.0.100 53');
    await waitFor(() => decisions(t).length >= 2, 'the sendto and the reply', t);
    await new Promise((r) => setTimeout(r, 300));
    expect(await env.stop(t, 'SIGINT')).toBe(0);
    await env.stop(echo);
    expect(decisions(t)).toEqual([
      expect.objectContaining({
        comm: 'python3',
        policy: 'pod-a',
        hook: 'sendmsg4',
        decision: 'redirect',
        reason: 'sendmsg_udp',
        original: '10.201.0.100:53',
        to: '10.201.0.1:53',
      }),
      expect.objectContaining({
        comm: 'python3',
        policy: 'pod-a',
        hook: 'recvmsg4',
        decision: 'relabel',
        reason: 'dns_replies',
        metric: 'meshredir_dns_replies_relabelled_total',
        original: '10.201.0.1:53',
        to: '10.201.0.100:53',
      }),
    ]);
  });

  it('--trace-ring-bytes 4096 replaces the ring at restart; a flood of connects reports drops, events + drops = connects', async () => {
    expect(ringBytes()).toBe(256 * 1024);
    // A trace running across the restart reads a ring the programs no longer write to: it ends, saying so.
    const before = await trace();
    await env.stop(agent);
    agent = await lab.agent(['--interval', '1', '--trace-ring-bytes', '4096']);
    expect(ringBytes()).toBe(4096);
    expect(await before.exited).toBe(1);
    expect(before.err).toMatch(/the trace maps under .* were removed or replaced/);
    const t = await trace('--cgroup', cgA);
    // Loopback connects (refused at once, bypassed as loopback): one event each, thousands a second
    // against a one-page ring (about 39 events) read every 100 ms.
    const n = 3000;
    const out = JSON.parse(
      await env.run(podA, cgA, 'python3', [join(env.toolsDir, 'connects.py'), 'flood', '127.0.0.1', '8080', String(n)]),
    ) as { pid: number; n: number };
    expect(out.n).toBe(n);
    await new Promise((r) => setTimeout(r, 300)); // the tracer reads what is left
    expect(await env.stop(t, 'SIGINT')).toBe(0);
    const end = lines(t).at(-1) as { type: string; events: number; lost: string };
    expect(end.type).toBe('end');
    const shown = decisions(t);
    expect(shown.length).toBe(end.events);
    expect(shown.every((d) => d.pid === out.pid && d.reason === 'loopback')).toBe(true);
    expect(BigInt(end.lost)).toBeGreaterThan(0n);
    expect(end.events).toBeGreaterThan(0);
    expect(BigInt(end.events) + BigInt(end.lost)).toBe(BigInt(n));
  });
});
