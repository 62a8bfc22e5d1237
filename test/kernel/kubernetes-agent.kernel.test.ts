// kubernetes-agent.kernel.test.ts — the real agent (`meshredir agent --kubernetes`, a process) against the
// Kubernetes API stand-in (client-node unmodified on the agent's side), with pods as real cgroups in the
// kubelet's layouts under a test root (--kubelet-cgroupns-root), netns and processes inside, an unmodified
// HAProxy as the node proxy: enrolment, hostNetwork, status and verify, a policy file claiming a pod's
// cgroup, the start race under the guard, watch faults, a pod deleted while the agent was down, a restart
// with the API server down. A second part runs the iptables mode with a sidecar proxy in the pod.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { randomBytes, randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Env, kernelDescribe, policyYaml, sh, TOOLS, waitFor, type ClientResult, type Proc } from './harness.js';
import { KubeApiStandin } from '../tools/kube-apiserver-standin.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { CgKind } from '../../src/bpf/abi.js';
import { cgroupId } from '../../src/util/host.js';

const NODE = 'node-1';

type Qos = 'Guaranteed' | 'Burstable' | 'BestEffort';
const SD = 'kubepods.slice';
const FS = 'kubepods';
const QOS_PARENTS = [
  SD,
  `${SD}/kubepods-burstable.slice`,
  `${SD}/kubepods-besteffort.slice`,
  FS,
  `${FS}/burstable`,
  `${FS}/besteffort`,
];

/** A pod cgroup and a container below it, in the kubelet's and containerd's naming (relative to the root). */
function layout(driver: 'systemd' | 'cgroupfs', qos: Qos, uid: string): { pod: string; ctr: string } {
  const id = randomBytes(32).toString('hex');
  if (driver === 'systemd') {
    const q = qos === 'Guaranteed' ? '' : `${qos.toLowerCase()}-`;
    const parent = qos === 'Guaranteed' ? SD : `${SD}/kubepods-${qos.toLowerCase()}.slice`;
    const pod = `${parent}/kubepods-${q}pod${uid.replace(/-/g, '_')}.slice`;
    return { pod, ctr: `${pod}/cri-containerd-${id}.scope` };
  }
  const pod = `${qos === 'Guaranteed' ? FS : `${FS}/${qos.toLowerCase()}`}/pod${uid}`;
  return { pod, ctr: `${pod}/${id}` };
}

/** Removes the kubepods trees bottom-up (pod cgroups made by the race tool are not the Env's). */
async function removeTrees(env: Env): Promise<void> {
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
  for (const t of [SD, FS]) await rmTree(join(env.cgRootDir, t));
}

interface Log {
  msg: string;
  event?: string;
  [k: string]: unknown;
}
const logs = (a: Proc): Log[] =>
  a.err
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Log);

kernelDescribe('agent --kubernetes (eBPF): pods of this node from the API stand-in', () => {
  let env: Env;
  let api: KubeApiStandin;
  let dir: string;
  let kubeconfig: string;
  let agent: Proc | undefined;
  let node: string, up: string;
  const podNs: Record<string, string> = {};
  const PROXY = '10.220.0.1';

  const cg = (rel: string) => `${env.cgRoot}/${rel}`;
  const cgEntry = (rel: string) => {
    const id = cgroupId(env.cgDir(cg(rel)));
    if (id === null) return undefined;
    return new Map(new Pins(env.bpffs).entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups')).get(id);
  };
  const slots = () => new Pins(env.bpffs).slots();
  const connect = (ns: string, rel: string) =>
    env.client<ClientResult>(podNs[ns]!, cg(rel), ['connect', '10.220.0.100', '8080']);
  const status = async () =>
    JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir])) as {
      agent: {
        outcomes: { policy: string; origin: string; from: string; state: string }[];
        kubernetes?: { synced: boolean; pods: { pod: string; decision: string; policy?: string }[] };
      };
      guard: { guard: string[]; pass: number; refused: number };
    };
  const startAgent = async (extra: string[] = [], waitSynced = true) => {
    agent = await env.agent(dir, [
      '--kubernetes',
      '--kubeconfig',
      kubeconfig,
      '--node-name',
      NODE,
      '--kubelet-cgroupns-root',
      env.cgRoot,
      '--kubernetes-stall',
      '2',
      '--interval',
      '600',
      ...extra,
    ]);
    if (waitSynced)
      await waitFor(() => logs(agent!).some((l) => l.event === 'kubernetes_synced'), 'first list', agent, 30_000);
    return agent;
  };
  const stopAgent = async () => {
    if (agent) await env.stop(agent);
    agent = undefined;
  };
  /** Waits until the agent's last reconcile knows the policy (in agent.json). */
  const known = (policy: string) =>
    waitFor(
      () => {
        try {
          const s = JSON.parse(readFileSync(join(env.stateDir, 'agent.json'), 'utf8')) as {
            outcomes?: { policy: string }[];
          };
          return (s.outcomes ?? []).some((o) => o.policy === policy);
        } catch {
          return false;
        }
      },
      `${policy} known to the agent`,
      agent,
    );

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-k8s-agent-'));
    node = env.netns('node');
    up = env.netns('up');
    env.bridge(node, 'br0', [`${PROXY}/24`]);
    env.plug(node, 'br0', up, ['10.220.0.100/24']);
    for (const [name, addr] of [
      ['a', '10.220.0.11'],
      ['b', '10.220.0.12'],
      ['c', '10.220.0.13'],
      ['h', '10.220.0.14'],
      ['r', '10.220.0.16'],
      ['d', '10.220.0.17'],
      ['x', '10.220.0.18'],
    ] as const) {
      podNs[name] = env.netns(name);
      env.plug(node, 'br0', podNs[name], [`${addr}/24`]);
    }
    for (const q of QOS_PARENTS) env.cgroup(q);
    const proxyCg = env.cgroup('proxy');
    await env.server(up, '10.220.0.100', 8080, 'up');
    await env.haproxy(node, proxyCg, `${PROXY}:15001`, 15001);
    writeFileSync(
      join(dir, 'template.yaml'),
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
    kubeconfig = api.writeKubeconfig(join(dir, 'kubeconfig.conf'));
    api.addNamespace('shop', { 'meshredir.io/redirect': 'enabled' });
    api.addNamespace('plain');
    api.addNamespace('kube-system');
    await startAgent();
  });

  afterAll(async () => {
    await stopAgent().catch(() => {});
    await api?.stop();
    const problems: string[] = [];
    if (env) {
      await removeTrees(env);
      problems.push(...(await env.teardown()));
    }
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  const pods: Record<string, { pod: string; ctr: string; uid: string }> = {};

  it('enrolled pods (both drivers) go through HAProxy; not enrolled and hostNetwork pods go direct; status says where each policy came from', async () => {
    const add = (name: string, ns: string, driver: 'systemd' | 'cgroupfs', qos: Qos, extra = {}) => {
      const uid = randomUUID();
      pods[name] = { ...layout(driver, qos, uid), uid };
      api.addPod({ name, namespace: ns, nodeName: NODE, uid, qosClass: qos, ...extra });
    };
    add('a', 'shop', 'systemd', 'Burstable');
    add('b', 'shop', 'cgroupfs', 'BestEffort');
    add('c', 'plain', 'systemd', 'Guaranteed');
    add('h', 'kube-system', 'cgroupfs', 'Burstable', {
      hostNetwork: true,
      labels: { 'meshredir.io/redirect': 'enabled' },
    });
    for (const p of Object.values(pods)) env.cgroup(p.ctr); // kubelet makes the pod cgroup, the runtime the container's
    await waitFor(
      () =>
        cgEntry(pods.a!.pod)?.kind === CgKind.POLICY &&
        cgEntry(pods.b!.pod)?.kind === CgKind.POLICY &&
        cgEntry(pods.c!.pod)?.kind === CgKind.PASS &&
        cgEntry(pods.h!.pod)?.kind === CgKind.PASS,
      'pods classified',
      agent,
    );
    const ra = await connect('a', pods.a!.ctr);
    expect(ra.data).toMatch(/^up 10\.220\.0\.1 /); // the upstream saw HAProxy
    expect(ra.peer).toEqual({ address: '10.220.0.100', port: 8080 }); // the app saw its destination
    expect((await connect('b', pods.b!.ctr)).data).toMatch(/^up 10\.220\.0\.1 /);
    expect((await connect('c', pods.c!.ctr)).data).toMatch(/^up 10\.220\.0\.13 /);
    expect((await connect('h', pods.h!.ctr)).data).toMatch(/^up 10\.220\.0\.14 /);
    for (const q of QOS_PARENTS) expect(cgEntry(q)?.kind).toBe(CgKind.GUARD);

    const s = await status();
    expect(s.agent.outcomes.find((o) => o.policy === 'pod.shop.a')).toMatchObject({
      origin: 'kubernetes',
      from: `pod shop/a (uid ${pods.a!.uid})`,
      state: 'applied',
    });
    expect(s.agent.kubernetes?.synced).toBe(true);
    expect(s.agent.kubernetes?.pods.find((p) => p.pod === 'kube-system/h')).toMatchObject({ decision: 'pass' });
    expect(s.guard.guard).toHaveLength(6);
    expect(s.guard.pass).toBe(2);
    const text = await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
    expect(text).toMatch(/kubernetes: 4 pod\(s\) on this node \(2 enrolled, 2 not enrolled, 0 not classifiable\)/);
    expect(text).toMatch(/kubernetes guard on .*: \d+ connect\(s\) refused/);

    // --dry-run: what the files and the pods (once listed) would give, nothing written.
    const dry = env.cli([
      'agent',
      '--dry-run',
      '--policies',
      dir,
      '--cgroup-root',
      env.cgRoot,
      '--bpffs',
      env.bpffs,
      '--mode',
      'ebpf',
      '--kubernetes',
      '--kubeconfig',
      kubeconfig,
      '--node-name',
      NODE,
      '--kubelet-cgroupns-root',
      env.cgRoot,
    ]);
    expect(await dry.exited, dry.err).toBe(0);
    const plan = JSON.parse(dry.out) as { gates: { guard: unknown[]; pass: { cgroup: string }[] } };
    expect(plan.gates.guard).toHaveLength(6);
    expect(plan.gates.pass.map((p) => p.cgroup).sort()).toEqual([cg(pods.c!.pod), cg(pods.h!.pod)].sort());

    // verify: through the proxy for a; what a pass and a guard mean for the others.
    const verify = async (rel: string) => {
      const p = env.cli(['verify', '--cgroup', cg(rel), '--bpffs', env.bpffs, '--json']);
      await p.exited;
      return (JSON.parse(p.out) as { steps: { step: string; ok: boolean; detail: string }[] }).steps;
    };
    expect((await verify(pods.a!.ctr)).every((x) => x.ok)).toBe(true);
    expect((await verify(pods.c!.ctr)).at(-1)!.detail).toMatch(/classified as not enrolled/);
    const unknown = env.cgroup(`${FS}/burstable/pod${randomUUID()}`);
    expect((await verify(unknown.slice(env.cgRoot.length + 1))).at(-1)!.detail).toMatch(/guard on .* not classified/);
    rmdirSync(env.cgDir(unknown));
  });

  it('a policy file claiming a pod cgroup wins over the pod (said why); removing it gives the cgroup back to the pod', async () => {
    writeFileSync(
      join(dir, 'claim.yaml'),
      policyYaml({
        name: 'claim',
        cgroup: cg(pods.b!.pod),
        outbound: `${PROXY}:15001`,
        outboundSpec: { excludePorts: [8080] },
      }),
    );
    await waitFor(() => slots().has('claim') && !slots().has('pod.shop.b'), 'the file took the cgroup', agent);
    expect(
      logs(agent!).some((l) =>
        /policy pod\.shop\.b is not applied: its cgroup .* is claimed by policy claim .*a policy file wins over a pod/.test(
          l.msg,
        ),
      ),
    ).toBe(true);
    expect((await connect('b', pods.b!.ctr)).data).toMatch(/^up 10\.220\.0\.12 /); // the file excludes 8080
    rmSync(join(dir, 'claim.yaml'));
    await waitFor(() => slots().has('pod.shop.b') && !slots().has('claim'), 'the pod has it back', agent);
    expect((await connect('b', pods.b!.ctr)).data).toMatch(/^up 10\.220\.0\.1 /);
  });

  it('start race under the guard: a pod connecting from the instant its cgroup exists never goes direct', async () => {
    const before = (await status()).guard.refused;
    let refused = 0;
    const latencies: number[] = [];
    for (let i = 0; i < 12; i++) {
      const uid = randomUUID();
      const driver = i % 2 ? 'cgroupfs' : 'systemd';
      const x = layout(driver, 'Burstable', uid);
      const name = `race-${i}`;
      api.addPod({ name, namespace: 'shop', nodeName: NODE, uid, qosClass: 'Burstable' });
      if (i % 4 < 2) await known(`pod.shop.${name}`); // the pod is known before its cgroup exists, or not yet
      // Meanwhile this process watches the map for the pod cgroup's policy (CLOCK_MONOTONIC, as the tool's).
      const podDir = env.cgDir(cg(x.pod));
      let seenAt: bigint | undefined;
      let raced = false;
      const map = new Pins(env.bpffs).openMap('mr_cgroups');
      const watching = (async () => {
        try {
          while (!raced && seenAt === undefined) {
            const id = cgroupId(podDir);
            if (id !== null && (map.get(id) as { kind: number } | undefined)?.kind === CgKind.POLICY)
              seenAt = process.hrtime.bigint();
            else await new Promise((r) => setImmediate(r));
          }
        } finally {
          map.close();
        }
      })();
      // nsenter, not ip netns exec: that remounts /sys, and the tool must see the cgroup2 mount.
      const run = env.run(null, null, 'nsenter', [
        `--net=/run/netns/${podNs.r!}`,
        'python3',
        join(TOOLS, 'podrace.py'),
        env.cgDir(cg(x.pod)),
        env.cgDir(cg(x.ctr)),
        '10.220.0.100',
        '8080',
        '30',
        PROXY,
        '10.220.0.16',
      ]);
      const out = await run.finally(() => (raced = true));
      await watching;
      const res = JSON.parse(out.trim()) as {
        mkdirNs: string;
        counts: Record<string, number>;
        runs: [string, number][];
      };
      if (seenAt !== undefined) latencies.push(Number(seenAt - BigInt(res.mkdirNs)) / 1e6);
      expect(res.counts.direct ?? 0, `${driver} round ${i}: ${JSON.stringify(res.runs)}`).toBe(0);
      expect(
        res.runs.map(([k]) => k),
        JSON.stringify(res.runs),
      ).toEqual(res.runs[0]![0] === 'refused' ? ['refused', 'proxy'] : ['proxy']);
      refused += res.counts.refused ?? 0;
      api.delete('pods', `shop/${name}`);
    }
    expect((await status()).guard.refused - before).toBe(refused);
    const ms = [...latencies].sort((p, q) => p - q);
    console.log(
      `start race, real agent, guard on: ${refused} connect(s) refused over 12 pods, none direct; pod cgroup mkdir → policy in map (seen by the test): ${ms.length} seen, p50 ${ms[ms.length >> 1]?.toFixed(1)} ms, max ${ms.at(-1)?.toFixed(1)} ms`,
    );
  });

  it('watch faults: 410 after compaction, a dropped connection, a hang — the maps follow the API each time', async () => {
    const pod = (name: string, driver: 'systemd' | 'cgroupfs') => {
      const uid = randomUUID();
      const x = layout(driver, 'BestEffort', uid);
      env.cgroup(x.pod);
      api.addPod({ name, namespace: 'shop', nodeName: NODE, uid, qosClass: 'BestEffort' });
      return x.pod;
    };
    const f1 = pod('f1', 'systemd');
    await waitFor(() => cgEntry(f1)?.kind === CgKind.POLICY, 'f1', agent);
    // 410: the watch breaks, and history is compacted meanwhile (a deletion and an addition in it).
    await api.stop();
    api.delete('pods', 'shop/f1');
    const f2 = pod('f2', 'cgroupfs');
    api.compact();
    await api.start(api.port);
    await waitFor(
      () => cgEntry(f2)?.kind === CgKind.POLICY && cgEntry(f1) === undefined,
      'relisted after 410',
      agent,
      20_000,
    );
    // A dropped connection: resumed from its resourceVersion.
    api.dropConnections();
    const f3 = pod('f3', 'systemd');
    await waitFor(() => cgEntry(f3)?.kind === CgKind.POLICY, 'after a dropped connection', agent, 20_000);
    // A silent hang: the stall timer (--kubernetes-stall 2) resumes the watch.
    api.freezeWatches();
    const f4 = pod('f4', 'cgroupfs');
    await new Promise((r) => setTimeout(r, 500));
    expect(cgEntry(f4)).toBeUndefined(); // unseen yet: the guard holds it
    await waitFor(() => cgEntry(f4)?.kind === CgKind.POLICY, 'after the stall', agent, 20_000);
    expect(logs(agent!).some((l) => l.event === 'watch_stalled')).toBe(true);
    for (const f of ['f2', 'f3', 'f4']) api.delete('pods', `shop/${f}`);
  });

  it('a pod deleted while the agent is down loses its policy when the agent is back; its cgroup is guarded', async () => {
    const uid = randomUUID();
    const d = layout('cgroupfs', 'Burstable', uid);
    api.addPod({ name: 'd', namespace: 'shop', nodeName: NODE, uid });
    env.cgroup(d.ctr);
    await waitFor(() => cgEntry(d.pod)?.kind === CgKind.POLICY, 'policy of d', agent);
    await stopAgent();
    api.delete('pods', 'shop/d'); // its cgroup stays a moment (the kubelet is tearing it down)
    await startAgent();
    await waitFor(() => !slots().has('pod.shop.d'), 'pod.shop.d removed', agent);
    expect(cgEntry(d.pod)).toBeUndefined(); // neither policy nor pass: an unknown pod cgroup, held by the guard
    expect(await connect('d', d.ctr)).toMatchObject({ ok: false, error: 'EPERM' });
  });

  it('restart with the API server down: the pod policies and gates last applied stay, a new pod is guarded', async () => {
    await stopAgent();
    await api.stop();
    const a = await startAgent([], false);
    const waiting = logs(a).find((l) => l.event === 'kubernetes_waiting');
    expect(waiting?.msg).toMatch(/until then the \d+ pod policies and the gates last applied .* stay in force/);
    expect(slots().has('pod.shop.a')).toBe(true);
    expect(cgEntry(pods.a!.pod)?.kind).toBe(CgKind.POLICY);
    expect(cgEntry(pods.c!.pod)?.kind).toBe(CgKind.PASS);
    expect((await connect('a', pods.a!.ctr)).data).toMatch(/^up 10\.220\.0\.1 /);
    expect((await connect('c', pods.c!.ctr)).data).toMatch(/^up 10\.220\.0\.13 /);
    const x = layout('systemd', 'BestEffort', randomUUID());
    env.cgroup(x.ctr); // a pod the API server would tell about: unclassified, refused
    expect(await connect('x', x.ctr)).toMatchObject({ ok: false, error: 'EPERM' });
    expect((await status()).agent.kubernetes?.synced).toBe(false);
    expect(await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir])).toMatch(
      /kubernetes: waiting for the first list of pods; the pod policies read at .* stay in force/,
    );
    await api.start(api.port);
    await waitFor(() => logs(a).some((l) => l.event === 'kubernetes_synced'), 'synced once the API is back', a, 30_000);
    expect(slots().has('pod.shop.a')).toBe(true);
    expect((await status()).agent.kubernetes?.synced).toBe(true);
  });

  it('pods gone: their policies and pass entries leave the maps; the guard stays', async () => {
    for (const p of ['shop/a', 'shop/b', 'plain/c', 'kube-system/h']) api.delete('pods', p);
    await waitFor(() => [...slots().keys()].every((n) => !n.startsWith('pod.')), 'pod policies removed', agent);
    await waitFor(
      () =>
        new Pins(env.bpffs)
          .entries<[bigint, { kind: number }][]>('mr_cgroups')
          .every(([, v]) => v.kind !== CgKind.PASS && v.kind !== CgKind.POLICY),
      'pass entries removed',
      agent,
    );
  });
});

kernelDescribe('agent --kubernetes --mode iptables: pod policies applied as rules in the pod netns', () => {
  let env: Env;
  let api: KubeApiStandin;
  let dir: string;
  let agent: Proc | undefined;
  let state: string;

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-k8s-ipt-'));
    state = join(env.stateDir, 'iptables.json');
    mkdirSync(env.stateDir, { recursive: true, mode: 0o700 });
    api = new KubeApiStandin();
    await api.start();
    api.addNamespace('shop', { 'meshredir.io/redirect': 'enabled' });
    writeFileSync(
      join(dir, 'template.yaml'),
      [
        'apiVersion: meshredir/v1',
        'kind: RedirectPolicyTemplate',
        'metadata: { name: default }',
        'spec:',
        '  proxy: { outbound: "127.0.0.1:15001", bypass: { uids: [1337] } }',
        '',
      ].join('\n'),
    );
    for (const q of QOS_PARENTS) env.cgroup(q);
  });

  afterAll(async () => {
    if (agent) await env.stop(agent);
    await env
      .cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir])
      .catch(() => '');
    await api?.stop();
    await removeTrees(env);
    const problems = await env.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  describe('a sidecar pod', () => {
    it('is redirected to its in-pod proxy; the guard is said to be eBPF-only, once', async () => {
      const pod = env.netns('pod');
      const up = env.netns('up');
      env.veth(pod, 'eth0', ['10.221.0.1/24', '10.221.0.11/24'], up, 'eth0', ['10.221.0.2/24']);
      await env.server(up, '0.0.0.0', 8080, 'up');
      const uid = randomUUID();
      const x = layout('cgroupfs', 'Burstable', uid);
      const proxyCg = env.cgroup(`${x.pod}/proxy`);
      const appCg = env.cgroup(`${x.pod}/app`);
      // The sidecar proxy runs as uid 1337 (the template's bypass) and dials from 10.221.0.11.
      await env.haproxy(pod, proxyCg, '127.0.0.1:15001', 15001, { uid: 1337, source: '10.221.0.11' });
      api.addPod({ name: 'p', namespace: 'shop', nodeName: NODE, uid });
      agent = await env.agent(dir, [
        '--mode',
        'iptables',
        '--iptables-state',
        state,
        '--kubernetes',
        '--kubeconfig',
        api.writeKubeconfig(join(dir, 'kubeconfig.conf')),
        '--node-name',
        NODE,
        '--kubelet-cgroupns-root',
        env.cgRoot,
        '--interval',
        '600',
      ]);
      await waitFor(
        () => sh('ip', ['netns', 'exec', pod, 'iptables-save', '-t', 'nat']).includes('MESHREDIR'),
        'rules in the pod netns',
        agent,
        30_000,
      );
      const r = await env.client<ClientResult>(pod, appCg, ['connect', '10.221.0.2', '8080']);
      expect(r.data).toMatch(/^up 10\.221\.0\.11 /); // through the sidecar
      expect(r.peer).toEqual({ address: '10.221.0.2', port: 8080 });
      api.addPod({ name: 'q', namespace: 'shop', nodeName: NODE, uid: randomUUID() }); // another reconcile
      await new Promise((res) => setTimeout(res, 500));
      expect(logs(agent).filter((l) => l.event === 'guard_unsupported')).toHaveLength(1);
    });
  });
});
