// kubernetes.kernel.test.ts — pods from the Kubernetes API (a local stand-in, client-node unmodified)
// become policies in the kernel: real cgroups in the kubelet's layout for both drivers under a test root,
// netns and processes inside, an unmodified HAProxy as the node proxy. Covers enrolment, hostNetwork,
// the fail-closed guard, the start race (a process connecting from the instant its cgroup exists) and
// watch faults (410, dropped connections, a hang, a pod deleted while the agent was down).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmdirSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Env, kernelDescribe, OBJECT, TOOLS, waitFor } from './harness.js';
import { AgentLike } from './kube-driver.js';
import { KubeApiStandin } from '../tools/kube-apiserver-standin.js';
import { EbpfMode } from '../../src/modes/ebpf/index.js';
import { stats } from '../../src/modes/ebpf/counters.js';
import { KubernetesSource, loadKubeConfig } from '../../src/sources/kubernetes/source.js';
import { TemplateDir } from '../../src/sources/kubernetes/templates.js';
import { CgKind } from '../../src/bpf/abi.js';
import { cgroupId } from '../../src/util/host.js';

const NODE = 'node-1';
const PROXY = '10.200.0.1';

interface RaceResult {
  mkdirNs: string;
  inCgroupNs: string;
  firstProxyNs: string | null;
  counts: Record<string, number>;
  runs: [string, number][];
}

kernelDescribe('Kubernetes pods → policies (API stand-in, kubelet cgroup layouts, guard, start race)', () => {
  let env: Env;
  let api: KubeApiStandin;
  let dir: string;
  let mode: EbpfMode;
  let agent: AgentLike | undefined;
  let node: string, up: string, podNs: Record<string, string>;
  const latencies: { round: string; ms: number; order: string }[] = [];

  // The kubelet's QoS parents, for both drivers, under the test root (as kubelet makes them at start).
  const SD = 'kubepods.slice';
  const SD_B = `${SD}/kubepods-burstable.slice`;
  const SD_E = `${SD}/kubepods-besteffort.slice`;
  const FS = 'kubepods';
  const FS_B = `${FS}/burstable`;
  const FS_E = `${FS}/besteffort`;

  const cid = () => randomBytes(32).toString('hex');
  /** A pod cgroup and a container below it, in the kubelet's and containerd's naming, per driver. */
  const layout = (driver: 'systemd' | 'cgroupfs', qos: 'Guaranteed' | 'Burstable' | 'BestEffort', uid: string) => {
    const id = cid();
    if (driver === 'systemd') {
      const u = uid.replace(/-/g, '_');
      const parent = qos === 'Guaranteed' ? SD : qos === 'Burstable' ? SD_B : SD_E;
      const q = qos === 'Guaranteed' ? '' : `${qos.toLowerCase()}-`;
      const pod = `${parent}/kubepods-${q}pod${u}.slice`;
      return { pod, ctr: `${pod}/cri-containerd-${id}.scope` };
    }
    const parent = qos === 'Guaranteed' ? FS : qos === 'Burstable' ? FS_B : FS_E;
    const pod = `${parent}/pod${uid}`;
    return { pod, ctr: `${pod}/${id}` };
  };

  const makeSource = (extra: { guard?: boolean } = {}) =>
    new KubernetesSource({
      kubeconfig: loadKubeConfig(join(dir, 'kubeconfig')),
      nodeName: NODE,
      layout: { prefix: env.cgRoot, cgroupRoot: '/', drivers: ['systemd', 'cgroupfs'] },
      templates: (
        (t) => () =>
          t.read()
      )(new TemplateDir(join(dir, 'policies'))),
      mount: env.cgMount,
      reflector: { stallMs: 2000, backoff: { initialMs: 50, maxMs: 500 }, minLifeMs: 200 },
      ...extra,
    });

  const startAgent = async (extra: { guard?: boolean } = {}) => {
    agent = new AgentLike(mode, makeSource(extra));
    return agent.start();
  };

  const cgEntry = (path: string) => {
    const id = cgroupId(env.cgDir(path));
    if (id === null) return undefined;
    return new Map(mode.pins.entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups')).get(id);
  };
  const guardRefused = () => Number(stats(mode.pins).get(0)?.guard_refused ?? 0n);
  const connect = (ns: string, cg: string) => env.client(ns, cg, ['connect', '10.200.0.100', '8080']);

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-k8s-'));
    node = env.netns('node');
    up = env.netns('up');
    env.bridge(node, 'br0', [`${PROXY}/24`]);
    env.plug(node, 'br0', up, ['10.200.0.100/24']);
    podNs = {};
    for (const [name, addr] of [
      ['a', '10.200.0.11'],
      ['b', '10.200.0.12'],
      ['c', '10.200.0.13'],
      ['h', '10.200.0.14'],
      ['g', '10.200.0.15'],
      ['r', '10.200.0.16'],
      ['d', '10.200.0.17'],
    ] as const) {
      podNs[name] = env.netns(name);
      env.plug(node, 'br0', podNs[name], [`${addr}/24`]);
    }
    for (const q of [SD_B, SD_E, FS_B, FS_E]) env.cgroup(q);
    const proxyCg = env.cgroup('proxy');
    await env.server(up, '10.200.0.100', 8080, 'up');
    await env.haproxy(node, proxyCg, `${PROXY}:15001`, 15001);

    mkdirSync(join(dir, 'policies'));
    writeFileSync(
      join(dir, 'policies', 'template.yaml'),
      [
        'apiVersion: meshredir/v1',
        'kind: RedirectPolicyTemplate',
        'metadata: { name: default }',
        'spec:',
        `  proxy: { outbound: "${PROXY}:15001", bypass: { cgroups: [${proxyCg}] } }`,
        '  outbound: { excludePorts: [15090] }',
        '',
      ].join('\n'),
    );
    api = new KubeApiStandin();
    await api.start();
    api.writeKubeconfig(join(dir, 'kubeconfig'));
    api.addNamespace('shop', { 'meshredir.io/redirect': 'enabled' });
    api.addNamespace('plain');
    api.addNamespace('kube-system');

    mode = new EbpfMode({ bpffs: env.bpffs, attach: { cgroupRoot: env.cgRootDir, object: OBJECT } });
    mode.apply(mode.plan({ policies: [] }));
    await startAgent();
  });

  afterAll(async () => {
    await agent?.stop().catch(() => {});
    await api?.stop();
    // Pod cgroups made by the race tool are not the Env's: kill what runs below the root, then remove
    // the kubepods trees bottom-up (Env removes its own cgroups after).
    const problems: string[] = [];
    if (env) {
      if (existsSync(join(env.cgRootDir, 'cgroup.kill'))) writeFileSync(join(env.cgRootDir, 'cgroup.kill'), '1');
      const rmTree = async (d: string) => {
        if (!existsSync(d)) return;
        for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) await rmTree(join(d, e.name));
        for (let i = 0; i < 50 && existsSync(d); i++) {
          try {
            rmdirSync(d);
          } catch {
            await new Promise((r) => setTimeout(r, 100));
          }
        }
      };
      for (const t of [SD, FS]) await rmTree(env.cgDir(`${env.cgRoot}/${t}`));
      problems.push(...(await env.teardown()));
    }
    rmSync(dir, { recursive: true, force: true });
    // The start race's mkdir → policy-in-map latencies (for the bench to report; not asserted).
    if (latencies.length) {
      const ms = latencies.map((l) => l.ms).sort((a, b) => a - b);
      const q = (p: number) => ms[Math.min(ms.length - 1, Math.floor(p * ms.length))]!.toFixed(2);
      console.log(
        `mkdir → policy in map: n=${ms.length} p50=${q(0.5)} ms p90=${q(0.9)} ms max=${ms.at(-1)!.toFixed(2)} ms; ` +
          latencies.map((l) => `${l.round}:${l.ms.toFixed(2)}`).join(' '),
      );
    }
    expect(problems).toEqual([]);
  });

  it('enrolled pods (both drivers) go through HAProxy; a pod that is not enrolled and a hostNetwork pod do not', async () => {
    const ua = randomUUID();
    const ub = randomUUID();
    const uc = randomUUID();
    const uh = randomUUID();
    const a = layout('systemd', 'Burstable', ua);
    const b = layout('cgroupfs', 'BestEffort', ub);
    const c = layout('systemd', 'Guaranteed', uc);
    const h = layout('cgroupfs', 'Burstable', uh);
    api.addPod({ name: 'a', namespace: 'shop', nodeName: NODE, uid: ua, qosClass: 'Burstable' });
    api.addPod({ name: 'b', namespace: 'shop', nodeName: NODE, uid: ub, qosClass: 'BestEffort' });
    api.addPod({ name: 'c', namespace: 'plain', nodeName: NODE, uid: uc, qosClass: 'Guaranteed' });
    api.addPod({
      name: 'h',
      namespace: 'kube-system',
      nodeName: NODE,
      uid: uh,
      hostNetwork: true,
      labels: { 'meshredir.io/redirect': 'enabled' },
    });
    // Kubelet makes the pod cgroups, the runtime the containers' (the ancestor walk covers them).
    for (const x of [a, b, c, h]) env.cgroup(x.ctr);
    await waitFor(
      () => agent!.applied.has(`${env.cgRoot}/${a.pod}`) && agent!.applied.has(`${env.cgRoot}/${b.pod}`),
      'policies applied',
    );
    await waitFor(() => cgEntry(`${env.cgRoot}/${c.pod}`)?.kind === CgKind.PASS, 'pass entry of c');
    await waitFor(() => cgEntry(`${env.cgRoot}/${h.pod}`)?.kind === CgKind.PASS, 'pass entry of h');

    const ra = await connect(podNs.a!, `${env.cgRoot}/${a.ctr}`);
    expect(ra.data).toMatch(/^up 10\.200\.0\.1 /); // the upstream saw HAProxy
    expect(ra.peer).toEqual({ address: '10.200.0.100', port: 8080 }); // the app saw its destination
    expect((await connect(podNs.b!, `${env.cgRoot}/${b.ctr}`)).data).toMatch(/^up 10\.200\.0\.1 /);
    expect((await connect(podNs.c!, `${env.cgRoot}/${c.ctr}`)).data).toMatch(/^up 10\.200\.0\.13 /);
    expect((await connect(podNs.h!, `${env.cgRoot}/${h.ctr}`)).data).toMatch(/^up 10\.200\.0\.14 /);
    expect(cgEntry(`${env.cgRoot}/${a.pod}`)?.kind).toBe(CgKind.POLICY);
    expect(cgEntry(`${env.cgRoot}/${SD}`)?.kind).toBe(CgKind.GUARD);
    expect(cgEntry(`${env.cgRoot}/${FS_B}`)?.kind).toBe(CgKind.GUARD);
    expect(mode.pins.slots().has('pod.shop.a')).toBe(true);
    expect(agent!.errors).toEqual([]);
  });

  it('the guard refuses an unknown pod cgroup (EPERM, counted) until the pod is classified', async () => {
    const ug = randomUUID();
    const g = layout('systemd', 'BestEffort', ug);
    env.cgroup(g.ctr); // the cgroup exists before the API shows the pod (the agent's watch is behind)
    const before = guardRefused();
    const r = await connect(podNs.g!, `${env.cgRoot}/${g.ctr}`);
    expect(r).toMatchObject({ ok: false, error: 'EPERM' });
    expect(guardRefused()).toBe(before + 1);
    api.addPod({ name: 'g', namespace: 'shop', nodeName: NODE, uid: ug, qosClass: 'BestEffort' });
    await waitFor(() => agent!.applied.has(`${env.cgRoot}/${g.pod}`), 'policy of g applied');
    expect((await connect(podNs.g!, `${env.cgRoot}/${g.ctr}`)).data).toMatch(/^up 10\.200\.0\.1 /);
    // Not enrolled any more (annotation): a pass entry, connections go direct.
    api.update(
      'pods',
      'shop/g',
      (p) => ((p.metadata.annotations as Record<string, string>)['meshredir.io/redirect'] = 'disabled'),
    );
    await waitFor(() => cgEntry(`${env.cgRoot}/${g.pod}`)?.kind === CgKind.PASS, 'g passes');
    expect((await connect(podNs.g!, `${env.cgRoot}/${g.ctr}`)).data).toMatch(/^up 10\.200\.0\.15 /);
  });

  /** One start-race round: the pod is in the API (its watch event maybe still in flight), the race tool
   * makes its cgroups and connects from that instant. */
  const race = async (round: string, driver: 'systemd' | 'cgroupfs', order: 'pod-first' | 'together') => {
    const uid = randomUUID();
    const x = layout(driver, 'Burstable', uid);
    const name = `race-${round}`;
    api.addPod({ name, namespace: 'shop', nodeName: NODE, uid, qosClass: 'Burstable' });
    if (order === 'pod-first')
      await waitFor(() => agent!.reasons.some((r) => r.includes(`shop/${name} add`)), 'pod seen');
    // nsenter, not ip netns exec: that remounts /sys, and the tool must see the cgroup2 mount.
    const out = await env.run(null, null, 'nsenter', [
      `--net=/run/netns/${podNs.r!}`,
      'python3',
      join(TOOLS, 'podrace.py'),
      env.cgDir(`${env.cgRoot}/${x.pod}`),
      env.cgDir(`${env.cgRoot}/${x.ctr}`),
      '10.200.0.100',
      '8080',
      '50',
      PROXY,
      '10.200.0.16',
    ]);
    const res = JSON.parse(out.trim()) as RaceResult;
    await waitFor(() => agent!.applied.has(`${env.cgRoot}/${x.pod}`), `policy of ${name} applied`);
    const at = agent!.applied.get(`${env.cgRoot}/${x.pod}`)!;
    return { res, ms: Number(at - BigInt(res.mkdirNs)) / 1e6, pod: `shop/${name}` };
  };

  it('start race: every connection of an enrolled pod, from the instant its cgroup exists, is redirected or refused — none goes direct', async () => {
    const refusedBefore = guardRefused();
    let refused = 0;
    for (let i = 0; i < 24; i++) {
      const driver = i % 2 ? 'cgroupfs' : 'systemd';
      const order = i % 4 < 2 ? 'pod-first' : 'together';
      const { res, ms, pod } = await race(`g${i}`, driver, order);
      latencies.push({ round: `${driver[0]}${i}`, ms, order });
      expect(res.counts.direct ?? 0, `${driver} round ${i}: ${JSON.stringify(res.runs)}`).toBe(0);
      // Refused until classified, then through the proxy for good.
      expect(
        res.runs.map(([k]) => k),
        JSON.stringify(res.runs),
      ).toEqual(res.runs[0]![0] === 'refused' ? ['refused', 'proxy'] : ['proxy']);
      refused += res.counts.refused ?? 0;
      api.delete('pods', pod);
    }
    expect(guardRefused() - refusedBefore).toBe(refused);
    const t = agent!.timings;
    const avg = (f: (x: (typeof t)[number]) => number) => (t.reduce((a, x) => a + f(x), 0) / t.length).toFixed(2);
    console.log(
      `start race with the guard: ${refused} connections refused by the guard over 24 pods, none direct; passes: read ${avg((x) => x.readMs)} ms, apply ${avg((x) => x.applyMs)} ms on average (${t.length} passes)`,
    );
  });

  it('without the guard (control): the window between mkdir and the policy is open — connections may go direct', async () => {
    await agent!.stop();
    const rep = await startAgent({ guard: false });
    expect(rep.deletes).toBeGreaterThan(0); // the guard entries went
    let direct = 0;
    for (let i = 0; i < 12; i++) {
      const { res } = await race(`c${i}`, i % 2 ? 'cgroupfs' : 'systemd', 'together');
      expect(res.counts.refused ?? 0).toBe(0);
      expect((res.counts.direct ?? 0) + (res.counts.proxy ?? 0)).toBe(50);
      direct += res.counts.direct ?? 0;
      api.delete('pods', `shop/race-c${i}`);
    }
    console.log(`start race without the guard: ${direct} of ${12 * 50} connections went direct`);
    await agent!.stop();
    await startAgent();
  });

  it('the agent restarting converges to the same state (nothing to write)', async () => {
    await agent!.settle();
    await agent!.stop();
    const rep = await startAgent();
    expect({ writes: rep.writes, deletes: rep.deletes }).toEqual({ writes: 0, deletes: 0 });
  });

  it('a pod deleted while the agent is down loses its policy and entries when it comes back', async () => {
    const ud = randomUUID();
    const d = layout('cgroupfs', 'Burstable', ud);
    api.addPod({ name: 'd', namespace: 'shop', nodeName: NODE, uid: ud });
    env.cgroup(d.ctr);
    await waitFor(() => agent!.applied.has(`${env.cgRoot}/${d.pod}`), 'policy of d applied');
    expect(cgEntry(`${env.cgRoot}/${d.pod}`)?.kind).toBe(CgKind.POLICY);
    await agent!.stop();
    api.delete('pods', 'shop/d'); // its cgroup stays a moment (the kubelet is tearing it down)
    await startAgent();
    expect(mode.pins.slots().has('pod.shop.d')).toBe(false);
    // No policy, no pass: an unknown pod cgroup again, held by the guard.
    expect(cgEntry(`${env.cgRoot}/${d.pod}`)).toBeUndefined();
    expect(await connect(podNs.d!, `${env.cgRoot}/${d.ctr}`)).toMatchObject({ ok: false, error: 'EPERM' });
  });

  it('watch faults: 410 after compaction, a dropped connection, a hang — the maps follow the API each time', async () => {
    const pod = (name: string, driver: 'systemd' | 'cgroupfs') => {
      const uid = randomUUID();
      const x = layout(driver, 'BestEffort', uid);
      env.cgroup(x.pod);
      api.addPod({ name, namespace: 'shop', nodeName: NODE, uid, qosClass: 'BestEffort' });
      return `${env.cgRoot}/${x.pod}`;
    };
    // 410: the agent's watch breaks, history is compacted meanwhile (a deletion and an addition in it).
    const f1 = pod('f1', 'systemd');
    await waitFor(() => cgEntry(f1)?.kind === CgKind.POLICY, 'f1');
    await api.stop();
    api.delete('pods', 'shop/f1');
    const f2 = pod('f2', 'cgroupfs');
    api.compact();
    await api.start(api.port);
    await waitFor(
      () => cgEntry(f2)?.kind === CgKind.POLICY && cgEntry(f1) === undefined,
      'relisted after 410',
      undefined,
      15_000,
    );
    expect(api.expiredWatches).toBeGreaterThan(0);
    // A dropped connection: resumed from its resourceVersion.
    api.dropConnections();
    const f3 = pod('f3', 'systemd');
    await waitFor(() => cgEntry(f3)?.kind === CgKind.POLICY, 'after a dropped connection', undefined, 15_000);
    // A silent hang: the stall timer (2 s here) resumes the watch.
    api.freezeWatches();
    const f4 = pod('f4', 'cgroupfs');
    await new Promise((r) => setTimeout(r, 500));
    expect(cgEntry(f4)).toBeUndefined(); // still unseen: the guard holds it
    await waitFor(() => cgEntry(f4)?.kind === CgKind.POLICY, 'after the stall', undefined, 15_000);
    expect(new Set(api.requests.map((q) => `${q.method} ${q.path}`))).toEqual(
      new Set(['GET /api/v1/pods', 'GET /api/v1/namespaces']),
    );
  });

  it('pods gone: their policies and pass entries are removed from the maps', async () => {
    for (const p of ['shop/a', 'shop/b', 'plain/c', 'kube-system/h', 'shop/g', 'shop/f2', 'shop/f3', 'shop/f4'])
      api.delete('pods', p);
    await waitFor(() => [...mode.pins.slots().keys()].every((n) => !n.startsWith('pod.')), 'pod policies removed');
    await agent!.settle();
    const kinds = mode.pins.entries<[bigint, { kind: number }][]>('mr_cgroups').map(([, v]) => v.kind);
    expect(kinds.filter((k) => k === CgKind.POLICY || k === CgKind.PASS)).toEqual([]);
    expect(kinds.filter((k) => k === CgKind.GUARD).length).toBe(6);
  });
});
