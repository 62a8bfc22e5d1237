// source.ts — what the agent needs of a source of policies (the policy directory, the Kubernetes pod
// watch): every source feeds the one desired state the agent reconciles.
import type { Policy } from '../policy/schema.js';
import type { PolicyOutcome } from '../modes/mode.js';

export interface SourceError {
  source: string;
  /** The file or object the error is about. */
  object: string;
  message: string;
  /** 'warn': the object was skipped as none of the source's business (a FIFO named *.yaml); absent: an error. */
  level?: 'warn' | 'error';
}

export interface PolicySource {
  /** For logs and status: 'files', 'kubernetes'. */
  readonly name: string;
  /** Starts watching; calls changed(reason) whenever the desired policies may have changed. */
  start(changed: (reason: string) => void): Promise<void>;
  /** The desired policies now, with per-object errors; never throws for bad input. */
  read(): Promise<{ policies: Policy[]; errors: SourceError[] }>;
  /** After an apply: what the mode did with the policies of the last read (a rejected one is not in force). */
  settled?(outcomes: PolicyOutcome[]): void;
  /** A periodic look at what a watch may have missed (called on every interval). */
  poll?(): void;
  stop(): Promise<void>;
}
