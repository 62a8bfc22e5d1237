// kubernetes-pod.test.ts — pod → policy: enrolment by namespace label and pod label/annotation,
// hostNetwork never enrolled, templates (validated by the RedirectPolicy schema) and per-pod overrides,
// policy names, and the guard/pass map entries.
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/policy/load.js';
import { instantiate, type PolicyTemplate } from '../../src/policy/template.js';
import { decide, policyName, cgroupUid, type PodLike } from '../../src/sources/kubernetes/pod.js';
import { toEntries } from '../../src/policy/entries.js';
import { CgKind } from '../../src/bpf/abi.js';

const templateText = `
apiVersion: meshredir/v1
kind: RedirectPolicyTemplate
metadata: { name: default }
spec:
  proxy:
    outbound: 10.200.0.1:15001
    bypass: { cgroups: [/node/proxy], uids: [1337] }
  outbound:
    excludePorts: [15090]
    excludeCidrs: ["10.200.0.0/30"]
`;

const pod = (p: {
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  hostNetwork?: boolean;
}): PodLike => ({
  metadata: {
    name: 'reviews-7d4',
    namespace: 'shop',
    uid: 'u-1',
    labels: p.labels ?? {},
    annotations: p.annotations ?? {},
  },
  spec: { nodeName: 'n1', ...(p.hostNetwork ? { hostNetwork: true } : {}) },
  status: { qosClass: 'Burstable', phase: 'Running' },
});
const ns = (labels: Record<string, string> = {}, annotations: Record<string, string> = {}) => ({
  metadata: { name: 'shop', labels, annotations },
});

describe('enrolment', () => {
  it('a namespace label enrols its pods; nothing set means not enrolled', () => {
    expect(decide(pod({}), ns({ 'meshredir.io/redirect': 'enabled' }))).toMatchObject({
      kind: 'enrolled',
      template: 'default',
      why: 'namespace label meshredir.io/redirect=enabled',
    });
    expect(decide(pod({}), ns())).toMatchObject({ kind: 'pass', why: 'no meshredir.io/redirect label or annotation' });
    expect(decide(pod({}), undefined)).toMatchObject({ kind: 'pass' });
  });

  it('a pod label or annotation wins over the namespace, both ways', () => {
    const on = ns({ 'meshredir.io/redirect': 'enabled' });
    expect(decide(pod({ labels: { 'meshredir.io/redirect': 'disabled' } }), on)).toMatchObject({ kind: 'pass' });
    expect(decide(pod({ annotations: { 'meshredir.io/redirect': 'disabled' } }), on)).toMatchObject({ kind: 'pass' });
    expect(decide(pod({ annotations: { 'meshredir.io/redirect': 'enabled' } }), ns())).toMatchObject({
      kind: 'enrolled',
      why: 'pod annotation meshredir.io/redirect=enabled',
    });
  });

  it('hostNetwork pods are never enrolled, whatever they say', () => {
    expect(
      decide(
        pod({ hostNetwork: true, labels: { 'meshredir.io/redirect': 'enabled' } }),
        ns({ 'meshredir.io/redirect': 'enabled' }),
      ),
    ).toEqual({ kind: 'pass', why: 'hostNetwork pod (never enrolled)' });
  });

  it('a value it cannot read leaves the pod unclassified (the guard holds it), with the reason', () => {
    expect(decide(pod({ labels: { 'meshredir.io/redirect': 'yes' } }), ns())).toEqual({
      kind: 'invalid',
      errors: ['pod label meshredir.io/redirect: "yes" is neither "enabled" nor "disabled"'],
    });
    expect(
      decide(
        pod({ labels: { 'meshredir.io/redirect': 'enabled' }, annotations: { 'meshredir.io/redirect': 'disabled' } }),
        ns(),
      ),
    ).toMatchObject({ kind: 'invalid', errors: ['pod label and annotation meshredir.io/redirect disagree'] });
    expect(
      decide(
        pod({
          annotations: { 'meshredir.io/redirect': 'enabled', 'meshredir.io/exclude-outbound-ports': '80,x,70000' },
        }),
        ns(),
      ),
    ).toEqual({
      kind: 'invalid',
      errors: [
        'annotation meshredir.io/exclude-outbound-ports: "x" is not a port (1-65535)',
        'annotation meshredir.io/exclude-outbound-ports: "70000" is not a port (1-65535)',
      ],
    });
  });

  it('the template: pod annotation, else the namespace annotation, else "default"', () => {
    const enabled = { 'meshredir.io/redirect': 'enabled' };
    expect(decide(pod({}), ns(enabled, { 'meshredir.io/template': 'shop' }))).toMatchObject({ template: 'shop' });
    expect(
      decide(
        pod({ annotations: { 'meshredir.io/template': 'mine' } }),
        ns(enabled, { 'meshredir.io/template': 'shop' }),
      ),
    ).toMatchObject({ template: 'mine' });
  });

  it('a mirror pod is known to the kubelet (and its cgroup) by its static pod uid', () => {
    expect(
      cgroupUid({ metadata: { uid: 'api-uid', annotations: { 'kubernetes.io/config.mirror': 'abcdef0123' } } }),
    ).toBe('abcdef0123');
    expect(cgroupUid({ metadata: { uid: 'api-uid' } })).toBe('api-uid');
  });

  it('policy names: pod.<namespace>.<name>, long ones shortened with a hash', () => {
    expect(policyName(pod({}))).toBe('pod.shop.reviews-7d4');
    const long = { metadata: { namespace: 'ns', name: 'a'.repeat(253) } };
    const n = policyName(long);
    expect(n.length).toBeLessThanOrEqual(253);
    expect(n).toMatch(/^pod\.ns\.a+-[0-9a-f]{12}$/);
    expect(policyName({ metadata: { namespace: 'ns', name: `${'a'.repeat(252)}b` } })).not.toBe(n);
  });
});

describe('RedirectPolicyTemplate', () => {
  const r = parsePolicyText(templateText, 'tpl.yaml');
  const t = r.templates![0]!;

  it('is read from the policy directory beside policies, without a cgroup', () => {
    expect(r.errors).toEqual([]);
    expect(r.policies).toEqual([]);
    expect(t).toMatchObject({ name: 'default', file: 'tpl.yaml' });
  });

  it('is checked by the RedirectPolicy schema, and must not set what a pod gives', () => {
    const bad = parsePolicyText(
      templateText.replace('excludePorts: [15090]', 'excludePorts: [0]').replace('spec:\n', 'spec:\n  cgroup: /x\n'),
      'bad.yaml',
    );
    expect(bad.templates).toEqual([]);
    expect(bad.errors.map((e) => `${e.path}: ${e.message}`)).toEqual([
      'spec.cgroup: is set per pod by the Kubernetes source; a RedirectPolicyTemplate must not set it',
      'spec.outbound.excludePorts[0]: 0 is not a port (1-65535)',
    ]);
    const noProxy = parsePolicyText(
      'apiVersion: meshredir/v1\nkind: RedirectPolicyTemplate\nmetadata: { name: x }\nspec: { proxy: {} }\n',
      'np.yaml',
    );
    expect(noProxy.errors.map((e) => e.message)).toEqual([
      'needs outbound (IPv4), outbound6 (IPv6) or inbound (or spec.dns alone): there is nowhere to redirect to and nothing to intercept',
    ]);
  });

  it('a pod policy: the template with the pod cgroup, name and origin', () => {
    const made = instantiate(t, {}, 'pod.shop.r', '/kubepods/burstable/podu-1', 'pod shop/r (uid u-1)');
    if (!('policy' in made)) throw new Error(made.errors.join('; '));
    expect(made.policy).toMatchObject({
      name: 'pod.shop.r',
      file: 'pod shop/r (uid u-1)',
      origin: 'kubernetes',
      cgroup: '/kubepods/burstable/podu-1',
      bypass: { cgroups: ['/node/proxy'], uids: [1337] },
    });
    expect(made.policy.outbound.excludePorts).toEqual([15090]);
  });

  it('annotations: excludes add to the template, includes replace it; conflicts are the pod error', () => {
    const a = decide(
      pod({
        annotations: {
          'meshredir.io/redirect': 'enabled',
          'meshredir.io/exclude-outbound-ports': '8081, 9090',
          'meshredir.io/include-outbound-cidrs': '10.0.0.0/8',
          'meshredir.io/exclude-outbound-cidrs': '10.9.0.0/16',
          'meshredir.io/exclude-inbound-ports': '22',
        },
      }),
      ns(),
    );
    if (a.kind !== 'enrolled') throw new Error(a.kind);
    const made = instantiate(t, a.overrides, 'pod.shop.r', '/k/p', 'pod shop/r');
    if (!('policy' in made)) throw new Error(made.errors.join('; '));
    expect(made.policy.outbound.excludePorts).toEqual([15090, 8081, 9090]);
    expect(made.policy.outbound.includeCidrs.map((c) => c.text)).toEqual(['10.0.0.0/8']);
    expect(made.policy.outbound.excludeCidrs.map((c) => c.text)).toEqual(['10.200.0.0/30', '10.9.0.0/16']);
    expect(made.policy.inbound.excludePorts).toEqual([22]);
    const clash = instantiate(t, { includePorts: [15090] }, 'pod.shop.r', '/k/p', 'pod shop/r');
    expect(clash).toEqual({ errors: ['spec.outbound.excludePorts[0]: 15090 is also in includePorts'] });
  });
});

describe('guard and pass entries', () => {
  it('go to mr_cgroups with slot 0; a policy or proxy entry on the same cgroup wins', () => {
    const e = toEntries([], new Map(), new Map(), { fastPath: true }, { guard: [10n, 11n, 20n], pass: [20n, 21n] });
    expect(e.mr_cgroups).toEqual([
      [20n, { kind: CgKind.PASS, slot: 0 }],
      [21n, { kind: CgKind.PASS, slot: 0 }],
      [10n, { kind: CgKind.GUARD, slot: 0 }],
      [11n, { kind: CgKind.GUARD, slot: 0 }],
    ]);
    const p = instantiate(parsePolicyText(templateText, 't').templates![0]!, {}, 'a', '/a', 'f');
    if (!('policy' in p)) throw new Error('template');
    const both = toEntries(
      [p.policy],
      new Map([['a', 5]]),
      new Map([['a', { cgroup: 10n, bypass: [21n] }]]),
      undefined,
      {
        guard: [10n],
        pass: [21n],
      },
    );
    expect(both.mr_cgroups).toEqual([
      [10n, { kind: CgKind.POLICY, slot: 5 }],
      [21n, { kind: CgKind.BYPASS, slot: 5 }],
    ]);
  });
});

describe('RBAC (deploy/kubernetes/rbac.yaml)', () => {
  it('grants only get, list and watch on pods and namespaces', async () => {
    const { readFileSync } = await import('node:fs');
    const { parseAllDocuments } = await import('yaml');
    const docs = parseAllDocuments(
      readFileSync(new URL('../../deploy/kubernetes/rbac.yaml', import.meta.url), 'utf8'),
    ).map((d) => d.toJS() as { kind: string; rules?: { apiGroups: string[]; resources: string[]; verbs: string[] }[] });
    const rules = docs.flatMap((d) => d.rules ?? []);
    expect(docs.map((d) => d.kind)).toEqual(['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding']);
    expect(rules).toEqual([{ apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] }]);
  });
});
