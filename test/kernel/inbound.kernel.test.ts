// inbound.kernel.test.ts — inbound interception with sk_lookup end to end: a pod's incoming connections
// land on an unmodified HAProxy (a sidecar in the pod netns, and a node proxy that opens its listener
// in the pod netns), no NAT, the client's own address seen by the proxy; driven by the minimal loader
// of inbound-lab.ts (the agent integration comes later).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { writeFileSync, rmSync } from 'node:fs';
import { Env, kernelDescribe, waitFor, sh, ORIGDST_PROXY, type Proc } from './harness.js';
import { InboundLab } from './inbound-lab.js';
import type { InboundSpec } from '../../src/policy/inbound.js';
import { parseCidr, type Cidr } from '../../src/policy/addr.js';
import { AF_INET, AF_INET6 } from '../../src/bpf/abi.js';
import { findListeners, takeFd } from '../../src/bpf/listeners.js';
import { c } from '../../src/sys/libbpf.js';

const B4 = '10.200.0.12';
const B6 = 'fd00:200::12';
const C4 = '10.200.0.13';
const SLOT_B = 1;
const SLOT_C = 2;
const HIGH = 20000 + Math.floor(Math.random() * 20000);

kernelDescribe('inbound interception with sk_lookup (no NAT)', () => {
  let env: Env;
  let lab: InboundLab;
  let node: string, podA: string, podB: string, podC: string;
  let cgA: string, cgProxyB: string, cgNodeProxy: string;
  let haproxyB: Proc;
  let appC: Proc;
  const appsB: Proc[] = [];
  const cfgs: string[] = [];

  const specB = (over: Partial<InboundSpec> = {}): InboundSpec => ({
    slot: SLOT_B,
    name: 'pod-b',
    addresses: [
      { family: 4, bytes: [10, 200, 0, 12] },
      { family: 6, bytes: [0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12] },
    ],
    includePorts: [],
    excludePorts: [9090],
    bypassSources: [],
    whenNoProxy: 'reject',
    ...over,
  });
  const specC = (over: Partial<InboundSpec> = {}): InboundSpec => ({
    slot: SLOT_C,
    name: 'pod-c',
    addresses: [{ family: 4, bytes: [10, 200, 0, 13] }],
    includePorts: [],
    excludePorts: [],
    bypassSources: [parseCidr('10.200.0.1/32') as Cidr], // the node proxy's own address
    whenNoProxy: 'reject',
    ...over,
  });

  /** HAProxy in tcp mode, logging "conn <client ip> <client port> <frontend ip> <frontend port>". */
  async function haproxy(ns: string, cg: string, lines: string[], port: number, waitNs = ns): Promise<Proc> {
    const cfg = `/tmp/meshredir-test-${env.id}-inbound-${port}-${cfgs.length}.cfg`;
    cfgs.push(cfg);
    writeFileSync(
      cfg,
      [
        'global',
        '  log stdout format raw local0',
        'defaults',
        '  mode tcp',
        '  log global',
        '  log-format "conn %ci %cp %fi %fp"',
        '  timeout connect 5s',
        '  timeout client 30s',
        '  timeout server 30s',
        ...lines,
        '',
      ].join('\n'),
    );
    const p = env.spawn(ns, cg, 'haproxy', ['-db', '-f', cfg]);
    await env.waitListening(waitNs, port, `haproxy on ${port}`, p);
    return p;
  }
  const sidecar = () =>
    haproxy(
      podB,
      cgProxyB,
      [
        'frontend fe',
        '  bind 127.0.0.1:15006',
        '  bind [::1]:15006 v6only',
        '  default_backend be',
        'backend be',
        '  server o 0.0.0.0:0',
      ],
      15006,
    );
  const registerB = (p: Proc, family: 4 | 6 = 4) =>
    lab.registerFound({ slot: SLOT_B, tablePid: p.child.pid!, ownerPid: p.child.pid!, port: 15006, family, ns: podB });
  const logged = (p: Proc) => p.out.split('\n').filter((l) => l.startsWith('conn '));
  const connect = (host: string, port: number) => env.client(podA, cgA, ['connect', host, String(port)]);

  beforeAll(async () => {
    env = new Env();
    node = env.netns('node');
    podA = env.netns('a');
    podB = env.netns('b');
    podC = env.netns('c');
    env.bridge(node, 'br0', ['10.200.0.1/24', 'fd00:200::1/64']);
    env.plug(node, 'br0', podA, ['10.200.0.11/24', 'fd00:200::11/64']);
    env.plug(node, 'br0', podB, [`${B4}/24`, `${B6}/64`]);
    env.plug(node, 'br0', podC, [`${C4}/24`]);
    cgA = env.cgroup('pod-a');
    env.cgroup('pod-b');
    cgProxyB = env.cgroup('pod-b/proxy');
    cgNodeProxy = env.cgroup('node-proxy');
    appsB.push(await env.server(podB, B4, 8080, 'app-b'));
    appsB.push(await env.server(podB, B4, HIGH, 'app-b-high'));
    appsB.push(await env.server(podB, B4, 9090, 'app-b-9090'));
    appsB.push(await env.server(podB, B6, 8080, 'app-b6'));
    appC = await env.server(podC, C4, 8080, 'app-c');

    lab = new InboundLab(`/sys/fs/bpf/meshredir-test-${env.id}-inbound`);
    lab.attachOrigdst(env.cgRootDir);
    lab.attach(podB);
    lab.attach(podC);
    expect(lab.apply([specB(), specC()])).toEqual([]);
    haproxyB = await sidecar();
  });

  afterAll(async () => {
    let labError: unknown;
    try {
      lab?.close();
    } catch (e) {
      labError = e;
    }
    const problems = await env?.teardown();
    for (const f of cfgs) rmSync(f, { force: true });
    expect(labError).toBeUndefined();
    expect(problems).toEqual([]);
  });

  it("takes an unmodified HAProxy's listener with pidfd_getfd; the copy is closed, only HAProxy holds it", () => {
    const facts = registerB(haproxyB, 4);
    registerB(haproxyB, 6);
    expect(facts).toMatchObject({
      listening: true,
      tcp: true,
      family: 4,
      local: { bytes: [127, 0, 0, 1], port: 15006 },
    });
    expect(lab.socks.get({ slot: SLOT_B, family: AF_INET })).toBe(facts.cookie); // user space reads cookies back
    const users = sh('ip', ['netns', 'exec', podB, 'ss', '-Hltnp', 'sport = :15006']);
    expect(users.match(/pid=\d+/g)).toEqual([`pid=${haproxyB.child.pid}`, `pid=${haproxyB.child.pid}`]);
  });

  it("pod-b:8080 and a random high port reach HAProxy with the client's own address; the app answers", async () => {
    const before = lab.counters(SLOT_B);
    for (const port of [8080, HIGH]) {
      const r = await connect(B4, port);
      expect(r.ok, JSON.stringify(r)).toBe(true);
      // The app saw HAProxy (from the pod's own address), HAProxy saw the client and pod-b:port.
      expect(r.data).toMatch(new RegExp(`^app-b${port === 8080 ? '' : '-high'} ${B4} \\d+$`));
      expect(r.peer).toEqual({ address: B4, port });
      await waitFor(() => logged(haproxyB).includes(`conn 10.200.0.11 ${r.local!.port} ${B4} ${port}`), 'log');
    }
    const after = lab.counters(SLOT_B);
    expect(after.intercepted - before.intercepted).toBe(2);
    // HAProxy's own connections to the app (pod address → pod address) went straight to the app, once each.
    expect(after.bypass_local - before.bypass_local).toBe(2);
    // HAProxy asked SO_ORIGINAL_DST (SOL_IP) on each accepted socket and mr_in_origdst answered.
    expect(after.origdst_served - before.origdst_served).toBe(2);
    expect(logged(haproxyB)).toHaveLength(2);
  });

  it('an excluded port goes straight to the app', async () => {
    const before = lab.counters(SLOT_B);
    const r = await connect(B4, 9090);
    expect(r.data).toMatch(/^app-b-9090 10\.200\.0\.11 \d+$/);
    expect(lab.counters(SLOT_B).bypass_port - before.bypass_port).toBe(1);
    expect(logged(haproxyB)).toHaveLength(2);
  });

  it('IPv6: [pod-b]:8080 reaches HAProxy on [::1]:15006 with the client address', async () => {
    const r = await connect(B6, 8080);
    expect(r.ok, JSON.stringify(r)).toBe(true);
    expect(r.data).toMatch(/^app-b6 fd00:200::12 \d+$/);
    await waitFor(() => logged(haproxyB).includes(`conn fd00:200::11 ${r.local!.port} ${B6} 8080`), 'log6');
  });

  it('no iptables rule in the pod netns (eBPF mode)', () => {
    for (const t of ['iptables-nft-save', 'ip6tables-nft-save', 'iptables-legacy-save', 'ip6tables-legacy-save'])
      expect(
        sh('ip', ['netns', 'exec', podB, t])
          .split('\n')
          .filter((l) => l.startsWith('-A')),
      ).toEqual([]);
  });

  it('SO_ORIGINAL_DST on the accepted socket answers its local address (mr_in_origdst), v4 and v6', async () => {
    const p = env.spawn(podB, cgProxyB, ORIGDST_PROXY, [
      '--listen',
      '127.0.0.1:15016',
      '--listen6',
      '[::1]:15016',
      '--mode',
      'report',
    ]);
    await env.waitListening(podB, 15016, 'origdst-proxy', p);
    const reg = (family: 4 | 6) =>
      lab.registerFound({
        slot: SLOT_B,
        tablePid: p.child.pid!,
        ownerPid: p.child.pid!,
        port: 15016,
        family,
        ns: podB,
      });
    const before = lab.counters(SLOT_B);
    reg(4);
    reg(6);
    const r4 = await connect(B4, 8080);
    expect(r4.data).toBe(`ORIGDST ${B4} 8080 PEER 10.200.0.11 ${r4.local!.port}`);
    const r6 = await connect(B6, 8080);
    expect(r6.data).toBe(`ORIGDST ${B6} 8080 PEER fd00:200::11 ${r6.local!.port}`);
    expect(lab.counters(SLOT_B).origdst_served - before.origdst_served).toBe(2);
    // Without the mark on the listener, the kernel answers (no conntrack here): the hook did the work.
    for (const l of findListeners({ tablePid: p.child.pid!, ownerPids: [p.child.pid!], port: 15016 })) {
      const fd = takeFd(l.pid, l.fd);
      lab.storage.delete(fd);
      c.close(fd);
    }
    const bare = await connect(B4, 8080);
    expect(bare.data).toBe('ERR ENOENT');
    await env.stop(p);
    registerB(haproxyB, 4);
    registerB(haproxyB, 6);
  });

  it('proxy killed: its entry goes with it; reject refuses (counted), pass delivers to the app (counted)', async () => {
    await env.stop(haproxyB, 'SIGKILL');
    await waitFor(() => lab.socks.get({ slot: SLOT_B, family: AF_INET }) === undefined, 'entry gone');
    expect(lab.socks.get({ slot: SLOT_B, family: AF_INET6 })).toBeUndefined();
    expect(sh('ip', ['netns', 'exec', podB, 'ss', '-Hltn', 'sport = :15006']).trim()).toBe(''); // no live listener left
    let before = lab.counters(SLOT_B);
    const refused = await connect(B4, 8080);
    expect(refused).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
    expect(lab.counters(SLOT_B).no_proxy_refused - before.no_proxy_refused).toBe(1);

    lab.apply([specB({ whenNoProxy: 'pass' }), specC()]);
    before = lab.counters(SLOT_B);
    const passed = await connect(B4, 8080);
    expect(passed.data).toMatch(/^app-b 10\.200\.0\.11 \d+$/); // direct: the app sees the client
    expect(lab.counters(SLOT_B).no_proxy_passed - before.no_proxy_passed).toBe(1);
    lab.apply([specB(), specC()]);
  });

  it('proxy restarted: a new socket, refused until it is registered, then intercepted again', async () => {
    haproxyB = await sidecar();
    expect(await connect(B4, 8080)).toMatchObject({ ok: false, error: 'ECONNREFUSED' });
    registerB(haproxyB, 4);
    const r = await connect(B4, 8080);
    expect(r.data).toMatch(/^app-b 10\.200\.0\.12 \d+$/);
    await waitFor(() => logged(haproxyB).includes(`conn 10.200.0.11 ${r.local!.port} ${B4} 8080`), 'log');
  });

  it('node proxy: HAProxy in the node netns opens its listener in the pod netns (bind … namespace)', async () => {
    const nodeProxy = await haproxy(
      node,
      cgNodeProxy,
      [
        'frontend fe',
        `  bind 127.0.0.1:15007 namespace ${podC}`, // the listener lives in the pod netns
        '  default_backend be',
        'frontend fe2',
        `  bind 127.0.0.1:15008 namespace ${podC}`,
        '  default_backend be2',
        'frontend here', // a listener in the node netns: sk_lookup of pod C cannot use it
        '  bind 10.200.0.1:15009',
        '  default_backend be',
        'backend be',
        `  server o 0.0.0.0:0 namespace ${podC}`, // to the app from inside the pod: exempt as local
        'backend be2',
        '  server o 0.0.0.0:0', // to the app from the node (10.200.0.1): exempt by bypassSources
      ],
      15007,
      podC,
    );
    const reg = (port: number) =>
      lab.registerFound({
        slot: SLOT_C,
        tablePid: appC.child.pid!,
        ownerPid: nodeProxy.child.pid!,
        port,
        family: 4,
        ns: podC,
      });
    // The node-netns listener is refused: a socket of another netns can be assigned but never connects.
    const nodeTable = findNodeListener(nodeProxy.child.pid!, 15009);
    expect(() => lab.register(SLOT_C, nodeProxy.child.pid!, nodeTable, [4], podC)).toThrow(/lives in netns .* not in/);

    for (const [port, via] of [
      [15007, 'local'],
      [15008, 'source'],
    ] as const) {
      reg(port);
      const before = lab.counters(SLOT_C);
      const r = await connect(C4, 8080);
      expect(r.ok, JSON.stringify(r)).toBe(true);
      expect(r.data).toMatch(via === 'local' ? /^app-c 10\.200\.0\.13 \d+$/ : /^app-c 10\.200\.0\.1 \d+$/);
      await waitFor(() => logged(nodeProxy).includes(`conn 10.200.0.11 ${r.local!.port} ${C4} 8080`), 'node log');
      const after = lab.counters(SLOT_C);
      expect(after.intercepted - before.intercepted).toBe(1);
      expect(
        via === 'local' ? after.bypass_local - before.bypass_local : after.bypass_source - before.bypass_source,
      ).toBe(1);
    }

    // Pod C deleted while the node proxy still holds its listener there: the socket keeps the netns alive.
    const ino = lab.linkInfo(podC).netnsIno!;
    expect(ino).toBeGreaterThan(0);
    sh('ip', ['netns', 'del', podC]);
    await env.stop(appC);
    await new Promise((r) => setTimeout(r, 300));
    expect(lab.linkInfo(podC).netnsIno).toBe(ino);
    // The proxy lets go of it: the netns is destroyed, the link is defunct, the sockhash entry gone.
    await env.stop(nodeProxy);
    await waitFor(() => lab.linkInfo(podC).netnsIno === 0, 'link defunct', undefined, 10_000);
    expect(lab.socks.get({ slot: SLOT_C, family: AF_INET })).toBeUndefined();
    lab.apply([specB()]);
    expect(lab.addrs.keys().filter((k) => k.family === AF_INET && k.addr[3] === 13)).toEqual([]);
    lab.detach(podC);
  });

  it('the sidecar pod deleted: link defunct, entries removable, nothing left', async () => {
    await env.stop(haproxyB);
    for (const p of appsB) await env.stop(p);
    expect(sh('ip', ['netns', 'pids', podB]).trim()).toBe('');
    sh('ip', ['netns', 'del', podB]);
    await waitFor(() => lab.linkInfo(podB).netnsIno === 0, 'link defunct', undefined, 10_000);
    expect(lab.socks.keys()).toEqual([]);
    lab.apply([]);
    expect(lab.addrs.keys()).toEqual([]);
    lab.detach(podB);
    expect(sh('bpftool', ['link', 'show']).match(/sk_lookup/g)).toBeNull();
  });
});

/** The fd of HAProxy's listener on `port` in its own (node) netns. */
function findNodeListener(pid: number, port: number): number {
  const text = sh('nsenter', ['-t', String(pid), '-n', 'ss', '-Hltnp', `sport = :${port}`]);
  const m = new RegExp(`pid=${pid},fd=(\\d+)`).exec(text);
  if (!m) throw new Error(`no listener on ${port} of pid ${pid}: ${text}`);
  return Number(m[1]);
}
