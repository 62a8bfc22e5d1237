// open.ts — the Kubernetes source as the agent's options describe it: the API server (a kubeconfig, or the
// pod's service account in-cluster), this node's name, the kubelet's cgroup layout, the guard.
import { existsSync } from 'node:fs';
import type { Logger } from '../../util/log.js';
import type { KubernetesSource } from './source.js';
import type { CgroupDriver } from './cgroup-layout.js';

export interface KubernetesOptions {
  /** A kubeconfig file; without one, the in-cluster service account. */
  kubeconfig?: string;
  nodeName: string;
  /** The kubelet's --cgroup-root ("/" by default). */
  kubeletCgroupRoot: string;
  /** Where the kubelet's cgroup namespace begins in our view of the cgroup2 hierarchy ("/" on a node). */
  kubeletCgroupnsRoot: string;
  driver: 'auto' | CgroupDriver;
  guard: boolean;
  /** Seconds without an event or bookmark after which a watch is taken as hung. */
  stallSeconds: number;
  /** The policy directory (its RedirectPolicyTemplate documents). */
  policies: string;
}

const SERVICE_ACCOUNT = '/var/run/secrets/kubernetes.io/serviceaccount/token';

/**
 * Throws a plain Error saying what is missing when the API server cannot be configured. client-node (slow
 * to load: ~1-2 s) is loaded only once the options are known to be usable.
 */
export async function openKubernetes(o: KubernetesOptions, log: Logger): Promise<KubernetesSource> {
  if (!o.kubeconfig && !process.env.KUBERNETES_SERVICE_HOST)
    throw new Error(
      '--kubernetes without --kubeconfig needs the in-cluster configuration (KUBERNETES_SERVICE_HOST is not set: the agent does not run in a pod); pass --kubeconfig FILE',
    );
  if (!o.kubeconfig && !existsSync(SERVICE_ACCOUNT))
    throw new Error(
      `--kubernetes without --kubeconfig needs the pod's service account token (${SERVICE_ACCOUNT} does not exist: automountServiceAccountToken is off?)`,
    );
  const [{ KubernetesSource, loadKubeConfig }, { TemplateDir }, { DEFAULT_REFLECTOR }] = await Promise.all([
    import('./source.js'),
    import('./templates.js'),
    import('./reflector.js'),
  ]);
  let kubeconfig;
  try {
    kubeconfig = loadKubeConfig(o.kubeconfig);
  } catch (e) {
    throw new Error(`--kubeconfig ${o.kubeconfig}: ${(e as Error).message}`);
  }
  return new KubernetesSource({
    kubeconfig,
    nodeName: o.nodeName,
    layout: {
      prefix: o.kubeletCgroupnsRoot,
      cgroupRoot: o.kubeletCgroupRoot,
      drivers: o.driver === 'auto' ? ['systemd', 'cgroupfs'] : [o.driver],
    },
    templates: new TemplateDir(o.policies).read,
    guard: o.guard,
    reflector: { ...DEFAULT_REFLECTOR, stallMs: o.stallSeconds * 1000 },
    log: (level, fields, msg) => log[level](fields, msg),
  });
}
