// agent.ts — the node agent: policy directory (desired state) → reconcile against what is
// loaded and pinned, on start, on every change in the directory (debounced) and periodically.
import { watch, existsSync, renameSync, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import {
  loadPolicyFile,
  parsePolicyText,
  policyFiles,
  checkSet,
  formatError,
  type FileResult,
} from '../policy/load.js';
import { readState, writeState, removeState, statePath, type AgentState, type ReconcileRecord } from './state.js';
import type { Policy } from '../policy/schema.js';
import { EbpfMode } from '../modes/ebpf/ebpf.js';
import { IptablesMode, type IptablesConfig } from '../modes/iptables/iptables.js';
import { ignoredFields } from '../modes/iptables/rules.js';
import { cgroupId, cgroupPathOf } from '../util/host.js';
import { outsideRoot } from '../policy/scope.js';
import type { Logger } from './log.js';

export interface ModeDecision {
  requested: 'auto' | 'ebpf' | 'iptables';
  chosen: 'ebpf' | 'iptables';
  reason: string;
  /** The probe's verdicts (auto mode). */
  probe?: { kernel: string; libbpf: string; features: Record<string, boolean>; why: Record<string, string> };
}

export interface AgentOptions {
  policies: string;
  /** cgroup directory where the programs attach (absolute path under the cgroup2 mount). */
  cgroupRoot: string;
  bpffs: string;
  object: string;
  /** Seconds between periodic reconciles. */
  interval: number;
  cleanupOnExit: boolean;
  maxConnections?: number;
  maxAccelerated?: number;
  mode: 'ebpf' | 'iptables';
  iptables?: IptablesConfig;
  /** Where agent.json lives (mode decision, last applied policies, last reconcile). */
  stateDir: string;
  /** How the mode was chosen (persisted for `status`). */
  decision?: ModeDecision;
}

export interface ReconcileResult {
  loaded: boolean;
  writes: number;
  deletes: number;
  errors: string[];
  warnings: string[];
  policies: number;
}

/** What was applied from one policy file: its text and the policies of it that are in force. */
interface Applied {
  text: string;
  policies: Policy[];
}

export class Agent {
  readonly mode: EbpfMode;
  readonly iptables?: IptablesMode;
  /**
   * Per file, the content in force: an invalid or conflicting edit keeps it. Persisted in agent.json
   * (and read back on start), so a restart does not lose a policy whose file turned bad meanwhile.
   */
  private applied = new Map<string, Applied>();
  private state?: AgentState;
  private expectedProgs = new Map<string, number>();
  private expectedMaps = new Map<string, number | undefined>();
  private timer?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private watcher?: FSWatcher;
  private parentWatcher?: FSWatcher;
  private watchedIno?: bigint;
  private rearm?: NodeJS.Timeout;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;
  private lastDrift = 0n;

  constructor(
    readonly opts: AgentOptions,
    private readonly log: Logger,
  ) {
    this.mode = new EbpfMode({
      bpffs: opts.bpffs,
      cgroupRoot: opts.cgroupRoot,
      object: opts.object,
      ...(opts.maxConnections ? { maxConnections: opts.maxConnections } : {}),
      ...(opts.maxAccelerated ? { maxAccelerated: opts.maxAccelerated } : {}),
    });
    if (opts.mode === 'iptables') this.iptables = new IptablesMode(opts.iptables!);
  }

  private get modeName(): 'ebpf' | 'iptables' {
    return this.iptables ? 'iptables' : 'ebpf';
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
    for (const [file, a] of Object.entries(old?.applied ?? {})) {
      const r = parsePolicyText(a.text, file);
      if (r.errors.length) {
        this.log.warn(
          { event: 'state_dropped', file },
          `${file}: the remembered applied content no longer validates; forgotten (${r.errors.map(formatError).join('; ')})`,
        );
        continue;
      }
      this.applied.set(file, { text: a.text, policies: r.policies.filter((p) => a.policies.includes(p.name)) });
    }
    const d = this.opts.decision ?? {
      requested: this.opts.mode,
      chosen: this.opts.mode,
      reason: `--mode ${this.opts.mode} given`,
    };
    this.state = {
      version: 1,
      mode: { requested: d.requested, chosen: d.chosen, reason: d.reason, at: new Date().toISOString() },
      ...(d.probe ? { probe: d.probe } : {}),
      agent: {
        pid: process.pid,
        policies: resolve(this.opts.policies),
        cgroupRoot: this.opts.cgroupRoot,
        bpffs: this.opts.bpffs,
        ...(this.opts.iptables ? { iptablesState: this.opts.iptables.stateFile } : {}),
        startedAt: new Date().toISOString(),
      },
      applied: Object.fromEntries(
        [...this.applied].map(([f, a]) => [f, { text: a.text, policies: a.policies.map((p) => p.name) }]),
      ),
      ...(old?.lastReconcile ? { lastReconcile: old.lastReconcile } : {}),
    };
    writeState(this.opts.stateDir, this.state);
  }

  /** Records a reconcile's outcome; writes agent.json only when something but the time changed. */
  private record(rec: ReconcileRecord): void {
    if (!this.state) return;
    const next: AgentState = {
      ...this.state,
      applied: Object.fromEntries(
        [...this.applied].map(([f, a]) => [f, { text: a.text, policies: a.policies.map((p) => p.name) }]),
      ),
      lastReconcile: rec,
    };
    const same = (s: AgentState) =>
      JSON.stringify({ ...s, lastReconcile: s.lastReconcile ? { ...s.lastReconcile, at: '', reason: '' } : undefined });
    if (same(next) === same(this.state)) return;
    this.state = next;
    writeState(this.opts.stateDir, next);
  }

  /**
   * True when every pinned link is attached at our root with the program we put there, and every map
   * pin is there and is the map we loaded with (a deleted or replaced map pin needs ensureLoaded: the
   * policy maps are written through their pins).
   */
  private installIntact(): boolean {
    if (this.expectedProgs.size === 0) return false;
    const rootId = String(cgroupId(this.opts.cgroupRoot));
    const links = this.mode.links();
    if (links.length !== this.expectedProgs.size) return false;
    if (
      !links.every(
        (l) =>
          l.attached && (l.mapId !== undefined || l.cgroupId === rootId) && this.expectedProgs.get(l.name) === l.progId,
      )
    )
      return false;
    const maps = this.mode.pinnedMapIds();
    return [...this.expectedMaps].every(([name, id]) => id !== undefined && maps.get(name) === id);
  }

  /**
   * The directory as desired state. A file that is invalid, or whose policies lose a conflict, is
   * replaced by the content applied from it before (if any); conflicts are settled in favour of what
   * is applied (checkSet), so bad input never takes down a working policy.
   */
  private async readPolicies(): Promise<{ policies: Policy[]; errors: string[]; used: Map<string, Applied> }> {
    // A directory that vanished (unmounted, renamed) is not "no policies": change nothing.
    if (!existsSync(this.opts.policies))
      throw new Error(`policy directory ${this.opts.policies} does not exist; nothing was changed`);
    const files = await policyFiles(this.opts.policies);
    const results = new Map<string, FileResult>();
    const texts = new Map<string, string>();
    const kept = new Set<string>();
    const errors: string[] = [];
    const keep = (f: string, why: string) => {
      const prev = this.applied.get(f)!;
      results.set(f, { file: f, policies: prev.policies, errors: [] });
      texts.set(f, prev.text);
      kept.add(f);
      errors.push(
        `${f}: not applied${why}; keeping its previously applied content (${prev.policies.map((p) => p.name).join(', ') || 'empty'})`,
      );
    };
    for (const f of files) {
      const r = await loadPolicyFile(f);
      if (r.errors.length) {
        errors.push(...r.errors.map(formatError));
        if (this.applied.has(f)) keep(f, '');
      } else {
        results.set(f, r);
        texts.set(f, r.text ?? '');
      }
    }
    const incumbents = [...this.applied.values()].flatMap((a) => a.policies);
    const seen = new Set<string>();
    for (;;) {
      const set = checkSet([...results.values()], incumbents);
      for (const e of set.errors.map(formatError)) {
        if (seen.has(e)) continue;
        seen.add(e);
        errors.push(e);
      }
      const back = [...new Set(set.rejected.map((p) => p.file))].filter((f) => !kept.has(f) && this.applied.has(f));
      if (back.length === 0) {
        const used = new Map(
          [...results.keys()].map((f) => [
            f,
            { text: texts.get(f)!, policies: set.policies.filter((p) => p.file === f) },
          ]),
        );
        return { policies: set.policies, errors, used };
      }
      for (const f of back) keep(f, ' (it conflicts with an applied policy)');
    }
  }

  /** One reconcile: make the kernel's state match the directory. Writes nothing when it does. */
  async reconcile(reason: string): Promise<ReconcileResult> {
    const warnings: string[] = [];
    try {
      const r = await this.reconcileOnce(reason, warnings);
      this.record({
        at: new Date().toISOString(),
        reason,
        ok: true,
        mode: this.modeName,
        writes: r.writes,
        deletes: r.deletes,
        policies: r.policies,
        errors: r.errors,
        warnings,
      });
      return r;
    } catch (e) {
      this.record({
        at: new Date().toISOString(),
        reason,
        ok: false,
        mode: this.modeName,
        writes: 0,
        deletes: 0,
        policies: 0,
        errors: [(e as Error).message],
        warnings,
      });
      throw e;
    }
  }

  private async reconcileOnce(reason: string, warnings: string[]): Promise<ReconcileResult> {
    const warn = (fields: Record<string, unknown>, msg: string) => {
      warnings.push(msg);
      this.log.warn(fields, msg);
    };
    const { policies, errors, used } = await this.readPolicies();
    for (const e of errors) this.log.error({ event: 'policy_error', reason }, e);
    if (this.iptables) {
      const r = this.iptables.apply(policies);
      this.applied = used;
      for (const sk of r.skipped) {
        const msg = `${sk.policy}: not applied in iptables mode: ${sk.reason}`;
        errors.push(msg);
        this.log.error({ event: 'skipped', mode: 'iptables', policy: sk.policy, reason: sk.reason }, msg);
      }
      for (const f of r.failed)
        this.log.error(
          { event: 'apply_failed', mode: 'iptables', policy: f.policy, netns: f.netns, reason: f.reason },
          `${f.policy}: ${f.reason}`,
        );
      for (const rm of r.removed) {
        if (rm.outcome === 'failed') this.log.error({ event: 'remove_failed', mode: 'iptables', ...rm }, rm.detail);
        else this.log.info({ event: 'removed', mode: 'iptables', ...rm }, rm.detail);
      }
      for (const p of policies)
        for (const n of ignoredFields(p)) warn({ event: 'ignored', policy: p.name }, `${p.name}: ${n}`);
      const removed = r.removed.filter((x) => x.outcome !== 'failed').length;
      const writes = r.applied.length + removed;
      if (writes || r.stateWritten)
        this.log.info(
          {
            event: 'reconciled',
            mode: 'iptables',
            reason,
            applied: r.applied,
            removed: r.removed,
            stateWritten: r.stateWritten,
          },
          'reconciled',
        );
      else this.log.debug({ event: 'reconciled', mode: 'iptables', reason, writes: 0 }, 'in sync');
      errors.push(
        ...r.failed.map((f) => `${f.policy}: ${f.reason}`),
        ...r.removed.filter((x) => x.outcome === 'failed').map((x) => x.detail),
      );
      return { loaded: false, writes, deletes: removed, errors, warnings, policies: policies.length };
    }
    let loaded = false;
    if (!this.installIntact()) {
      const rep = this.mode.ensureLoaded();
      loaded = true;
      this.expectedProgs = new Map(this.mode.links().map((l) => [l.name, l.progId ?? -1]));
      this.expectedMaps = this.mode.pinnedMapIds();
      if (rep.repinnedMaps.length)
        warn(
          { event: 'repinned', maps: rep.repinnedMaps },
          `map pins ${rep.repinnedMaps.join(', ')} had been deleted; pinned again from the maps the attached programs use (contents kept)`,
        );
      for (const [prog, why] of Object.entries(rep.rebound))
        warn(
          { event: 'rebound', program: prog },
          `${prog} used other maps than the pinned ones (${why}); its link now runs the program on the pinned maps`,
        );
      this.log.info({ event: 'loaded', reason, ...rep }, 'programs loaded and attached');
      for (const [prog, why] of Object.entries(rep.unavailable)) {
        warn(
          { event: 'unavailable', program: prog },
          `${prog} not attached (${why}): policies with accelerate use the normal path`,
        );
      }
    }
    for (const o of outsideRoot(policies, cgroupPathOf(this.opts.cgroupRoot)))
      warn({ event: 'outside_root', policy: o.policy, field: o.field, cgroup: o.cgroup }, o.message);
    const r = this.mode.applyPolicies(policies);
    const drift = this.mode.pendingDrift();
    // Records come and go between the two reads: only a gap seen twice in a row is reported.
    if (drift.gauge !== BigInt(drift.records) && this.lastDrift === drift.gauge - BigInt(drift.records)) {
      this.log.error(
        { event: 'drift', map: 'mr_gauges', gauge: String(drift.gauge), records: drift.records },
        `the count of handshakes in flight (${drift.gauge}) disagrees with the records in mr_orig (${drift.records}): records were deleted from outside; connects are refused past --max-connections by that count until 'meshredir cleanup' and a restart`,
      );
    }
    this.lastDrift = drift.gauge - BigInt(drift.records);
    for (const x of r.rejected) {
      errors.push(x.message);
      this.log.error({ event: 'policy_error', reason, policy: x.name }, x.message);
      const u = used.get(x.file);
      if (u) used.set(x.file, { ...u, policies: u.policies.filter((p) => p.name !== x.name) });
    }
    this.applied = used;
    for (const p of r.policies) {
      if (!p.resolved)
        warn(
          { event: 'unresolved', policy: p.name, cgroup: p.cgroup },
          `cgroup ${p.cgroup} does not exist yet; policy ${p.name} waits for it`,
        );
      for (const b of p.unresolvedBypass)
        warn(
          { event: 'unresolved_bypass', policy: p.name, cgroup: b },
          `bypass cgroup ${b} of ${p.name} does not exist`,
        );
      if (p.resolved && policies.find((x) => x.name === p.name)?.proxy.inbound) {
        warn(
          { event: 'unsupported', policy: p.name, field: 'spec.proxy.inbound' },
          `${p.name}: spec.proxy.inbound is not supported by the eBPF mode yet (inbound interception needs sk_lookup); inbound traffic is not redirected`,
        );
      }
    }
    if (r.writes || r.deletes || loaded)
      this.log.info(
        { event: 'reconciled', reason, writes: r.writes, deletes: r.deletes, policies: r.policies.length },
        'reconciled',
      );
    else this.log.debug({ event: 'reconciled', reason, writes: 0, deletes: 0 }, 'in sync');
    return { loaded, writes: r.writes, deletes: r.deletes, errors, warnings, policies: r.policies.length };
  }

  /** Serialises reconciles: a change during a reconcile runs another one after it. */
  private queue(reason: string): Promise<void> {
    this.running = this.running.then(async () => {
      if (this.stopped) return;
      try {
        await this.reconcile(reason);
      } catch (e) {
        this.log.error({ event: 'reconcile_failed', reason, err: e }, (e as Error).message);
      }
    });
    return this.running;
  }

  async start(): Promise<ReconcileResult> {
    this.loadState();
    const first = await this.reconcile('start');
    this.arm();
    if (process.env.MESHREDIR_FAULT === 'watch-error')
      setTimeout(
        () => this.watcher?.emit('error', new Error('injected watch error (MESHREDIR_FAULT=watch-error)')),
        300,
      );
    this.timer = setInterval(() => {
      this.checkWatch();
      void this.queue('interval');
    }, this.opts.interval * 1000);
    return first;
  }

  /**
   * Watches the policy directory, and its parent for the directory's own name: fs.watch follows the
   * inode, so a directory that is replaced (moved away and another moved in, a symlink swapped) would
   * otherwise go unwatched. A directory that is missing is polled for until it appears.
   */
  private arm(): void {
    this.disarm();
    if (this.stopped) return;
    const dir = resolve(this.opts.policies);
    try {
      this.parentWatcher = watch(dirname(dir), (_event, name) => {
        if (name === basename(dir)) this.changed('policy directory replaced');
      });
      this.parentWatcher.on('error', (e) => this.watchFailed(e));
    } catch (e) {
      this.log.warn(
        { event: 'watch_error', dir: dirname(dir) },
        `cannot watch ${dirname(dir)} for ${dir} being replaced: ${(e as Error).message}`,
      );
    }
    try {
      this.watchedIno = statSync(dir, { bigint: true }).ino;
      this.watcher = watch(dir, () => this.changed('policy change'));
      this.watcher.on('error', (e) => this.watchFailed(e));
    } catch (e) {
      this.watchedIno = undefined;
      this.log.warn(
        { event: 'watch_error', dir },
        `cannot watch ${dir}: ${(e as Error).message}; looking again every second`,
      );
      this.rearm = setTimeout(() => {
        this.arm();
        if (this.watcher) this.changed('policy directory appeared');
      }, 1000);
    }
  }

  private disarm(): void {
    clearTimeout(this.rearm);
    this.watcher?.close();
    this.parentWatcher?.close();
    this.watcher = undefined;
    this.parentWatcher = undefined;
  }

  /** A watcher failed (its directory went away, the kernel ran out of watches, …): say so, watch again. */
  private watchFailed(e: Error): void {
    this.log.error(
      { event: 'watch_error', err: e },
      `watching ${this.opts.policies} failed: ${e.message}; watching it again`,
    );
    this.disarm();
    clearTimeout(this.rearm);
    this.rearm = setTimeout(() => {
      this.arm();
      if (this.watcher)
        this.log.info({ event: 'watch', dir: this.opts.policies }, `watching ${this.opts.policies} again`);
      this.changed('policy directory watched again');
    }, 1000);
  }

  /** Re-arms the watch when the directory is no longer the one watched (replaced, or re-created). */
  private checkWatch(): void {
    if (this.stopped) return;
    let ino: bigint | undefined;
    try {
      ino = statSync(this.opts.policies, { bigint: true }).ino;
    } catch {
      ino = undefined;
    }
    if (ino !== undefined && (!this.watcher || ino !== this.watchedIno)) {
      this.log.info(
        { event: 'watch', dir: this.opts.policies },
        `${this.opts.policies} was replaced; watching the new directory`,
      );
      this.arm();
    }
  }

  /** A change in or of the directory: reconcile once things settle (debounced). */
  private changed(reason: string): void {
    if (this.stopped) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.checkWatch();
      void this.queue(reason);
    }, 200);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    this.disarm();
    await this.running;
    if (this.opts.cleanupOnExit && this.iptables) {
      const done = this.iptables.cleanup();
      const failed = done.filter((d) => d.outcome === 'failed');
      const state = removeState(this.opts.stateDir).removed;
      if (failed.length)
        this.log.error(
          { event: 'cleanup_failed', netns: failed },
          `could not remove MESHREDIR chains from ${failed.length} network namespace(s): ${failed.map((f) => f.detail).join('; ')}`,
        );
      else this.log.info({ event: 'cleanup', netns: done, state }, 'removed every MESHREDIR chain');
    } else if (this.opts.cleanupOnExit) {
      const r = this.mode.cleanup();
      const state = removeState(this.opts.stateDir).removed;
      if (r.kept.length)
        this.log.warn(
          { event: 'cleanup', ...r, state },
          `removed everything but the kTLS guard and the maps of ${r.openAccelerated} socket(s) still on the fast path (kept until they close); run meshredir cleanup once they have closed`,
        );
      else this.log.info({ event: 'cleanup', ...r, state }, 'removed everything meshredir made');
    } else {
      this.log.info({ event: 'stopped' }, 'stopped; redirection stays in place (pins kept)');
    }
  }
}
