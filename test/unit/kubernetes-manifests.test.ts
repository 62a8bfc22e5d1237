// kubernetes-manifests.test.ts — deploy/kubernetes validated without a cluster: every object against the
// Kubernetes v1.33.0 OpenAPI schemas (kubernetes-models 4.5.1: types, required fields, enums, formats),
// every field known to the API (client-node's models: a typo would be dropped or refused by the API
// server), and the DaemonSet holding what docs/deploy.md promises (privileges, mounts, probes, RBAC).
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { parseAllDocuments } from 'yaml';
import * as k8s from '@kubernetes/client-node';

const DIR = resolve(import.meta.dirname, '..', '..', 'deploy', 'kubernetes');
type Obj = Record<string, unknown> & {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
};

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.yaml') ? [join(dir, e.name)] : [],
  );
}
function parse(text: string): Obj[] {
  return parseAllDocuments(text).map((d) => {
    if (d.errors.length) throw new Error(d.errors.map((e) => e.message).join('; '));
    return d.toJS() as Obj;
  });
}
const MANIFESTS = files(DIR)
  .filter((f) => !f.endsWith('kustomization.yaml'))
  .flatMap((f) => parse(readFileSync(f, 'utf8')).map((o) => ({ file: f.slice(DIR.length + 1), o })));

/** Schema validation by kubernetes-models' validator for the object's apiVersion and kind. */
async function schemaErrors(o: Obj): Promise<string | null> {
  const mod = (await import(/* @vite-ignore */ `kubernetes-models/${o.apiVersion}/${o.kind}`)) as Record<
    string,
    new (x: unknown) => { validate(): void }
  >;
  const Model = mod[o.kind];
  if (!Model) return `no model for ${o.apiVersion} ${o.kind}`;
  try {
    new Model(o).validate();
    return null;
  } catch (e) {
    return (e as Error).message;
  }
}

type AttrMap = { baseName: string; type: string }[];
const models = k8s as unknown as Record<string, { attributeTypeMap?: AttrMap } | undefined>;

/** Fields the API does not know, walking client-node's generated models (from the same OpenAPI spec). */
function unknownFields(value: unknown, type: string, path: string): string[] {
  if (value === null || value === undefined) return [];
  const arr = /^Array<(.+)>$/.exec(type);
  if (arr) return Array.isArray(value) ? value.flatMap((v, i) => unknownFields(v, arr[1]!, `${path}[${i}]`)) : [];
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) return Object.entries(value).flatMap(([k, v]) => unknownFields(v, map[1]!, `${path}.${k}`));
  const attrs = models[type]?.attributeTypeMap;
  if (!attrs || typeof value !== 'object') return []; // scalars, IntOrString, Quantity, free-form objects
  const byName = new Map(attrs.map((a) => [a.baseName, a.type]));
  return Object.entries(value as Record<string, unknown>).flatMap(([k, v]) =>
    byName.has(k) ? unknownFields(v, byName.get(k)!, `${path}.${k}`) : [`${path}.${k}`],
  );
}
const modelOf = (o: Obj) => `${o.apiVersion.split('/').pop()!.replace(/^v/, 'V')}${o.kind}`;

const find = (kind: string, name: string) => MANIFESTS.find((m) => m.o.kind === kind && m.o.metadata.name === name)?.o;

describe('deploy/kubernetes', () => {
  it('has the objects the install needs', () => {
    expect(MANIFESTS.map((m) => `${m.o.kind}/${m.o.metadata.name}`).sort()).toEqual([
      'ClusterRole/meshredir-agent',
      'ClusterRoleBinding/meshredir-agent',
      'ConfigMap/meshredir-policies',
      'DaemonSet/meshredir-agent',
      'DaemonSet/meshredir-cleanup',
      'Namespace/meshredir-system',
      'ResourceQuota/meshredir-critical-pods',
      'ServiceAccount/meshredir-agent',
    ]);
    const kustomize = parse(readFileSync(join(DIR, 'kustomization.yaml'), 'utf8'))[0] as unknown as {
      resources: string[];
    };
    const installed = [...new Set(MANIFESTS.filter((m) => !m.file.startsWith('uninstall/')).map((m) => m.file))];
    expect([...kustomize.resources].sort()).toEqual(installed.sort());
  });

  it.each(MANIFESTS.map((m) => [`${m.file}: ${m.o.kind}/${m.o.metadata.name}`, m.o] as const))(
    '%s is valid against the OpenAPI schema and has no unknown field',
    async (_, o) => {
      expect(await schemaErrors(o)).toBeNull();
      expect(models[modelOf(o)]?.attributeTypeMap, `client-node has no model ${modelOf(o)}`).toBeDefined();
      expect(unknownFields(o, modelOf(o), o.kind)).toEqual([]);
    },
  );

  it('the validation catches a wrong type and a misspelt field', async () => {
    const ds = structuredClone(find('DaemonSet', 'meshredir-agent')!) as unknown as k8s.V1DaemonSet;
    (ds.spec!.template.spec!.containers[0]!.ports![0] as unknown as { containerPort: string }).containerPort = 'health';
    expect(await schemaErrors(ds as unknown as Obj)).toMatch(/containerPort must be integer/);
    const typo = structuredClone(find('DaemonSet', 'meshredir-agent')!) as unknown as k8s.V1DaemonSet;
    (typo.spec!.template.spec as unknown as Record<string, unknown>).hostPid = true;
    expect(unknownFields(typo, 'V1DaemonSet', 'DaemonSet')).toEqual(['DaemonSet.spec.template.spec.hostPid']);
  });
});

describe('the agent DaemonSet', () => {
  const ds = find('DaemonSet', 'meshredir-agent') as unknown as k8s.V1DaemonSet;
  const pod = ds.spec!.template.spec!;
  const agent = pod.containers.find((c) => c.name === 'agent')!;
  const arg = (flag: string) => agent.args!.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
  const mountOf = (path: string) => agent.volumeMounts!.find((m) => m.mountPath === path);
  const hostPathOf = (path: string) => pod.volumes!.find((v) => v.name === mountOf(path)?.name)?.hostPath?.path;

  it('shares the host PID and network namespaces and is node-critical', () => {
    expect([pod.hostPID, pod.hostNetwork, pod.priorityClassName]).toEqual([true, true, 'system-node-critical']);
    expect(pod.serviceAccountName).toBe('meshredir-agent');
  });

  it('drops every capability and adds exactly the measured ones, never privileged', () => {
    expect(agent.securityContext!.privileged).toBeFalsy();
    expect(agent.securityContext!.capabilities).toEqual({
      drop: ['ALL'],
      add: ['SYS_ADMIN', 'NET_ADMIN', 'NET_RAW', 'SYS_PTRACE'],
    });
  });

  it("mounts the host's bpffs, cgroup2, xtables lock and state dir where the agent's flags point", () => {
    expect(arg('--bpffs')!.startsWith(`${mountOf('/sys/fs/bpf')!.mountPath}/`)).toBe(true);
    expect(hostPathOf('/sys/fs/bpf')).toBe('/sys/fs/bpf');
    expect(mountOf('/sys/fs/bpf')!.mountPropagation).toBe('HostToContainer');
    const init = pod.initContainers!.find((c) => c.name === 'mount-bpf-fs')!;
    expect(init.volumeMounts).toContainEqual({
      name: 'bpffs',
      mountPath: '/sys/fs/bpf',
      mountPropagation: 'Bidirectional',
    });
    expect(hostPathOf('/sys/fs/cgroup')).toBe('/sys/fs/cgroup');
    expect(hostPathOf('/run/xtables.lock')).toBe('/run/xtables.lock');
    expect(hostPathOf(arg('--state-dir')!)).toBe('/run/meshredir');
    expect(arg('--iptables-state')!.startsWith(`${arg('--state-dir')}/`)).toBe(true);
    const policies = pod.volumes!.find((v) => v.name === mountOf(arg('--policies')!)!.name)!;
    expect(policies.configMap?.name).toBe('meshredir-policies');
  });

  it('NODE_NAME comes from the downward API; probes hit the health endpoint the agent serves', () => {
    expect(agent.env).toContainEqual({ name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } });
    expect(agent.args).toContain('--kubernetes');
    const [host, port] = arg('--metrics-address')!.split(':');
    for (const [probe, path] of [
      [agent.livenessProbe, '/healthz'],
      [agent.readinessProbe, '/readyz'],
      [agent.startupProbe, '/healthz'],
    ] as const)
      expect(probe!.httpGet).toEqual({ host, port: Number(port), path });
    expect(agent.resources!.requests).toBeDefined();
    expect(agent.resources!.limits!.memory).toBeDefined();
  });

  // Flags the manifests use before the agent has them, each with what brings it; the image test
  // (test/kernel/image.kernel.test.ts, NOT_HERE) leaves them out when it runs the DaemonSet's args.
  // (None now: --kubernetes came with pod discovery, issue 15.)
  const PENDING: Record<string, string> = {};
  it("every flag in the agent's and the cleanup's args is an option of that command (an unknown one exits 2)", async () => {
    const { buildProgram } = await import('../../src/cli/index.js');
    const program = await buildProgram();
    const unknown = (command: string, args: string[]) => {
      const longs = new Set(program.commands.find((c) => c.name() === command)!.options.map((o) => o.long));
      return args
        .filter((a) => a.startsWith('--'))
        .map((a) => a.split('=')[0]!)
        .filter((f) => !longs.has(f));
    };
    expect(agent.args![0]).toBe('agent');
    expect(unknown('agent', agent.args!), `pending: ${JSON.stringify(PENDING)}`).toEqual(Object.keys(PENDING));
    const c = find('DaemonSet', 'meshredir-cleanup') as unknown as k8s.V1DaemonSet;
    const init = c.spec!.template.spec!.initContainers![0]!;
    expect(init.args![0]).toBe('cleanup');
    expect(unknown('cleanup', init.args!)).toEqual([]);
  });

  it('RBAC grants get/list/watch on pods and namespaces, nothing more', () => {
    const role = find('ClusterRole', 'meshredir-agent') as unknown as k8s.V1ClusterRole;
    expect(role.rules).toEqual([
      { apiGroups: [''], resources: ['pods', 'namespaces'], verbs: ['get', 'list', 'watch'] },
    ]);
    const binding = find('ClusterRoleBinding', 'meshredir-agent') as unknown as k8s.V1ClusterRoleBinding;
    expect(binding.subjects).toEqual([
      { kind: 'ServiceAccount', name: 'meshredir-agent', namespace: 'meshredir-system' },
    ]);
  });

  it('the cleanup DaemonSet runs `meshredir cleanup` on the same bpffs and state as the agent', () => {
    const c = find('DaemonSet', 'meshredir-cleanup') as unknown as k8s.V1DaemonSet;
    const init = c.spec!.template.spec!.initContainers![0]!;
    expect(init.args![0]).toBe('cleanup');
    for (const flag of ['--bpffs', '--state-dir', '--iptables-state'])
      expect(init.args).toContain(`${flag}=${arg(flag)}`);
    expect(init.securityContext!.capabilities).toEqual(agent.securityContext!.capabilities);
  });
});
