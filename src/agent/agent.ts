// agent.ts — the node agent: its sources of policies (the policy directory, and with --kubernetes the pods
// of this node) merged into one desired state → the mode's plan → apply, on start, whenever a source or a
// policy's cgroup changes, and periodically; one reconcile at a time, every one reading every source. It
// runs alone on its installation (lock.ts) and beats a heartbeat after every completed pass.
import { existsSync, renameSync } from 'node:fs';
import { resolve } from 'node:path';
import type { Mode, Note, PolicyOutcome } from '../modes/mode.js';
import { DEFAULT_IPTABLES_STATE } from '../modes/defaults.js';
import type { PolicySource, SourceRead } from '../sources/source.js';
import { FileSource } from '../sources/files.js';
import type { KubernetesSource } from '../sources/kubernetes/source.js';
import { restoreSnapshot, type KubeSnapshot } from '../sources/kubernetes/snapshot.js';
import type { Policy } from '../policy/schema.js';
import { requireCgroup2 } from '../util/host.js';
import type { Logger } from '../util/log.js';
import { CgroupTriggers } from './cgroup-triggers.js';
import { mergeSources, originOf } from './merge.js';
import {
  readState,
  writeState,
  removeState,
  statePath,
  type AgentState,
  type OutcomeRecord,
  type ReconcileRecord,
} from './state.js';
import { AgentLocks, heldBy } from './lock.js';
import type { ListenAddress } from './http.js';
import { startEndpoint, type AgentEndpoint } from './endpoint.js';

/** How often the mode's pulse is taken between reconciles. */
const PULSE_MS = 1000;

export interface ModeDecision {
  requested: 'auto' | 'ebpf' | 'iptables';
  chosen: 'ebpf' | 'iptables';
  reason: string;
  /** The probe's verdicts (auto mode). */
  probe?: { kernel: string; libbpf: string; features: Record<string, boolean>; why: Record<string, string> };
}

export interface AgentOptions {
  policies: string;
  /** Seconds between periodic reconciles. */
  interval: number;
  cleanupOnExit: boolean;
  /** Where agent.json lives (mode decision, last applied policies, last reconcile). */
  stateDir: string;
  /** How the mode was chosen (persisted for `status`). */
  decision: ModeDecision;
  /** What agent.json records of where the mode keeps things (cleanup and status match on them). */
  paths: { cgroupRoot: string; bpffs: string; iptablesState?: string };
  /** Where /metrics, /healthz and /readyz are served (none: not served). */
  metricsAddress?: ListenAddress;
}

export interface ReconcileResult {
  loaded: boolean;
  writes: number;
  deletes: number;
  errors: string[];
  warnings: string[];
  policies: number;
  /** Every policy's outcome (applied, waiting, rejected, failed) with its file. */
  outcomes: PolicyOutcome[];
  /** Errors the sources reported (unreadable or invalid policy files). */
  sourceErrors: number;
}

/** The last completed pass, for health checks (the /healthz endpoint reads it from the Agent). */
export interface PassHealth {
  at: Date;
  ok: boolean;
  reason: string;
  durationMs: number;
  /** Policies in force, and those that are not (rejected or failed). */
  applied: number;
  notApplied: number;
  errors: number;
  /** Why the pass failed as a whole (ok false). */
  error?: string;
  /** Policies by outcome, and the sources' errors (metrics). */
  states: Record<PolicyOutcome['state'], number>;
  sourceErrors: number;
}

/** How long stop() waits for a reconcile in progress before it gives up on it. */
const STOP_WAIT_MS = 30_000;

export class Agent {
  readonly files: FileSource;
  private readonly sources: PolicySource[];
  private state?: AgentState;
  private timer?: NodeJS.Timeout;
  private pulseTimer?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  /** The reconcile queued but not started yet: later triggers join it instead of queueing another. */
  private next?: { reasons: string[]; done: Promise<void> };
  private stopped = false;
  private locks?: AgentLocks;
  private last?: PassHealth;
  private startedAt = new Date();
  private endpoint?: AgentEndpoint;
  private readonly triggers: CgroupTriggers;
  /** Whether the Kubernetes source has had its first complete list (until then it is not read). */
  private kubeSynced = false;
  /** The Kubernetes source's last read (from agent.json until it has synced): what is applied for it. */
  private kubeLast?: KubeSnapshot;
  private kubeKept?: SourceRead;

  constructor(
    readonly opts: AgentOptions,
    readonly mode: Mode,
    private readonly log: Logger,
    /** The pods of this node as a source (--kubernetes), made by the caller (it loads client-node). */
    readonly kube?: KubernetesSource,
  ) {
    this.files = new FileSource(opts.policies, log);
    this.sources = kube ? [this.files, kube] : [this.files];
    this.triggers = new CgroupTriggers(requireCgroup2(), (why) => void this.queue(why), log);
  }

  /** Reads agent.json (the previously applied content per file) and records this run's mode decision. */
  private loadState(): void {
    const prev = readState(this.opts.stateDir);
    if (prev instanceof Error) {
      const aside = `${statePath(this.opts.stateDir)}.bad`;
      renameSync(statePath(this.opts.stateDir), aside);
      this.log.error(
        { event: 'state_unreadable', file: aside },
        `${prev.message}; moved to ${aside}; the previously applied content of invalid policy files is unknown`,
      );
    }
    const old = prev instanceof Error ? null : prev;
    this.files.remember(old?.applied ?? {});
    const snap = old?.kubernetes?.snapshot;
    if (snap && this.kube) {
      this.kubeLast = snap;
      this.kubeKept = restoreSnapshot(snap);
    } else if (snap?.policies.length) {
      this.log.info(
        { event: 'kubernetes_dropped', policies: snap.policies.length },
        `agent.json holds ${snap.policies.length} pod policies of an earlier run with --kubernetes; without --kubernetes they are removed`,
      );
    }
    const d = this.opts.decision;
    this.state = {
      version: 1,
      mode: { requested: d.requested, chosen: d.chosen, reason: d.reason, at: new Date().toISOString() },
      ...(d.probe ? { probe: d.probe } : {}),
      agent: {
        pid: process.pid,
        policies: resolve(this.opts.policies),
        ...this.opts.paths,
        startedAt: this.startedAt.toISOString(),
        interval: this.opts.interval,
      },
      applied: this.files.remembered(),
      ...(old?.lastReconcile ? { lastReconcile: old.lastReconcile } : {}),
      ...(old?.outcomes ? { outcomes: old.outcomes } : {}),
      ...this.kubeState(),
    };
    writeState(this.opts.stateDir, this.state);
  }

  private kubeState(): Pick<AgentState, 'kubernetes'> {
    if (!this.kube) return {};
    return { kubernetes: { synced: this.kubeSynced, ...(this.kubeLast ? { snapshot: this.kubeLast } : {}) } };
  }

  /** Records a reconcile's outcome; writes agent.json only when something but the time changed. */
  private record(rec: ReconcileRecord, outcomes?: OutcomeRecord[]): void {
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
    if (same(next) === same(this.state) && existsSync(statePath(this.opts.stateDir))) return;
    this.state = next;
    writeState(this.opts.stateDir, next);
  }

  /** One reconcile: make the kernel's state match the sources. Writes nothing when it does. */
  async reconcile(reason: string): Promise<ReconcileResult> {
    const t0 = Date.now();
    const base = { at: new Date().toISOString(), reason, mode: this.mode.name };
    try {
      const r = await this.reconcileOnce(reason, t0);
      const notApplied = r.outcomes.filter((o) => o.state !== 'applied');
      this.record(
        {
          ...base,
          ok: true,
          writes: r.writes,
          deletes: r.deletes,
          policies: r.policies,
          errors: r.errors,
          warnings: r.warnings,
          outcomes: notApplied,
        },
        r.records,
      );
      this.passed({
        ok: true,
        reason,
        t0,
        applied: r.policies,
        notApplied: notApplied.filter((o) => o.state !== 'waiting').length,
        errors: r.errors.length,
        states: countStates(r.outcomes),
        sourceErrors: r.sourceErrors,
      });
      const { records: _, ...result } = r;
      return result;
    } catch (e) {
      this.record({
        ...base,
        ok: false,
        writes: 0,
        deletes: 0,
        policies: 0,
        errors: [(e as Error).message],
        warnings: [],
      });
      this.passed({
        ok: false,
        reason,
        t0,
        applied: 0,
        notApplied: 0,
        errors: 1,
        error: (e as Error).message,
        states: countStates([]),
        sourceErrors: 0,
      });
      throw e;
    }
  }

  /** A pass completed: the heartbeat (agent.lock's mtime) and the health the Agent object reports. */
  private passed(p: Omit<PassHealth, 'at' | 'durationMs'> & { t0: number }) {
    const at = new Date();
    const { t0, ...rest } = p;
    this.last = { ...rest, at, durationMs: at.getTime() - t0 };
    this.endpoint?.observe(this.last);
    try {
      const problem = this.locks?.beat();
      if (problem) this.log.error({ event: 'lock' }, problem);
    } catch (e) {
      this.log.warn({ event: 'heartbeat', err: e }, `cannot record the heartbeat: ${(e as Error).message}`);
    }
  }

  /** For health checks: when the agent started, its interval, and its last completed pass (if any). */
  health(): { startedAt: Date; interval: number; lastPass: PassHealth | null; stopped: boolean } {
    return {
      startedAt: this.startedAt,
      interval: this.opts.interval,
      lastPass: this.last ?? null,
      stopped: this.stopped,
    };
  }

  /** A source's read: the Kubernetes source's last one (kept in agent.json) until its first list came. */
  private async read(s: PolicySource): Promise<SourceRead> {
    if (s !== this.kube) return s.read();
    if (!this.kubeSynced) return this.kubeKept ?? { policies: [], errors: [] };
    const r = await s.read();
    const snap = this.kube.snapshot();
    // The time of the read only moves when what it says changed (agent.json is written on a change).
    const same = (a?: KubeSnapshot, b?: KubeSnapshot) =>
      JSON.stringify({ ...a, at: '' }) === JSON.stringify({ ...b, at: '' });
    if (snap && !same(snap, this.kubeLast)) this.kubeLast = snap;
    return r;
  }

  private async reconcileOnce(reason: string, t0: number): Promise<ReconcileResult & { records: OutcomeRecord[] }> {
    const errors: string[] = [];
    const warnings: string[] = [];
    const reads = await Promise.all(this.sources.map((s) => this.read(s)));
    const { policies, gates, errors: readErrors } = mergeSources(reads);
    for (const e of readErrors) {
      if (e.level === 'warn') {
        warnings.push(e.message);
        this.log.warn({ event: 'policy_skipped', reason, source: e.source, file: e.object }, e.message);
        continue;
      }
      errors.push(e.message);
      this.log.error({ event: 'policy_error', reason, source: e.source, file: e.object }, e.message);
    }
    const plan = this.mode.plan({ policies, gates });
    const r = this.mode.apply(plan);
    // The per-file "applied content" fallback is the files source's: pods' outcomes are not its business.
    const byName = new Map(policies.map((p) => [p.name, p]));
    const fromFiles = r.policies.filter((o) => {
      const p = byName.get(o.policy);
      return !p || originOf(p) === 'file';
    });
    this.files.settled(fromFiles);
    this.triggers.update(policies, r.policies);
    for (const n of r.notes) {
      this.say(n);
      if (n.level === 'error') errors.push(n.message);
      if (n.level === 'warn') warnings.push(n.message);
    }
    const applied = r.policies.filter((p) => p.state === 'applied').length;
    const fields = {
      event: 'reconciled',
      mode: this.mode.name,
      reason,
      writes: r.writes,
      deletes: r.deletes,
      policies: applied,
      ms: Date.now() - t0,
    };
    if (r.writes || r.deletes || r.loaded) this.log.info(fields, 'reconciled');
    else this.log.debug(fields, 'in sync');
    return {
      loaded: r.loaded,
      writes: r.writes,
      deletes: r.deletes,
      errors,
      warnings,
      policies: applied,
      outcomes: r.policies,
      records: outcomeRecords(r.policies, byName),
      sourceErrors: readErrors.filter((e) => e.level !== 'warn').length,
    };
  }

  private say(n: Note): void {
    this.log[n.level]({ event: n.event, ...n.fields }, n.message);
  }

  /**
   * Serialises reconciles, at once (no debounce: a new pod's cgroup must get its policy within
   * milliseconds): a trigger while a reconcile runs queues one more after it, and triggers while that one
   * waits join it (every reconcile reads every source, so one covers them all).
   */
  private queue(reason: string): Promise<void> {
    if (this.next) {
      if (this.next.reasons.length < 20) this.next.reasons.push(reason);
      return this.next.done;
    }
    const slot: { reasons: string[]; done: Promise<void> } = { reasons: [reason], done: Promise.resolve() };
    this.next = slot;
    slot.done = this.running = this.running.then(async () => {
      if (this.next === slot) this.next = undefined;
      if (this.stopped) return;
      const why = [...new Set(slot.reasons)].join('; ');
      try {
        await this.reconcile(why);
      } catch (e) {
        this.log.error({ event: 'reconcile_failed', reason: why, err: e }, (e as Error).message);
      }
    });
    return slot.done;
  }

  /**
   * Takes the installation's locks (before anything is pinned), then the first reconcile, then watches.
   * The first reconcile applies the policy files and, with --kubernetes, the pod policies and gates the
   * last run applied (agent.json), so that a restart while the API server is down neither removes a pod's
   * policy nor lets the guard refuse a pod that was classified. The pods are read once their first list
   * has come (start() of the source resolves), which may be long after this returns.
   */
  async start(): Promise<ReconcileResult> {
    const targets = {
      stateDir: this.opts.stateDir,
      bpffs: this.opts.paths.bpffs,
      iptablesState: this.opts.paths.iptablesState ?? DEFAULT_IPTABLES_STATE,
    };
    // Bound first: an address in use fails the start before anything (even a lock directory) is made;
    // when the address is in use because an agent runs on this installation, that agent is named.
    if (this.opts.metricsAddress)
      this.endpoint = await startEndpoint(this.opts.metricsAddress, this, this.log).catch(async (e: Error) => {
        // An agent that has just bound it takes its locks right after: look for a moment.
        for (let i = 0; i < 10; i++) {
          const held = heldBy(targets, this.mode.name);
          if (held) throw new Error(held, { cause: e });
          await new Promise((r) => setTimeout(r, 50));
        }
        throw e;
      });
    try {
      this.locks = AgentLocks.take(targets, this.mode.name);
    } catch (e) {
      await this.endpoint?.close();
      throw e;
    }
    try {
      this.loadState();
      // The programs load (the verifier's ~200 ms) while the policy parser's worker boots.
      this.mode.preload?.();
      const first = await this.reconcile('start');
      await this.files.start((why) => void this.queue(why));
      if (this.kube) this.startKube(this.kube);
      this.timer = setInterval(() => {
        for (const s of this.sources) s.poll?.();
        this.triggers.rearm();
        void this.queue('interval');
      }, this.opts.interval * 1000);
      // What the mode watches between reconciles (a proxy's listener closing or coming back) starts one at once.
      if (this.mode.pulse) {
        this.pulseTimer = setInterval(() => {
          let why: string | null = null;
          try {
            why = this.mode.pulse!();
          } catch (e) {
            this.log.debug({ event: 'pulse_failed', err: e }, (e as Error).message);
          }
          if (why) void this.queue(why);
        }, PULSE_MS);
      }
      return first;
    } catch (e) {
      await this.endpoint?.close();
      this.locks.release();
      throw e;
    }
  }

  private startKube(kube: KubernetesSource): void {
    const kept = this.kubeKept;
    this.log.info(
      { event: 'kubernetes_waiting', kept: kept?.policies.length ?? 0, readAt: this.kubeLast?.at ?? null },
      kept
        ? `waiting for the first list of pods from the API server; until then the ${kept.policies.length} pod policies and the gates last applied (read at ${this.kubeLast?.at}, kept in agent.json) stay in force`
        : 'waiting for the first list of pods from the API server; no pod policies were kept from an earlier run, so none is applied (and no guard) until it comes',
    );
    kube
      .start((why) => void this.queue(why))
      .then(
        () => {
          if (this.stopped) return;
          this.kubeSynced = true;
          this.kubeKept = undefined;
          this.log.info(
            { event: 'kubernetes_synced' },
            'first list of pods and namespaces received; pods are reconciled',
          );
          void this.queue('kubernetes: first list');
        },
        (e: Error) =>
          this.log.error({ event: 'kubernetes_failed', err: e }, `the Kubernetes source failed: ${e.message}`),
      );
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.triggers.close();
    clearInterval(this.pulseTimer);
    for (const s of this.sources) await s.stop();
    // A reconcile in progress finishes first; one that does not within the bound is given up on.
    let timer: NodeJS.Timeout | undefined;
    const finished = await Promise.race([
      this.running.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), STOP_WAIT_MS))),
    ]);
    clearTimeout(timer);
    if (!finished)
      this.log.error(
        { event: 'stop_timeout' },
        `a reconcile still runs after ${STOP_WAIT_MS / 1000} s; stopping without waiting for it`,
      );
    try {
      if (!this.opts.cleanupOnExit) {
        this.log.info(
          { event: 'stopped' },
          `stopped; redirection stays in place (${this.mode.name} mode: what it installed is kept)`,
        );
        return;
      }
      const r = this.mode.cleanup({});
      this.locks?.removeLockFiles();
      const state = removeState(this.opts.stateDir).removed;
      for (const n of r.notes) this.say(n);
      if (r.failed.length)
        this.log.error({ event: 'cleanup_failed', ...r.json }, `cleanup incomplete: ${r.failed.join('; ')}`);
      else if (r.kept.length) this.log.warn({ event: 'cleanup', ...r.json, state }, r.kept.join('; '));
      else this.log.info({ event: 'cleanup', ...r.json, state }, 'removed everything meshredir made');
    } finally {
      this.locks?.release();
    }
  }

  /** Stops serving /metrics and the probes (after stop()). */
  async close(): Promise<void> {
    await this.endpoint?.close();
  }
}

function countStates(outcomes: PolicyOutcome[]): PassHealth['states'] {
  const n = (state: PolicyOutcome['state']) => outcomes.filter((o) => o.state === state).length;
  return { applied: n('applied'), waiting: n('waiting'), rejected: n('rejected'), failed: n('failed') };
}

function outcomeRecords(outcomes: PolicyOutcome[], byName: Map<string, Policy>): OutcomeRecord[] {
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
