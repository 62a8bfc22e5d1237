// agent.ts — the node agent: policy directory (desired state) → reconcile against what is
// loaded and pinned, on start, on every change in the directory (debounced) and periodically.
import { watch, existsSync, type FSWatcher } from 'node:fs';
import { loadPolicyFile, policyFiles, checkSet, formatError, type FileResult } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import { EbpfMode } from '../modes/ebpf/ebpf.js';
import { IptablesMode, type IptablesConfig } from '../modes/iptables/iptables.js';
import { ignoredFields } from '../modes/iptables/rules.js';
import { cgroupId } from '../util/host.js';
import type { Logger } from './log.js';

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
}

export interface ReconcileResult {
  loaded: boolean;
  writes: number;
  deletes: number;
  errors: string[];
  policies: number;
}

export class Agent {
  readonly mode: EbpfMode;
  readonly iptables?: IptablesMode;
  /** Last valid content of each file: an invalid edit keeps what was applied from that file. */
  private lastGood = new Map<string, Policy[]>();
  private expectedProgs = new Map<string, number>();
  private timer?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private watcher?: FSWatcher;
  private running: Promise<void> = Promise.resolve();
  private stopped = false;

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

  /** True when every pinned link is attached at our root with the program we put there. */
  private linksIntact(): boolean {
    if (this.expectedProgs.size === 0) return false;
    const rootId = String(cgroupId(this.opts.cgroupRoot));
    const links = this.mode.links();
    if (links.length !== this.expectedProgs.size) return false;
    return links.every((l) => l.attached && (l.mapId !== undefined || l.cgroupId === rootId) && this.expectedProgs.get(l.name) === l.progId);
  }

  private async readPolicies(): Promise<{ policies: Policy[]; errors: string[] }> {
    // A directory that vanished (unmounted, renamed) is not "no policies": change nothing.
    if (!existsSync(this.opts.policies)) throw new Error(`policy directory ${this.opts.policies} does not exist; nothing was changed`);
    const files = await policyFiles(this.opts.policies);
    const results: FileResult[] = [];
    const errors: string[] = [];
    for (const f of files) {
      const r = await loadPolicyFile(f);
      if (r.errors.length) {
        errors.push(...r.errors.map(formatError));
        const kept = this.lastGood.get(f);
        if (kept) errors.push(`${f}: not applied; keeping its previously applied content (${kept.map((p) => p.name).join(', ') || 'empty'})`);
        results.push({ file: f, policies: kept ?? [], errors: [] });
      } else {
        this.lastGood.set(f, r.policies);
        results.push(r);
      }
    }
    for (const f of [...this.lastGood.keys()]) if (!files.includes(f)) this.lastGood.delete(f);
    const set = checkSet(results);
    errors.push(...set.errors.map(formatError));
    return { policies: set.policies, errors };
  }

  /** One reconcile: make the kernel's state match the directory. Writes nothing when it does. */
  async reconcile(reason: string): Promise<ReconcileResult> {
    const { policies, errors } = await this.readPolicies();
    for (const e of errors) this.log.error({ event: 'policy_error', reason }, e);
    if (this.iptables) {
      const r = this.iptables.apply(policies);
      for (const sk of r.skipped) this.log.error({ event: 'skipped', mode: 'iptables', policy: sk.policy, reason: sk.reason }, `${sk.policy}: not applied in iptables mode: ${sk.reason}`);
      for (const f of r.failed) this.log.error({ event: 'apply_failed', mode: 'iptables', policy: f.policy, netns: f.netns, reason: f.reason }, `${f.policy}: ${f.reason}`);
      for (const rm of r.removed) {
        if (rm.outcome === 'failed') this.log.error({ event: 'remove_failed', mode: 'iptables', ...rm }, rm.detail);
        else this.log.info({ event: 'removed', mode: 'iptables', ...rm }, rm.detail);
      }
      for (const p of policies) for (const n of ignoredFields(p)) this.log.warn({ event: 'ignored', policy: p.name }, `${p.name}: ${n}`);
      const removed = r.removed.filter((x) => x.outcome !== 'failed').length;
      const writes = r.applied.length + removed;
      if (writes || r.stateWritten) this.log.info({ event: 'reconciled', mode: 'iptables', reason, applied: r.applied, removed: r.removed, stateWritten: r.stateWritten }, 'reconciled');
      else this.log.debug({ event: 'reconciled', mode: 'iptables', reason, writes: 0 }, 'in sync');
      errors.push(...r.failed.map((f) => `${f.policy}: ${f.reason}`), ...r.removed.filter((x) => x.outcome === 'failed').map((x) => x.detail));
      return { loaded: false, writes, deletes: removed, errors, policies: policies.length };
    }
    let loaded = false;
    if (!this.linksIntact()) {
      const rep = this.mode.ensureLoaded();
      loaded = true;
      this.expectedProgs = new Map(this.mode.links().map((l) => [l.name, l.progId ?? -1]));
      this.log.info({ event: 'loaded', reason, ...rep }, 'programs loaded and attached');
      for (const [prog, why] of Object.entries(rep.unavailable)) {
        this.log.warn({ event: 'unavailable', program: prog }, `${prog} not attached (${why}): policies with accelerate use the normal path`);
      }
    }
    const r = this.mode.applyPolicies(policies);
    if (this.mode.syncPending()) this.log.warn({ event: 'drift', map: 'mr_gauges' }, 'the pending-record gauge disagreed with mr_orig (records removed from outside?); corrected');
    for (const p of r.policies) {
      if (!p.resolved) this.log.warn({ event: 'unresolved', policy: p.name, cgroup: p.cgroup }, `cgroup ${p.cgroup} does not exist yet; policy ${p.name} waits for it`);
      for (const b of p.unresolvedBypass) this.log.warn({ event: 'unresolved_bypass', policy: p.name, cgroup: b }, `bypass cgroup ${b} of ${p.name} does not exist`);
      if (p.resolved && policies.find((x) => x.name === p.name)?.proxy.inbound) {
        this.log.warn({ event: 'unsupported', policy: p.name, field: 'spec.proxy.inbound' }, `${p.name}: spec.proxy.inbound is not supported by the eBPF mode yet (inbound interception needs sk_lookup); inbound traffic is not redirected`);
      }
    }
    if (r.writes || r.deletes || loaded) this.log.info({ event: 'reconciled', reason, writes: r.writes, deletes: r.deletes, policies: policies.length }, 'reconciled');
    else this.log.debug({ event: 'reconciled', reason, writes: 0, deletes: 0 }, 'in sync');
    return { loaded, writes: r.writes, deletes: r.deletes, errors, policies: policies.length };
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
    const first = await this.reconcile('start');
    if (existsSync(this.opts.policies)) {
      this.watcher = watch(this.opts.policies, () => {
        clearTimeout(this.debounce);
        this.debounce = setTimeout(() => void this.queue('policy change'), 200);
      });
    }
    this.timer = setInterval(() => void this.queue('interval'), this.opts.interval * 1000);
    return first;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    this.watcher?.close();
    await this.running;
    if (this.opts.cleanupOnExit && this.iptables) {
      const done = this.iptables.cleanup();
      const failed = done.filter((d) => d.outcome === 'failed');
      if (failed.length) this.log.error({ event: 'cleanup_failed', netns: failed }, `could not remove MESHREDIR chains from ${failed.length} network namespace(s): ${failed.map((f) => f.detail).join('; ')}`);
      else this.log.info({ event: 'cleanup', netns: done }, 'removed every MESHREDIR chain');
    } else if (this.opts.cleanupOnExit) {
      const r = this.mode.cleanup();
      if (r.kept.length) this.log.warn({ event: 'cleanup', ...r }, `removed everything but the fast path, kept for ${r.openAccelerated} socket(s) of open accelerated connections; run meshredir cleanup once they have closed`);
      else this.log.info({ event: 'cleanup', ...r }, 'removed everything meshredir made');
    } else {
      this.log.info({ event: 'stopped' }, 'stopped; redirection stays in place (pins kept)');
    }
  }
}
