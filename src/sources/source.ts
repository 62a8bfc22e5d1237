// source.ts — what the agent needs of a source of policies (the policy directory, the Kubernetes pod watch).
import type { Policy } from '../policy/schema.js';
import type { Gates } from '../policy/entries.js';

export interface SourceError {
  source: string;
  object: string;
  message: string;
}

export interface SourceRead {
  policies: Policy[];
  errors: SourceError[];
  /**
   * Cgroups this source classifies without a policy (absent: none). The Kubernetes source gives the
   * kubepods QoS parents as `guard` (connects from a pod cgroup below them that has no entry yet are
   * refused) and the pods it classified as not enrolled as `pass`. The agent hands them to the mode with
   * the policies (EbpfMode.applyPolicies(policies, gates)); the union over sources is applied.
   */
  gates?: Gates;
}

export interface PolicySource {
  /** For logs and status: 'files', 'kubernetes'. */
  readonly name: string;
  /**
   * Starts watching; calls changed(reason) whenever the desired policies may have changed. Resolves once
   * the source's first view is complete (the Kubernetes source: its first list of pods and namespaces),
   * so that a first read() never reports an empty set that would remove what a previous agent applied.
   */
  start(changed: (reason: string) => void): Promise<void>;
  /** The desired policies now, with per-object errors; never throws for bad input. */
  read(): Promise<SourceRead>;
  stop(): Promise<void>;
}
