// kubernetes-source.test.ts — the Kubernetes source against the API stand-in (client-node unmodified,
// configured by a kubeconfig), with a directory tree standing in for the cgroup2 mount: pods become
// policies or pass entries, a pod cgroup's mkdir is seen at once, and the watch survives 410 Gone,
// dropped connections, an API server that goes away, a silent hang and deletions while it was away.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { KubeApiStandin } from '../tools/kube-apiserver-standin.js';
import { KubernetesSource, loadKubeConfig } from '../../src/sources/kubernetes/source.js';
import { TemplateDir } from '../../src/sources/kubernetes/templates.js';
import type { SourceRead } from '../../src/sources/source.js';

const TEMPLATE = `apiVersion: meshredir/v1
kind: RedirectPolicyTemplate
metadata: { name: default }
spec:
  proxy: { outbound: "10.200.0.1:15001", bypass: { cgroups: [/node/proxy] } }
`;

async function until<T>(what: string, f: () => Promise<T | undefined> | T | undefined, ms = 10_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('Kubernetes source against the API stand-in', () => {
  let api: KubeApiStandin;
  let dir: string;
  let mount: string;
  let source: KubernetesSource;
  let reasons: string[];
  const logs: string[] = [];

  const make = (extra: Partial<ConstructorParameters<typeof KubernetesSource>[0]> = {}) =>
    new KubernetesSource({
      kubeconfig: loadKubeConfig(join(dir, 'kubeconfig')),
      nodeName: 'n1',
      layout: { prefix: '/', cgroupRoot: '/', drivers: ['systemd', 'cgroupfs'] },
      templates: (
        (t) => () =>
          t.read()
      )(new TemplateDir(join(dir, 'policies'))),
      mount,
      reflector: { stallMs: 1500, backoff: { initialMs: 50, maxMs: 400 }, minLifeMs: 200 },
      v1Mounts: [join(dir, 'v1')],
      unknownGraceMs: 0,
      log: (_l, _f, m) => logs.push(m),
      ...extra,
    });

  beforeEach(async () => {
    dir = mkdtempSync(join(tmpdir(), 'meshredir-k8s-unit-'));
    mount = join(dir, 'cgroup');
    for (const d of ['kubepods/burstable', 'kubepods/besteffort']) mkdirSync(join(mount, d), { recursive: true });
    mkdirSync(join(dir, 'policies'));
    writeFileSync(join(dir, 'policies', 'template.yaml'), TEMPLATE);
    api = new KubeApiStandin();
    await api.start();
    api.writeKubeconfig(join(dir, 'kubeconfig'));
    api.addNamespace('shop', { 'meshredir.io/redirect': 'enabled' });
    api.addNamespace('plain');
    reasons = [];
    logs.length = 0;
  });

  afterEach(async () => {
    await source?.stop();
    await api.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const names = (r: SourceRead) => r.policies.map((p) => p.name).sort();

  it('lists, then follows the watch: enrolled pods are policies, others pass entries, hostNetwork ignored', async () => {
    const a = api.addPod({ name: 'a', namespace: 'shop', nodeName: 'n1' });
    api.addPod({ name: 'other-node', namespace: 'shop', nodeName: 'n2' });
    const b = api.addPod({ name: 'b', namespace: 'plain', nodeName: 'n1', qosClass: 'BestEffort' });
    mkdirSync(join(mount, 'kubepods/burstable', `pod${a.metadata.uid}`));
    mkdirSync(join(mount, 'kubepods/besteffort', `pod${b.metadata.uid}`));
    source = make();
    await source.start((r) => reasons.push(r));
    let r = await source.read();
    expect(names(r)).toEqual(['pod.shop.a']);
    expect(r.policies[0]!.cgroup).toBe(`/kubepods/burstable/pod${a.metadata.uid}`);
    expect(r.policies[0]!.file).toBe(`pod shop/a (uid ${a.metadata.uid})`);
    expect(r.gates).toEqual({
      guard: [
        '/kubepods.slice',
        '/kubepods.slice/kubepods-burstable.slice',
        '/kubepods.slice/kubepods-besteffort.slice',
        '/kubepods',
        '/kubepods/burstable',
        '/kubepods/besteffort',
      ],
      pass: [`/kubepods/besteffort/pod${b.metadata.uid}`],
    });
    expect(r.errors).toEqual([]);

    const h = api.addPod({ name: 'h', namespace: 'shop', nodeName: 'n1', hostNetwork: true });
    mkdirSync(join(mount, 'kubepods/burstable', `pod${h.metadata.uid}`));
    await until('hostNetwork pod seen', () => reasons.some((x) => x.includes('shop/h add')));
    r = await source.read();
    expect(names(r)).toEqual(['pod.shop.a']);
    expect(r.gates!.pass).toContain(`/kubepods/burstable/pod${h.metadata.uid}`);
    // Only reads of pods and namespaces (RBAC: get/list/watch on pods and namespaces).
    expect(new Set(api.requests.map((q) => `${q.method} ${q.path}`))).toEqual(
      new Set(['GET /api/v1/pods', 'GET /api/v1/namespaces']),
    );
    expect(
      api.requests.filter((q) => q.path === '/api/v1/pods').every((q) => q.query.fieldSelector === 'spec.nodeName=n1'),
    ).toBe(true);
    expect(api.requests.some((q) => q.query.watch === 'true' && q.query.allowWatchBookmarks === 'true')).toBe(true);
  });

  it('a pod cgroup made after the pod is known is reported at once (inotify), and then resolves', async () => {
    const a = api.addPod({ name: 'a', namespace: 'shop', nodeName: 'n1' });
    source = make();
    await source.start((r) => reasons.push(r));
    const before = await source.read();
    expect(before.policies[0]!.cgroup).toBe(`/kubepods/burstable/pod${a.metadata.uid}`); // where it will be
    reasons.length = 0;
    mkdirSync(join(mount, 'kubepods/burstable', `pod${a.metadata.uid}`));
    await until('mkdir seen', () => reasons.find((x) => x.startsWith('cgroup /kubepods/burstable/pod')));
    expect(reasons[0]).toBe(`cgroup /kubepods/burstable/pod${a.metadata.uid} (pod uid ${a.metadata.uid})`);
  });

  it('a namespace label change re-classifies its pods; a deleted pod loses its policy', async () => {
    api.addPod({ name: 'a', namespace: 'plain', nodeName: 'n1' });
    source = make();
    await source.start((r) => reasons.push(r));
    expect(names(await source.read())).toEqual([]);
    api.update(
      'namespaces',
      '/plain',
      (n) => ((n.metadata.labels as Record<string, string>)['meshredir.io/redirect'] = 'enabled'),
    );
    await until('enrolled', async () => names(await source.read()).length === 1);
    api.delete('pods', 'plain/a');
    await until('removed', async () => names(await source.read()).length === 0);
  });

  it('410 Gone on the watch (history compacted while disconnected): lists again, deletions included', async () => {
    api.addPod({ name: 'a', namespace: 'shop', nodeName: 'n1' });
    api.addPod({ name: 'b', namespace: 'shop', nodeName: 'n1' });
    source = make();
    await source.start((r) => reasons.push(r));
    expect(names(await source.read())).toEqual(['pod.shop.a', 'pod.shop.b']);
    const lists = () => api.requests.filter((q) => q.path === '/api/v1/pods' && q.query.watch === undefined).length;
    const before = lists();
    await api.stop();
    api.delete('pods', 'shop/a'); // while the agent cannot see it
    api.addPod({ name: 'c', namespace: 'shop', nodeName: 'n1' });
    api.compact();
    await api.start(api.port);
    await until('relisted', async () => names(await source.read()).join() === 'pod.shop.b,pod.shop.c');
    expect(api.expiredWatches).toBeGreaterThan(0); // the watch from the old resourceVersion got 410
    expect(lists()).toBeGreaterThan(before);
  });

  it('410 on a list continuation: the list starts again from its first page', async () => {
    for (const n of ['a', 'b', 'c']) api.addPod({ name: n, namespace: 'shop', nodeName: 'n1' });
    api.failLists(410);
    source = make({
      reflector: { pageSize: 2, backoff: { initialMs: 50, maxMs: 400 }, stallMs: 5000, minLifeMs: 200 },
    });
    await source.start((r) => reasons.push(r));
    expect(names(await source.read())).toEqual(['pod.shop.a', 'pod.shop.b', 'pod.shop.c']);
    expect(
      logs.some((l) => /pods list or watch failed: HTTP 410: The provided continue parameter is too old/.test(l)),
    ).toBe(true);
    expect(api.requests.some((q) => q.query.continue)).toBe(true);
  });

  it('an API server that goes away: retried with backoff (no flood), then resumes', async () => {
    source = make();
    await source.start((r) => reasons.push(r));
    await api.stop();
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 1500));
    const failures = logs.filter((l) => /failed: .*retrying in/.test(l)).length;
    // Backoff 50 → 400 ms: a handful of attempts in 1.5 s per collection, not hundreds.
    expect(failures).toBeGreaterThan(1);
    expect(failures).toBeLessThan(30);
    await api.start(api.port);
    api.addPod({ name: 'late', namespace: 'shop', nodeName: 'n1' });
    await until('resumed', async () => names(await source.read()).includes('pod.shop.late'));
    expect(Date.now() - t0).toBeLessThan(8000);
  });

  it('a watch that hangs silently (after its headers, or with no answer) is resumed by the stall timer', async () => {
    source = make();
    await source.start((r) => reasons.push(r));
    api.freezeWatches(); // the open watches go silent
    api.hangWatches('no-response'); // and the next ones are not even answered
    api.addPod({ name: 'x', namespace: 'shop', nodeName: 'n1' });
    await new Promise((r) => setTimeout(r, 300));
    expect(names(await source.read())).toEqual([]);
    await until('stalled', () => logs.some((l) => /no event nor bookmark/.test(l)), 5000);
    api.hangWatches('none');
    await until('resumed after the stall', async () => names(await source.read()).includes('pod.shop.x'), 10_000);
  });

  it('bookmarks keep a quiet watch alive (no stall) and advance its resourceVersion', async () => {
    source = make();
    await source.start((r) => reasons.push(r));
    const watches = () => api.requests.filter((q) => q.query.watch === 'true').length;
    const w0 = watches();
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 300));
      api.bookmark();
    }
    expect(logs.filter((l) => /no event nor bookmark/.test(l))).toEqual([]);
    expect(watches()).toBe(w0);
    // Changes this watch does not see (another node's pod) move the resourceVersion on; a bookmark
    // carries it, so a dropped watch resumes from there rather than from its last own event.
    api.addPod({ name: 'elsewhere', namespace: 'shop', nodeName: 'n2' });
    api.bookmark();
    const rv = String(api.resourceVersion());
    await new Promise((r) => setTimeout(r, 100));
    api.dropConnections();
    await until('watch resumed', () =>
      api.requests.some((q) => q.path === '/api/v1/pods' && q.query.watch === 'true' && q.query.resourceVersion === rv),
    );
  });

  it('errors: a missing template, an unreadable annotation and unknown pod cgroups are reported', async () => {
    api.addPod({ name: 't', namespace: 'shop', nodeName: 'n1', annotations: { 'meshredir.io/template': 'nope' } });
    api.addPod({ name: 'v', namespace: 'shop', nodeName: 'n1', labels: { 'meshredir.io/redirect': 'on' } });
    mkdirSync(join(mount, 'kubepods/burstable', 'pod0123456789abcdef0123456789abcdef'));
    source = make();
    await source.start(() => {});
    const r = await source.read();
    expect(r.policies).toEqual([]);
    expect(r.errors.map((e) => e.message)).toEqual([
      expect.stringMatching(
        /^pod shop\/t .*RedirectPolicyTemplate "nope" is not in the policy directory; not classified/,
      ),
      expect.stringMatching(/^pod shop\/v .*"on" is neither "enabled" nor "disabled"; not classified/),
      'cgroup /kubepods/burstable/pod0123456789abcdef0123456789abcdef (pod uid 0123456789abcdef0123456789abcdef) belongs to no pod of node n1 that the API shows: the guard refuses its connections',
    ]);
  });

  it('in-cluster configuration (service account files, KUBERNETES_SERVICE_HOST/PORT) works too', async () => {
    api.addPod({ name: 'a', namespace: 'shop', nodeName: 'n1' });
    api.writeServiceAccount(join(dir, 'sa/var/run/secrets/kubernetes.io/serviceaccount'));
    const env = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = '127.0.0.1';
    process.env.KUBERNETES_SERVICE_PORT = String(api.port);
    try {
      const kc = new KubeConfig();
      kc.loadFromCluster(join(dir, 'sa'));
      source = make({ kubeconfig: kc });
      await source.start(() => {});
    } finally {
      for (const [k, v] of [
        ['KUBERNETES_SERVICE_HOST', env.host],
        ['KUBERNETES_SERVICE_PORT', env.port],
      ] as const)
        if (v === undefined) delete process.env[k];
        else process.env[k] = v;
    }
    expect(names(await source.read())).toEqual(['pod.shop.a']);
    api.addPod({ name: 'b', namespace: 'shop', nodeName: 'n1' }); // seen through the watch (token sent)
    await until('watched', async () => names(await source.read()).length === 2);
    expect(logs.filter((l) => /401/.test(l))).toEqual([]);
  });

  it('a layout it cannot resolve is reported with the paths it tried', async () => {
    rmSync(join(mount, 'kubepods'), { recursive: true });
    const a = api.addPod({ name: 'a', namespace: 'plain', nodeName: 'n1', qosClass: 'Guaranteed' });
    source = make();
    await source.start(() => {});
    const msgs = (await source.read()).errors.map((e) => e.message);
    const u = a.metadata.uid!;
    expect(msgs).toContain(
      `pod plain/a is running but its cgroup is in none of the places the kubelet's layout puts it (tried /kubepods.slice/kubepods-pod${u.replace(/-/g, '_')}.slice, /kubepods/pod${u} under ${mount}): set the kubelet's --cgroup-root and driver (layout), or the runtime does not place pods in the cgroup v2 hierarchy`,
    );
    expect(msgs.at(-1)).toMatch(/^no kubepods cgroup found under the cgroup2 mount .*: tried \/kubepods.slice, /);
    // A hybrid host whose runtime made the pod's cgroup in a v1 hierarchy only: said so.
    mkdirSync(join(dir, 'v1/kubepods', `pod${u}`), { recursive: true });
    expect((await source.read()).errors.map((e) => e.message)).toContain(
      `pod plain/a is running but its cgroup is in none of the places the kubelet's layout puts it (tried /kubepods.slice/kubepods-pod${u.replace(/-/g, '_')}.slice, /kubepods/pod${u} under ${mount}): it exists in a cgroup v1 hierarchy (${join(dir, 'v1/kubepods', `pod${u}`)}) only: the runtime does not place pods in the v2 hierarchy, where the eBPF hooks look (cgroupfs driver on a hybrid host; use the systemd driver)`,
    );
  });
});
