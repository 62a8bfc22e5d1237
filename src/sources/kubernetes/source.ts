// source.ts — the Kubernetes pod source: watches the pods of this node and the namespaces, and the
// kubepods cgroups (so a pod cgroup's mkdir is seen within milliseconds), and turns each pod into a
// policy (enrolled), a pass entry (not enrolled, hostNetwork) or an error (the guard keeps holding it).
import { existsSync, readdirSync, statSync } from 'node:fs';
import { CoreV1Api, KubeConfig, type V1Namespace, type V1Pod } from '@kubernetes/client-node';
import type { Policy } from '../../policy/schema.js';
import { instantiate } from '../../policy/template.js';
import { CgroupWatch } from '../../util/cgroup-watch.js';
import { cgroupDir, mounts, requireCgroup2 } from '../../util/host.js';
import type { PolicySource, SourceError, SourceRead } from '../source.js';
import {
  DEFAULT_LAYOUT,
  podCgroupCandidates,
  podUidOfCgroup,
  qosParents,
  resolvePodCgroup,
  type KubeletLayout,
} from './cgroup-layout.js';
import { cgroupUid, decide, podKey, podOrigin, policyName, qosOf } from './pod.js';
import { DEFAULT_REFLECTOR, Reflector, type ReflectorOptions } from './reflector.js';
import type { TemplateSet } from './templates.js';
import type { KubeSnapshot, PodView } from './snapshot.js';

export type { PodView };

export interface KubernetesSourceOptions {
  kubeconfig: KubeConfig;
  /** This node's name (spec.nodeName of its pods; NODE_NAME from the downward API). */
  nodeName: string;
  layout?: KubeletLayout;
  /** The RedirectPolicyTemplate documents (a TemplateDir over the policy directory). */
  templates: () => Promise<TemplateSet>;
  /** Guard entries on the kubepods QoS parents (default true): unclassified pods are refused. */
  guard?: boolean;
  /** The cgroup2 mount (default: from /proc/mounts). */
  mount?: string;
  /** cgroup v1 hierarchies (a hybrid host's; default: from /proc/mounts), only to say why a pod's cgroup
   * is not found where the hooks look: it exists in v1 only. */
  v1Mounts?: string[];
  reflector?: Partial<ReflectorOptions>;
  /** A pod cgroup that no pod of this node explains is reported after this long (default 30 s). */
  unknownGraceMs?: number;
  log?: (level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string) => void;
}

export class KubernetesSource implements PolicySource {
  readonly name = 'kubernetes';
  private readonly layout: KubeletLayout;
  private readonly mount: string;
  private readonly v1Mounts: string[];
  private pods?: Reflector<V1Pod>;
  private namespaces?: Reflector<V1Namespace>;
  private cgroups?: CgroupWatch;
  private changed: (reason: string) => void = () => {};
  private unknownSince = new Map<string, number>();
  private view: PodView[] = [];
  private last?: KubeSnapshot;

  constructor(private readonly o: KubernetesSourceOptions) {
    this.layout = o.layout ?? DEFAULT_LAYOUT;
    this.mount = o.mount ?? requireCgroup2();
    this.v1Mounts =
      o.v1Mounts ??
      mounts()
        .filter((m) => m.type === 'cgroup')
        .map((m) => m.target);
  }

  /** Where a path exists in a cgroup v1 hierarchy, if it does. */
  private inV1(paths: string[]): string | null {
    for (const m of this.v1Mounts)
      for (const p of paths) {
        const d = cgroupDir(p, m);
        if (existsSync(d)) return d;
      }
    return null;
  }

  private log(level: 'info' | 'warn' | 'error', fields: Record<string, unknown>, msg: string): void {
    this.o.log?.(level, { source: 'kubernetes', ...fields }, msg);
  }

  async start(changed: (reason: string) => void): Promise<void> {
    this.changed = changed;
    const api = this.o.kubeconfig.makeApiClient(CoreV1Api);
    const ropts = { ...DEFAULT_REFLECTOR, ...this.o.reflector };
    const events = (kind: string) => ({
      change: (what: string, obj: { metadata?: { namespace?: string; name?: string } }) =>
        this.changed(
          `${kind} ${obj.metadata?.namespace ? `${obj.metadata.namespace}/` : ''}${obj.metadata?.name} ${what}`,
        ),
      failure: (err: Error, what: string, retryInMs: number) =>
        this.log(
          'warn',
          { event: 'watch_failed', kind, retryInMs },
          `${kind} ${what} failed: ${err.message}; retrying in ${Math.round(retryInMs)} ms`,
        ),
      stalled: () =>
        this.log(
          'warn',
          { event: 'watch_stalled', kind },
          `${kind} watch: no event nor bookmark for ${ropts.stallMs} ms; resuming it`,
        ),
      listed: (items: number, rv: string) => {
        this.log('info', { event: 'listed', kind, items, resourceVersion: rv }, `listed ${items} ${kind}`);
        this.changed(`${kind} listed`);
      },
    });
    const fieldSelector = `spec.nodeName=${this.o.nodeName}`;
    this.pods = new Reflector<V1Pod>(
      this.o.kubeconfig,
      '/api/v1/pods',
      (p) => api.listPodForAllNamespaces({ fieldSelector, limit: p.limit, _continue: p.continue }),
      events('pods'),
      ropts,
      fieldSelector,
    );
    this.namespaces = new Reflector<V1Namespace>(
      this.o.kubeconfig,
      '/api/v1/namespaces',
      (p) => api.listNamespace({ limit: p.limit, _continue: p.continue }),
      events('namespaces'),
      ropts,
    );
    this.cgroups = new CgroupWatch(
      this.mount,
      (c) => {
        if (c.event === 'change') return; // cgroup.events notifications, not a cgroup made or removed
        if (c.event === 'armed') {
          // A QoS parent watched from now on (made after the start): pods made in it meanwhile are read.
          this.changed(`watching ${c.parent}`);
          return;
        }
        const uid = c.name ? podUidOfCgroup(c.name) : null;
        this.changed(`cgroup ${c.parent}/${c.name ?? '?'}${uid ? ` (pod uid ${uid})` : ''}`);
      },
      (e, dir) => this.log('error', { event: 'cgroup_watch_failed', dir }, `watching ${dir} failed: ${e.message}`),
    );
    this.cgroups.set(qosParents(this.layout).map((p) => p.path));
    await Promise.all([this.pods.start(), this.namespaces.start()]);
    await Promise.all([this.pods.synced, this.namespaces.synced]);
  }

  private exists = (path: string): boolean => {
    try {
      return statSync(cgroupDir(path, this.mount)).isDirectory();
    } catch {
      return false;
    }
  };

  async read(): Promise<SourceRead> {
    const errors: SourceError[] = [];
    const policies: Policy[] = [];
    const pass: string[] = [];
    const view: PodView[] = [];
    const documents: KubeSnapshot['policies'] = [];
    const err = (object: string, message: string) => errors.push({ source: this.name, object, message });
    const { templates, errors: terrs } = await this.o.templates();
    errors.push(...terrs);
    const ns = new Map((this.namespaces?.cache.list() ?? []).map((n) => [n.metadata?.name ?? '', n]));
    const known = new Set<string>();
    const parents = qosParents(this.layout);
    const parentsExist = parents.some((p) => this.exists(p.path));
    for (const pod of this.pods?.cache.list() ?? []) {
      if (pod.spec?.nodeName !== this.o.nodeName) continue;
      const key = podKey(pod);
      const uid = cgroupUid(pod);
      if (!uid) {
        err(`pod ${key}`, `pod ${key} has no uid`);
        continue;
      }
      known.add(uid.toLowerCase());
      const d = decide(pod, ns.get(pod.metadata?.namespace ?? ''));
      const r = resolvePodCgroup(podCgroupCandidates(this.layout, uid, qosOf(pod)), this.exists);
      const cgroup = r.found ? r.path : null;
      const v: PodView = {
        pod: key,
        uid,
        decision: d.kind,
        why: d.kind === 'invalid' ? d.errors.join('; ') : d.why,
        cgroup,
      };
      view.push(v);
      if (!r.found && !r.parentExists && pod.status?.phase === 'Running') {
        const v1 = this.inV1(r.tried);
        err(
          `pod ${key}`,
          `pod ${key} is running but its cgroup is in none of the places the kubelet's layout puts it (tried ${r.tried.join(', ')} under ${this.mount}): ` +
            (v1
              ? `it exists in a cgroup v1 hierarchy (${v1}) only: the runtime does not place pods in the v2 hierarchy, where the eBPF hooks look (cgroupfs driver on a hybrid host; use the systemd driver)`
              : `set the kubelet's --cgroup-root and driver (layout), or the runtime does not place pods in the cgroup v2 hierarchy`),
        );
      }
      if (d.kind === 'invalid') {
        for (const m of d.errors)
          err(`pod ${key}`, `${podOrigin(pod)}: ${m}; not classified, so the guard refuses its connections`);
        continue;
      }
      if (d.kind === 'pass') {
        if (cgroup) pass.push(cgroup);
        continue;
      }
      const t = templates.get(d.template);
      if (!t) {
        err(
          `pod ${key}`,
          `${podOrigin(pod)}: RedirectPolicyTemplate ${JSON.stringify(d.template)} is not in the policy directory; not classified, so the guard refuses its connections`,
        );
        continue;
      }
      // A pod cgroup that does not exist yet: the policy names where the kubelet will make it (the
      // mode applies it as soon as it exists; the cgroup watch triggers that read).
      const path = r.found ? r.path : (r.expected ?? r.tried[0]!);
      const made = instantiate(t, d.overrides, policyName(pod), path, podOrigin(pod));
      if ('errors' in made) {
        for (const m of made.errors)
          err(
            `pod ${key}`,
            `${podOrigin(pod)} with template ${t.name} (${t.file}): ${m}; not classified, so the guard refuses its connections`,
          );
        continue;
      }
      v.policy = made.policy.name;
      policies.push(made.policy);
      documents.push({ file: made.policy.file, document: made.document });
    }
    if (!parentsExist && known.size > 0)
      err(
        `node ${this.o.nodeName}`,
        `no kubepods cgroup found under the cgroup2 mount ${this.mount}: tried ${parents.map((p) => p.path).join(', ')}`,
      );
    this.reportUnknown(known, err);
    this.view = view;
    const gates = { guard: this.o.guard === false ? [] : parents.map((p) => p.path), pass };
    this.last = { at: new Date().toISOString(), policies: documents, gates, pods: view };
    return { policies, errors, gates };
  }

  /** The last read in the form agent.json keeps (undefined before the first read). */
  snapshot(): KubeSnapshot | undefined {
    return this.last;
  }

  /** Pod cgroups that belong to no pod of this node the API shows (held by the guard): said once they
   * have stayed so for the grace period (a pod being created or deleted is one for a moment). */
  private reportUnknown(known: Set<string>, err: (object: string, message: string) => void): void {
    const now = Date.now();
    const seen = new Set<string>();
    for (const parent of qosParents(this.layout)) {
      let names: string[];
      try {
        names = readdirSync(cgroupDir(parent.path, this.mount));
      } catch {
        continue;
      }
      for (const n of names) {
        const uid = podUidOfCgroup(n);
        if (!uid || known.has(uid)) continue;
        const path = `${parent.path}/${n}`;
        seen.add(path);
        const since = this.unknownSince.get(path) ?? now;
        this.unknownSince.set(path, since);
        if (now - since >= (this.o.unknownGraceMs ?? 30_000))
          err(
            `cgroup ${path}`,
            `cgroup ${path} (pod uid ${uid}) belongs to no pod of node ${this.o.nodeName} that the API shows${this.o.guard === false ? '' : ': the guard refuses its connections'}`,
          );
      }
    }
    for (const p of [...this.unknownSince.keys()]) if (!seen.has(p)) this.unknownSince.delete(p);
  }

  /** The pods as the last read() classified them. */
  podViews(): PodView[] {
    return this.view;
  }

  async stop(): Promise<void> {
    this.cgroups?.close();
    await Promise.all([this.pods?.stop(), this.namespaces?.stop()]);
  }
}

/** A KubeConfig from a file (--kubeconfig) or, without one, the pod's service account (in-cluster). */
export function loadKubeConfig(file?: string): KubeConfig {
  const kc = new KubeConfig();
  if (file) kc.loadFromFile(file);
  else kc.loadFromCluster();
  return kc;
}
