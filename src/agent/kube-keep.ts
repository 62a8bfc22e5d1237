// kube-keep.ts — the Kubernetes source as the agent reads it: until its first list of pods has come, the pod
// policies and gates the last run applied (kept in agent.json) stand in for it, so that a restart while the
// API server is down neither removes a pod's policy nor lets the guard refuse a pod that was classified.
import type { PolicySource, SourceRead } from '../sources/source.js';
import type { KubernetesSource } from '../sources/kubernetes/source.js';
import { restoreSnapshot, type KubeSnapshot } from '../sources/kubernetes/snapshot.js';
import type { Logger } from '../util/log.js';
import type { AgentState } from './state.js';

export class KeptKubernetes implements PolicySource {
  readonly name: string;
  /** Whether the source has had its first complete list (until then it is not read). */
  private synced = false;
  /** The source's last read (from agent.json until it has synced): what is applied for it. */
  private last?: KubeSnapshot;
  private kept?: SourceRead;

  constructor(
    private readonly kube: KubernetesSource,
    private readonly log: Logger,
    /** Whether the agent is stopping (the first list arriving then changes nothing). */
    private readonly stopped: () => boolean,
  ) {
    this.name = kube.name;
  }

  /** The snapshot agent.json kept of an earlier run: applied until the first list comes. */
  restore(snap: KubeSnapshot | undefined): void {
    if (!snap) return;
    this.last = snap;
    this.kept = restoreSnapshot(snap);
  }

  /** What agent.json records of it. */
  state(): NonNullable<AgentState['kubernetes']> {
    return { synced: this.synced, ...(this.last ? { snapshot: this.last } : {}) };
  }

  /** Starts the source without waiting for its first list (which may be long in coming): resolves at once. */
  async start(changed: (reason: string) => void): Promise<void> {
    const kept = this.kept;
    this.log.info(
      { event: 'kubernetes_waiting', kept: kept?.policies.length ?? 0, readAt: this.last?.at ?? null },
      kept
        ? `waiting for the first list of pods from the API server; until then the ${kept.policies.length} pod policies and the gates last applied (read at ${this.last?.at}, kept in agent.json) stay in force`
        : 'waiting for the first list of pods from the API server; no pod policies were kept from an earlier run, so none is applied (and no guard) until it comes',
    );
    this.kube.start(changed).then(
      () => {
        if (this.stopped()) return;
        this.synced = true;
        this.kept = undefined;
        this.log.info(
          { event: 'kubernetes_synced' },
          'first list of pods and namespaces received; pods are reconciled',
        );
        changed('kubernetes: first list');
      },
      (e: Error) =>
        this.log.error({ event: 'kubernetes_failed', err: e }, `the Kubernetes source failed: ${e.message}`),
    );
  }

  /** The kept read until the first list came; then the source's own, remembered for agent.json. */
  async read(): Promise<SourceRead> {
    if (!this.synced) return this.kept ?? { policies: [], errors: [] };
    const r = await this.kube.read();
    const snap = this.kube.snapshot();
    // The time of the read only moves when what it says changed (agent.json is written on a change).
    const same = (a?: KubeSnapshot, b?: KubeSnapshot) =>
      JSON.stringify({ ...a, at: '' }) === JSON.stringify({ ...b, at: '' });
    if (snap && !same(snap, this.last)) this.last = snap;
    return r;
  }

  stop(): Promise<void> {
    return this.kube.stop();
  }
}
