// index.ts — the iptables mode: the same policies as istio-style nat rules in each pod's netns, applied
// atomically with iptables-restore --noflush, backend chosen per netns and remembered, drift detected
// against what was applied, every netns on its own, and a cleanup that says what it could not do.
import { rmSync } from 'node:fs';
import type { Policy } from '../../policy/schema.js';
import type {
  ApplyResult,
  CleanupReport,
  Mode,
  ModeConfig,
  Note,
  Plan,
  PolicyOutcome,
  VerifyRequest,
} from '../mode.js';
import { ignoredFields } from './rules.js';
import { Runner } from './run.js';
import { resolveTargets, dryRun, renderDryRun, bypassCgroupIds, type Resolved } from './plan.js';
import { applyRules, removeEntry, type IptablesApplyReport, type Removal } from './apply.js';
import { iptablesStatus } from './status.js';
import { iptablesVerify } from './verify.js';
import { readState, writeState } from './state.js';
import { iptablesMetrics, iptablesReadiness } from './metrics.js';

interface IptablesPlan extends Plan {
  readonly resolved: Resolved;
}

/** What the last apply did, in the mode's own terms (tests and logs read it). */
export type { IptablesApplyReport, Removal };

export class IptablesMode implements Mode {
  readonly name = 'iptables' as const;
  readonly run: Runner;
  readonly stateFile: string;
  /** The last apply's report in full (what the ApplyResult summarises). */
  last?: IptablesApplyReport;

  constructor(cfg: Pick<ModeConfig, 'iptablesState' | 'iptablesBackend' | 'lockWait'>) {
    this.stateFile = cfg.iptablesState;
    this.run = new Runner(cfg.lockWait, cfg.iptablesBackend);
  }

  installed(): boolean {
    const s = readState(this.stateFile);
    return Object.keys(s.netns).length > 0 || Object.keys(s.policies).length > 0;
  }

  plan(policies: Policy[]): IptablesPlan {
    const resolved = resolveTargets(policies);
    const outcomes: PolicyOutcome[] = [
      ...resolved.targets.map((t): PolicyOutcome => ({ policy: t.p.name, file: t.p.file, state: 'applied' })),
      ...resolved.skipped.map((s): PolicyOutcome => ({
        policy: s.p.name,
        file: s.p.file,
        state: s.drop ? 'rejected' : 'waiting',
        reason: s.reason,
      })),
    ];
    const notes: Note[] = policies.flatMap((p) =>
      ignoredFields(p).map((n): Note => ({
        level: 'warn',
        event: 'ignored',
        message: `${p.name}: ${n}`,
        fields: { policy: p.name },
      })),
    );
    // As in the eBPF mode, a proxy cgroup that does not exist (yet) is left out until it does.
    for (const { p } of resolved.targets) {
      const have = bypassCgroupIds(p);
      for (const cg of p.bypass.cgroups.filter((c) => !(c in have)))
        notes.push({
          level: 'warn',
          event: 'unresolved_bypass',
          message: `bypass cgroup ${cg} of ${p.name} does not exist: its rule is left out until it does`,
          fields: { mode: 'iptables', policy: p.name, cgroup: cg },
        });
    }
    return {
      mode: 'iptables',
      input: policies,
      policies: outcomes,
      notes,
      resolved,
      render: () => {
        // Exactly what the first reconcile would run, read from the namespaces as they are now.
        const d = dryRun(this.run, readState(this.stateFile), resolved);
        return {
          text: renderDryRun(d.entries, this.run.lockWait),
          messages: d.skipped.map((s) => `${s.policy}: not applied in iptables mode: ${s.reason}`),
          ok: d.skipped.length === 0,
        };
      },
    };
  }

  apply(plan: Plan): ApplyResult {
    const resolved = (plan as IptablesPlan).resolved ?? resolveTargets(plan.input);
    const r = applyRules(this.run, this.stateFile, plan.input, resolved);
    this.last = r;
    const notes: Note[] = [...plan.notes];
    const outcomes = new Map(plan.policies.map((o) => [o.policy, o]));
    const file = (policy: string) => outcomes.get(policy)?.file;
    for (const sk of r.skipped) {
      const o = outcomes.get(sk.policy);
      if (o && o.state === 'applied') outcomes.set(sk.policy, { ...o, state: 'waiting', reason: sk.reason });
      notes.push({
        level: 'error',
        event: 'skipped',
        message: `${sk.policy}: not applied in iptables mode: ${sk.reason}`,
        fields: { mode: 'iptables', policy: sk.policy, file: file(sk.policy), reason: sk.reason },
      });
    }
    for (const f of r.failed) {
      const o = outcomes.get(f.policy);
      if (o) outcomes.set(f.policy, { ...o, state: 'failed', reason: f.reason });
      notes.push({
        level: 'error',
        event: 'apply_failed',
        message: `${f.policy}: ${f.reason}`,
        fields: { mode: 'iptables', ...f, file: file(f.policy) },
      });
    }
    for (const rm of r.removed) {
      const failed = rm.outcome === 'failed';
      notes.push({
        level: failed ? 'error' : 'info',
        event: failed ? 'remove_failed' : 'removed',
        message: rm.detail,
        fields: { mode: 'iptables', ...rm },
      });
    }
    for (const x of r.repaired) {
      notes.push({
        level: 'warn',
        event: 'repaired',
        message: `${x.policy}: our ${x.family === 'ipv4' ? 'IPv4' : 'IPv6'} rules in netns ${x.netns} were not as applied (a flushed chain or an edited rule: not done by this agent); restored`,
        fields: { mode: 'iptables', ...x },
      });
    }
    const removed = r.removed.filter((x) => x.outcome !== 'failed').length;
    return {
      writes: r.applied.length + removed,
      deletes: removed,
      loaded: false,
      policies: [...outcomes.values()],
      notes,
    };
  }

  status() {
    return iptablesStatus(this.run, this.stateFile);
  }

  verify(req: VerifyRequest) {
    return iptablesVerify(this.run, this.stateFile, req);
  }

  metrics() {
    return iptablesMetrics(this.run, this.stateFile);
  }

  readiness() {
    return iptablesReadiness(this.stateFile);
  }

  /** Removes our rules from every remembered netns; the state keeps what could not be removed. */
  cleanup(): CleanupReport {
    const state = readState(this.stateFile);
    const done: Removal[] = [];
    for (const [id, e] of Object.entries(state.netns)) {
      const r = removeEntry(this.run, e);
      done.push(r);
      if (r.outcome !== 'failed') delete state.netns[id];
    }
    if (Object.keys(state.netns).length === 0) rmSync(this.stateFile, { force: true });
    else writeState(this.stateFile, { ...state, policies: {} });
    const failed = done.filter((d) => d.outcome === 'failed');
    const line = (n: Removal) => `${n.policy ? `policy ${n.policy}: ` : ''}${n.detail}`;
    return {
      mode: 'iptables',
      removed: done.filter((d) => d.outcome !== 'failed').map(line),
      kept: [],
      failed: [
        ...failed.map(line),
        ...(failed.length
          ? [
              `${failed.length} network namespace(s) still hold MESHREDIR rules; they stay in ${this.stateFile} for the next cleanup`,
            ]
          : []),
      ],
      notes: [],
      json: { iptablesNetns: done },
    };
  }
}
