// kube-driver.ts — drives a policy source and the eBPF mode in-process the way the agent does (read() then
// apply(plan({ policies, gates })) on every changed(), serialised, a change during a pass running another
// pass after it), and records when each pod cgroup's policy first reached the maps (the real agent, as a
// process, is driven by kubernetes-agent.kernel.test.ts).
import type { ApplyResult, Mode } from '../../src/modes/mode.js';
import type { PolicySource, SourceError } from '../../src/sources/source.js';

export class AgentLike {
  /** Pod cgroup (policy path) → CLOCK_MONOTONIC ns when an apply first wrote its resolved policy. */
  readonly applied = new Map<string, bigint>();
  readonly reports: ApplyResult[] = [];
  /** How long each pass's read() and plan + apply took. */
  readonly timings: { readMs: number; applyMs: number }[] = [];
  errors: SourceError[] = [];
  reasons: string[] = [];
  private failure?: Error;

  constructor(
    readonly mode: Mode,
    readonly source: PolicySource,
  ) {}

  /** Like the agent: nothing is applied before the source's first view is complete (start() resolved),
   * or a restarted agent would first remove every pod's policy. */
  async start(): Promise<ApplyResult> {
    await this.source.start((reason) => this.kick(reason));
    this.ready = true;
    let first!: ApplyResult;
    await this.serial(async () => {
      first = await this.pass();
    });
    return first;
  }
  private ready = false;
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  /** Passes run one at a time, in order (a read applied after a newer one would undo it). */
  private serial(f: () => Promise<void>): Promise<void> {
    this.pending++;
    this.chain = this.chain
      .then(f)
      .catch((e: Error) => {
        this.failure = e;
      })
      .finally(() => this.pending--);
    return this.chain;
  }

  private kick(reason: string): void {
    this.reasons.push(reason);
    if (!this.ready) return; // the first pass, after start(), covers it
    // One queued pass covers every change before it starts.
    if (this.queued) return;
    this.queued = true;
    void this.serial(async () => {
      this.queued = false;
      await this.pass();
    });
  }
  private queued = false;

  /** One pass: what the agent's reconcile does with a source. */
  async pass(): Promise<ApplyResult> {
    const t0 = process.hrtime.bigint();
    const r = await this.source.read();
    const t1 = process.hrtime.bigint();
    const rep = this.mode.apply(this.mode.plan({ policies: r.policies, ...(r.gates ? { gates: r.gates } : {}) }));
    const t = process.hrtime.bigint();
    this.timings.push({ readMs: Number(t1 - t0) / 1e6, applyMs: Number(t - t1) / 1e6 });
    const cgroupOf = new Map(r.policies.map((p) => [p.name, p.cgroup]));
    for (const o of rep.policies) {
      const cg = cgroupOf.get(o.policy);
      if (o.state === 'applied' && cg && !this.applied.has(cg)) this.applied.set(cg, t);
    }
    this.errors = r.errors;
    this.reports.push(rep);
    return rep;
  }

  /** Waits until no pass is running or pending. */
  async settle(): Promise<void> {
    while (this.pending > 0) await this.chain;
    if (this.failure) throw this.failure;
  }

  async stop(): Promise<void> {
    await this.source.stop();
    await this.settle();
  }
}
