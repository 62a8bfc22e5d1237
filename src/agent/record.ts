// record.ts — agent.json as the running agent keeps it: at start, what the last run applied is handed to the
// sources (an unreadable file is moved aside) and this run's mode decision is written; after each pass, its
// outcome, written only when something but the time changed.
import { existsSync, renameSync } from 'node:fs';
import { resolve } from 'node:path';
import type { PolicyOutcome } from '../modes/mode.js';
import type { Policy } from '../policy/schema.js';
import type { FileSource } from '../sources/files.js';
import type { Logger } from '../util/log.js';
import type { ModeDecision } from './decide.js';
import type { KeptKubernetes } from './kube-keep.js';
import { originOf } from './merge.js';
import {
  readState,
  writeState,
  statePath,
  type AgentState,
  type OutcomeRecord,
  type ReconcileRecord,
} from './state.js';

/** What agent.json says of this run. */
export interface RunInfo {
  decision: ModeDecision;
  policies: string;
  paths: { cgroupRoot: string; bpffs: string; iptablesState?: string };
  startedAt: Date;
  interval: number;
}

export class AgentRecord {
  private state?: AgentState;

  constructor(
    private readonly stateDir: string,
    private readonly log: Logger,
    private readonly files: FileSource,
    private readonly kube: KeptKubernetes | undefined,
  ) {}

  /** Reads agent.json (the previously applied content per file) and records this run's mode decision. */
  load(run: RunInfo): void {
    const prev = readState(this.stateDir);
    if (prev instanceof Error) {
      const aside = `${statePath(this.stateDir)}.bad`;
      renameSync(statePath(this.stateDir), aside);
      this.log.error(
        { event: 'state_unreadable', file: aside },
        `${prev.message}; moved to ${aside}; the previously applied content of invalid policy files is unknown`,
      );
    }
    const old = prev instanceof Error ? null : prev;
    this.files.remember(old?.applied ?? {});
    const snap = old?.kubernetes?.snapshot;
    if (this.kube) this.kube.restore(snap);
    else if (snap?.policies.length) {
      this.log.info(
        { event: 'kubernetes_dropped', policies: snap.policies.length },
        `agent.json holds ${snap.policies.length} pod policies of an earlier run with --kubernetes; without --kubernetes they are removed`,
      );
    }
    const d = run.decision;
    this.state = {
      version: 1,
      mode: { requested: d.requested, chosen: d.chosen, reason: d.reason, at: new Date().toISOString() },
      ...(d.probe ? { probe: d.probe } : {}),
      agent: {
        pid: process.pid,
        policies: resolve(run.policies),
        ...run.paths,
        startedAt: run.startedAt.toISOString(),
        interval: run.interval,
      },
      applied: this.files.remembered(),
      ...(old?.lastReconcile ? { lastReconcile: old.lastReconcile } : {}),
      ...(old?.outcomes ? { outcomes: old.outcomes } : {}),
      ...this.kubeState(),
    };
    writeState(this.stateDir, this.state);
  }

  private kubeState(): Pick<AgentState, 'kubernetes'> {
    return this.kube ? { kubernetes: this.kube.state() } : {};
  }

  /** Records a reconcile's outcome; writes agent.json only when something but the time changed. */
  record(rec: ReconcileRecord, outcomes?: OutcomeRecord[]): void {
    if (!this.state) return;
    const next: AgentState = {
      ...this.state,
      applied: this.files.remembered(),
      lastReconcile: rec,
      ...(outcomes ? { outcomes } : {}),
      ...this.kubeState(),
    };
    const same = (s: AgentState) =>
      JSON.stringify({ ...s, lastReconcile: s.lastReconcile ? { ...s.lastReconcile, at: '', reason: '' } : undefined });
    // Unchanged and still there (a `cleanup --force` may have removed it): nothing to write.
    if (same(next) === same(this.state) && existsSync(statePath(this.stateDir))) return;
    this.state = next;
    writeState(this.stateDir, next);
  }
}

/** Every policy's outcome as agent.json keeps it (with where the policy came from). */
export function outcomeRecords(outcomes: PolicyOutcome[], byName: Map<string, Policy>): OutcomeRecord[] {
  return outcomes.map((o) => {
    const p = byName.get(o.policy);
    return {
      policy: o.policy,
      origin: p ? originOf(p) : 'file',
      from: o.file,
      state: o.state,
      ...(o.reason ? { reason: o.reason } : {}),
    };
  });
}
