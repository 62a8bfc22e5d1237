// dns.kernel.test.ts — DNS capture in eBPF mode on the real kernel with real resolvers: glibc
// (getent, connected UDP), dig (UDP and TCP), Node's c-ares, and unconnected sendto (dnsq.py), over
// IPv4, IPv6 and v4-mapped. Queries to the pod's nameserver reach the DNS proxy (a node proxy in its
// own netns, then a sidecar on loopback), replies seem to come from the nameserver asked, a pod without
// the policy reaches the nameserver, the proxy's own queries are not captured, a stopped proxy gives
// the failure a dead nameserver gives, and 10,000 short-lived sockets leave no entry behind.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Env, kernelDescribe, OBJECT, policyDoc, type Proc } from './harness.js';
import { DnsLoader, DNS_ATTACH_ORDER } from './dnsload.js';
import { DnsLab, type Reply, ANSWER, NS4, NS4B, NS6, NODE_PROXY4, NODE_PROXY6, PROXY_PORT } from './dnsfix.js';
import { parsePolicyText } from '../../src/policy/load.js';
import type { Policy } from '../../src/policy/schema.js';

kernelDescribe('DNS capture, eBPF mode', () => {
  let env: Env;
  let lab: DnsLab;
  let bpf: DnsLoader;
  let nameserver: Proc;
  let proxy: Proc;
  let policyCg: string;
  let sidecarCg: string;
  const slot = 1;
  const facts: Record<string, string> = {};

  const policy = (dns: Record<string, unknown>): Policy => {
    const doc = policyDoc('pod-a', {
      cgroup: policyCg,
      // Outbound only for a port nothing uses: these tests are about DNS.
      proxy: { outbound: '127.0.0.1:15001', bypass: { cgroups: [lab.proxyCg, sidecarCg], uids: [], gids: [] } },
      outbound: { includePorts: [9] },
      dns,
    });
    const r = parsePolicyText(doc, 'pod-a.yaml');
    expect(r.errors).toEqual([]);
    return r.policies[0]!;
  };
  const nodeDns = {
    proxy: `${NODE_PROXY4}:${PROXY_PORT}`,
    proxy6: `[${NODE_PROXY6}]:${PROXY_PORT}`,
    nameservers: [NS4, NS4B, NS6],
  };
  const apply = (dns: Record<string, unknown>) => {
    for (const m of ['mr_dns_pol', 'mr_dns_ns'] as const) for (const k of bpf.map(m).keys()) bpf.map(m).delete(k);
    bpf.apply(
      [policy(dns)],
      new Map([['pod-a', { cgroup: env.cgDir(policyCg), bypass: [env.cgDir(lab.proxyCg), env.cgDir(sidecarCg)] }]]),
    );
  };

  beforeAll(async () => {
    env = new Env();
    lab = new DnsLab(env);
    policyCg = `${env.cgRoot}/pod-a`;
    sidecarCg = env.cgroup('pod-a/sidecar');
    nameserver = await lab.nameserver();
    proxy = await lab.nodeProxy();
    bpf = new DnsLoader(OBJECT);
    apply(nodeDns);
    bpf.attach(env.cgRootDir);
  });

  afterAll(async () => {
    bpf?.close();
    lab?.cleanup();
    const problems = await env?.teardown();
    expect(problems).toEqual([]);
  });

  const a = () => lab.pods.a;
  const b = () => lab.pods.b;

  it('glibc (getent, connected UDP): pod A gets the proxy’s answer, pod B the nameserver’s, over IPv4 and IPv6', async () => {
    await lab.expectGlibc(ANSWER.proxy);
    const s = bpf.stats(slot);
    expect(s.udp_connect).toBeGreaterThanOrEqual(2);
    expect(s.replies).toBeGreaterThanOrEqual(2);
  });

  it('dig over UDP and TCP, IPv4 and IPv6', async () => {
    for (const ns of [NS4, NS6]) {
      expect(await lab.dig(a(), a().cg, ns, 'test.zone')).toBe(ANSWER.proxy.a);
      expect(await lab.dig(a(), a().cg, ns, 'test.zone', ['+tcp'])).toBe(ANSWER.proxy.a);
      expect(await lab.dig(b(), b().cg, ns, 'test.zone')).toBe(ANSWER.nameserver.a);
      expect(await lab.dig(b(), b().cg, ns, 'test.zone', ['+tcp'])).toBe(ANSWER.nameserver.a);
    }
    expect(bpf.stats(slot).tcp_connect).toBeGreaterThanOrEqual(2);
  });

  it('Node’s dns.Resolver (c-ares), IPv4 and IPv6', async () => {
    expect(await lab.cares(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
    expect(await lab.cares(a(), a().cg, NS6, 'test.zone', 'AAAA')).toBe(ANSWER.proxy.aaaa);
    expect(await lab.cares(b(), b().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
  });

  it('unconnected sendto, connected UDP and TCP: the reply comes from, and the peer is, the nameserver asked', async () => {
    await lab.expectPythonClients(ANSWER.proxy.a);
    expect(bpf.stats(slot).udp_sendmsg).toBeGreaterThanOrEqual(3);
  });

  it('one unconnected socket, two nameservers: each reply shows the nameserver last sent to through its proxy', async () => {
    // In turn (query, reply, query, reply): each reply from the nameserver its query went to.
    const turn = await lab.dnsq<Reply>(a(), a().cg, ['sendto', 'test.zone', NS4, NS4B]);
    expect(turn.replies!.map((r) => [r.id, r.from?.address, r.answer])).toEqual([
      [100, NS4, ANSWER.proxy.a],
      [101, NS4B, ANSWER.proxy.a],
    ]);
    // Both sent before either reply is read (musl's way, which accepts a reply from any of its
    // nameservers): the DNS id is not visible to these hooks, so both show the last one sent to.
    const both = await lab.dnsq<Reply>(a(), a().cg, ['sendto-all', 'test.zone', NS4, NS4B]);
    expect(both.replies!.map((r) => r.from?.address)).toEqual([NS4B, NS4B]);
    expect(both.replies!.map((r) => r.answer)).toEqual([ANSWER.proxy.a, ANSWER.proxy.a]);
    // IPv4 and IPv6 nameservers on one dual-stack socket keep one entry per proxy family.
    const dual = await lab.dnsq<Reply>(a(), a().cg, ['--v6sock', 'sendto-all', 'test.zone', NS4, NS6]);
    expect(dual.replies!.map((r) => r.from?.address).sort()).toEqual([`::ffff:${NS4}`, NS6].sort());
  });

  it('only the listed nameservers are captured; all: true captures every port-53 destination', async () => {
    apply({ ...nodeDns, nameservers: [NS4, NS6] });
    const unlisted = await lab.dnsq<Reply>(a(), a().cg, ['sendto', 'test.zone', NS4B]);
    expect(unlisted.replies![0]!.answer).toBe(ANSWER.nameserver.a);
    apply({ proxy: nodeDns.proxy, proxy6: nodeDns.proxy6, all: true });
    const all = await lab.dnsq<Reply>(a(), a().cg, ['sendto', 'test.zone', NS4B]);
    expect(all.replies![0]).toEqual({ id: 100, answer: ANSWER.proxy.a, from: { address: NS4B, port: 53 } });
    // tcp: false leaves TCP 53 to the outbound decision (here: not an included port, so direct).
    apply({ ...nodeDns, tcp: false });
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone', ['+tcp'])).toBe(ANSWER.nameserver.a);
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
    apply(nodeDns);
  });

  it('the DNS proxy’s own queries are not captured (no loop): it forwards fwd.test to the nameserver', async () => {
    const before = bpf.stats(slot).bypass_cgroup;
    expect(await lab.dig(a(), a().cg, NS4, 'fwd.test')).toBe(ANSWER.fwd.a);
    expect(bpf.stats(slot).bypass_cgroup).toBeGreaterThan(before);
    expect(nameserver.err).toMatch(new RegExp(`query\\[A\\] fwd\\.test from ${NODE_PROXY4.replace(/\./g, '\\.')}`));
  });

  it('a sidecar DNS proxy on loopback in the pod, in a bypass cgroup of the pod', async () => {
    const sidecar = await lab.dnsmasq(a().ns, sidecarCg, ['127.0.0.1', '::1'], PROXY_PORT, ANSWER.sidecar, {
      forwardTo: NS4,
    });
    apply({ ...nodeDns, proxy: `127.0.0.1:${PROXY_PORT}`, proxy6: `[::1]:${PROXY_PORT}` });
    try {
      await lab.expectSidecar();
    } finally {
      await env.stop(sidecar);
      apply(nodeDns);
    }
  });

  it('proxy down: a refusal (connected UDP, TCP) or a timeout (sendto), never an answer from elsewhere', async () => {
    await env.stop(proxy);
    try {
      await lab.expectProxyDown({ connect: NS4, tcp: NS4, sendto: NS4 });
      lab.resolvConf(a(), [NS4]);
      expect(await lab.getent(a(), a().cg, 'ahostsv4', 'test.zone')).toEqual(['ERR']);
      expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).not.toContain(ANSWER.nameserver.a);
    } finally {
      proxy = await lab.nodeProxy();
    }
  });

  it('10,000 queries from short-lived sockets: all answered by the proxy, from the nameserver, and no entry left', async () => {
    const before = bpf.stats(slot);
    const r = await lab.dnsq<{
      ok: number;
      failed: number;
      answers: Record<string, number>;
      sources: Record<string, number>;
    }>(a(), a().cg, ['loop', '10000', 'test.zone', NS4], 240_000);
    expect(r).toEqual({ ok: 10000, failed: 0, answers: { [ANSWER.proxy.a]: 10000 }, sources: { [NS4]: 10000 } });
    const after = bpf.stats(slot);
    expect(after.udp_connect - before.udp_connect).toBe(5000);
    expect(after.udp_sendmsg - before.udp_sendmsg).toBe(5000);
    expect(after.replies - before.replies).toBe(10000);
    for (let i = 0; i < 20 && bpf.count('mr_dns_socks') > 0; i++) await new Promise((res) => setTimeout(res, 100));
    expect(bpf.count('mr_dns_socks')).toBe(0);
    expect(bpf.count('mr_orig')).toBe(0); // TCP 53 and UDP never use the TCP record table
  });

  it('without recvmsg, replies seem to come from the proxy: why recvmsg is attached before sendmsg and connect', async () => {
    bpf.detach();
    bpf.attach(
      env.cgRootDir,
      DNS_ATTACH_ORDER.filter((n) => !n.startsWith('mr_dns_recv')),
    );
    try {
      const s = await lab.dnsq<Reply>(a(), a().cg, ['sendto', 'test.zone', NS4]);
      expect(s.replies![0]!.from).toEqual({ address: NODE_PROXY4, port: PROXY_PORT });
      const c = await lab.dnsq<Reply>(a(), a().cg, ['connect', 'test.zone', NS4]);
      expect(c.from).toEqual({ address: NODE_PROXY4, port: PROXY_PORT });
      expect(c.peer).toEqual({ address: NS4, port: 53 }); // getpeername is still answered
      // What real resolvers do with such a reply (recorded in docs/dns-design.md).
      lab.resolvConf(a(), [NS4]);
      facts.glibc = (await lab.getent(a(), a().cg, 'ahostsv4', 'test.zone')).join(',');
      facts.cares = await lab.cares(a(), a().cg, NS4, 'test.zone');
      facts.dig = await lab.dig(a(), a().cg, NS4, 'test.zone');
      // glibc and dig trust their connected socket; c-ares checks the source and times out.
      expect(facts).toEqual({ glibc: ANSWER.proxy.a, cares: 'ERR ETIMEOUT', dig: ANSWER.proxy.a });
    } finally {
      bpf.detach();
      bpf.attach(env.cgRootDir);
    }
    expect(await lab.cares(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
  });
});
