// agent.ts — the node agent: its sources of policies (the policy directory, and with --kubernetes the pods
// of this node) merged into one desired state → the mode's plan → apply, on start, whenever a source or a
// policy's cgroup changes, and periodically; one reconcile at a time, every one reading every source. It
// runs alone on its installation (startup.ts, lock.ts), beats a heartbeat after every completed pass and
// keeps agent.json (record.ts). The Kubernetes source is read through kube-keep.ts (what the last run
// applied, until the first list); the mode's pulse (pulse.ts) asks for a reconcile between the periodic ones.
import type { Mode, Note, PolicyOutcome } from '../modes/mode.js';
import type { PolicySource } from '../sources/source.js';
import { FileSource } from '../sources/files.js';
import type { KubernetesSource } from '../sources/kubernetes/source.js';
import { requireCgroup2 } from '../util/host.js';
import type { Logger } from '../util/log.js';
import { CgroupTriggers } from './cgroup-triggers.js';
import { mergeSources, originOf } from './merge.js';
import { removeState, type OutcomeRecord } from './state.js';
import type { AgentLocks } from './lock.js';
import type { ListenAddress } from './http.js';
import { startEndpoint, type AgentEndpoint } from './endpoint.js';
import { lockTargets, takeInstallation } from './startup.js';
import { KeptKubernetes } from './kube-keep.js';
import { AgentRecord, outcomeRecords } from './record.js';
import type { ModeDecision } from './decide.js';
import { countStates, type PassHealth } from './health.js';
import { startPulse } from './pulse.js';

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

/** How long stop() waits for a reconcile in progress before it gives up on it. */
const STOP_WAIT_MS = 30_000;

export class Agent {
  readonly files: FileSource;
  private readonly sources: PolicySource[];
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
  /** The Kubernetes source, read from what agent.json kept until its first list has come. */
  private readonly kubeKept?: KeptKubernetes;
  /** agent.json: what the last run applied, this run's decision, the last pass. */
  private readonly rec: AgentRecord;

  constructor(
    readonly opts: AgentOptions,
    readonly mode: Mode,
    private readonly log: Logger,
    /** The pods of this node as a source (--kubernetes), made by the caller (it loads client-node). */
    readonly kube?: KubernetesSource,
  ) {
    this.files = new FileSource(opts.policies, log);
    this.kubeKept = kube && new KeptKubernetes(kube, log, () => this.stopped);
    this.sources = this.kubeKept ? [this.files, this.kubeKept] : [this.files];
    this.rec = new AgentRecord(opts.stateDir, log, this.files, this.kubeKept);
    this.triggers = new CgroupTriggers(requireCgroup2(), (why) => void this.queue(why), log);
  }

  /** One reconcile: make the kernel's state match the sources. Writes nothing when it does. */
  async reconcile(reason: string): Promise<ReconcileResult> {
    const t0 = Date.now();
    const base = { at: new Date().toISOString(), reason, mode: this.mode.name };
    try {
      const r = await this.reconcileOnce(reason, t0);
      const notApplied = r.outcomes.filter((o) => o.state !== 'applied');
      this.rec.record(
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
      this.rec.record({
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

  private async reconcileOnce(reason: string, t0: number): Promise<ReconcileResult & { records: OutcomeRecord[] }> {
    const errors: string[] = [];
    const warnings: string[] = [];
    const reads = await Promise.all(this.sources.map((s) => s.read()));
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
        // What the mode installed changed under this reconcile: the next one repairs it, so it runs now.
        const changed = this.mode.changedUnder?.(e);
        if (!changed)
          return void this.log.error({ event: 'reconcile_failed', reason: why, err: e }, (e as Error).message);
        this.log.warn({ event: 'reconcile_again', reason: why }, `${changed} during the reconcile: reconciling again`);
        await this.reconcile(`${why}; again: ${changed}`).catch((e2: unknown) =>
          this.log.error({ event: 'reconcile_failed', reason: why, err: e2 }, (e2 as Error).message),
        );
      }
    });
    return slot.done;
  }

  /**
   * Takes the installation (its locks and metrics address, before anything is pinned), then the first
   * reconcile, then watches.
   * The first reconcile applies the policy files and, with --kubernetes, the pod policies and gates the
   * last run applied (agent.json), so that a restart while the API server is down neither removes a pod's
   * policy nor lets the guard refuse a pod that was classified. The pods are read once their first list
   * has come (start() of the source resolves), which may be long after this returns.
   */
  async start(): Promise<ReconcileResult> {
    // The state lock, the metrics address, the mode's lock (startup.ts); a failure there leaves nothing.
    const at = this.opts.metricsAddress;
    const taken = await takeInstallation(
      lockTargets(this.opts.stateDir, this.opts.paths),
      this.mode.name,
      at && (() => startEndpoint(at, this, this.log)),
    );
    this.locks = taken.locks;
    this.endpoint = taken.endpoint;
    try {
      this.rec.load({
        decision: this.opts.decision,
        policies: this.opts.policies,
        paths: this.opts.paths,
        startedAt: this.startedAt,
        interval: this.opts.interval,
      });
      // The programs load (the verifier's ~200 ms) while the policy parser's worker boots.
      this.mode.preload?.();
      const first = await this.reconcile('start');
      await this.files.start((why) => void this.queue(why));
      await this.kubeKept?.start((why) => void this.queue(why));
      this.timer = setInterval(() => {
        for (const s of this.sources) s.poll?.();
        this.triggers.rearm();
        void this.queue('interval');
      }, this.opts.interval * 1000);
      this.pulseTimer = startPulse(this.mode, (why) => void this.queue(why), this.log);
      return first;
    } catch (e) {
      await this.endpoint?.close();
      taken.locks.release();
      throw e;
    }
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
