// source.ts — what the agent needs of a source of policies (the policy directory, the Kubernetes pod
// watch): every source feeds the one desired state the agent reconciles.
import type { Policy } from '../policy/schema.js';
import type { Gates } from '../policy/entries.js';
import type { PolicyOutcome } from '../modes/mode.js';

export interface SourceError {
  source: string;
  /** The file or object the error is about. */
  object: string;
  message: string;
  /** 'warn': the object was skipped as none of the source's business (a FIFO named *.yaml); absent: an error. */
  level?: 'warn' | 'error';
}

export interface SourceRead {
  policies: Policy[];
  errors: SourceError[];
  /**
   * Cgroups this source classifies without a policy (absent: none). The Kubernetes source gives the
   * kubepods QoS parents as `guard` (connects from a pod cgroup below them that has no entry yet are
   * refused) and the pods it classified as not enrolled as `pass`. The agent unions them over its sources
   * and hands them to the mode with the policies (`mode.plan({ policies, gates })`).
   */
  gates?: Gates;
}

export interface PolicySource {
  /** For logs and status: 'files', 'kubernetes'. */
  readonly name: string;
  /**
   * Starts watching; calls changed(reason) whenever the desired policies may have changed. Resolves once
   * the source's first view is complete (the Kubernetes source: its first list of pods and namespaces);
   * until then the agent does not read it (it keeps what it last applied from it).
   */
  start(changed: (reason: string) => void): Promise<void>;
  /** The desired policies now, with per-object errors; never throws for bad input. */
  read(): Promise<SourceRead>;
  /** After an apply: what the mode did with the policies of the last read (a rejected one is not in force). */
  settled?(outcomes: PolicyOutcome[]): void;
  /** A periodic look at what a watch may have missed (called on every interval). */
  poll?(): void;
  stop(): Promise<void>;
}
