// index.ts — the eBPF mode: meshredir.bpf.o loaded (or re-adopted) with its maps and links pinned under
// the bpffs directory, policy maps written by difference, status from the pins, verify by a throwaway
// process, cleanup that keeps what open fast-path sockets still use. Outbound is the base; each further
// traffic feature is a part (part.ts) called at every step, in order: inbound (sk_lookup), DNS capture,
// the fast path's kTLS guard (mr_setsockopt) and DNS capture's sock_release (mr_dns_release), each attached
// only while needed.
import { BpfError } from '../../bpf/errors.js';
import type { Policy } from '../../policy/schema.js';
import { outsideRoot } from '../../policy/scope.js';
import { cgroupId, cgroupPathOf } from '../../util/host.js';
import type {
  ApplyResult,
  AttachConfig,
  CleanupReport,
  DesiredState,
  Gates,
  Mode,
  ModeConfig,
  Note,
  Plan,
  VerifyRequest,
} from '../mode.js';
import { Pins } from './pins.js';
import { load, type LoadReport } from './load.js';
import { capacities, desiredState, gatesJson, type Desired } from './desired.js';
import { writeEntries, type WriteReport } from './write.js';
import { capacitiesOf, loadNotes, outcomes, writeNotes } from './notes.js';
import { DriftWatch, fastPath, resetReassigned } from './counters.js';
import { Expected } from './expected.js';
import { ebpfStatus } from './status.js';
import { ebpfVerify } from './verify.js';
import { cleanupPins, cleanupReport } from './cleanup.js';
import { InboundPart } from './inbound.js';
import { DnsPart } from './dns.js';
import { UlpGuardPart } from './ulp-guard.js';
import { ReleasePart } from './release.js';
import type { EbpfPart } from './part.js';
import { ebpfMetrics, ebpfReadiness } from './metrics.js';
import { clearLapsedLease } from './trace.js';
import { isolationNotes, pendingBudget } from './records.js';

interface EbpfPlan extends Plan {
  readonly desired: Desired;
  /** Each part's plan, in the order of `parts`. */
  readonly parts: unknown[];
}

export class EbpfMode implements Mode {
  readonly name = 'ebpf' as const;
  readonly pins: Pins;
  /** What the last load attached and pinned. */
  private readonly expected: Expected;
  /** The handshakes-in-flight gauge against the records. */
  private readonly drift = new DriftWatch();
  /** The version of each policy this process wrote last: kept when a new version does not fit. */
  private previous = new Map<string, Policy>();
  /** Per map, the fingerprint of what the last clean apply wrote: a difference found while it is
   * unchanged was made by someone else. */
  private lastWritten?: WriteReport['maps'];
  /** What a preload() said, for the next apply to report. */
  private readonly preloaded: Note[] = [];
  private preloadFailure?: { error: unknown };
  readonly inbound: InboundPart;
  readonly dns: DnsPart;
  readonly guard: UlpGuardPart;
  readonly release: ReleasePart;
  /** The traffic features beside the outbound base, called in this order at every step. */
  private readonly parts: EbpfPart<unknown>[];

  constructor(readonly cfg: Pick<ModeConfig, 'bpffs' | 'attach'>) {
    this.pins = new Pins(cfg.bpffs);
    this.inbound = new InboundPart(this.pins);
    this.dns = new DnsPart(this.pins, () => this.release.attachRefused());
    this.guard = new UlpGuardPart(this.pins, () => this.attach.cgroupRoot);
    this.release = new ReleasePart(this.pins, () => this.attach.cgroupRoot);
    this.expected = new Expected(this.pins, () => this.attach.cgroupRoot);
    this.parts = [this.inbound, this.dns, this.guard, this.release] as EbpfPart<unknown>[];
  }

  /** Where to attach and what to load: only plan and apply need it. */
  private get attach(): AttachConfig {
    if (!this.cfg.attach) throw new Error('the eBPF mode needs a cgroup root and an object to plan or apply');
    return this.cfg.attach;
  }

  installed(): boolean {
    return this.pins.installed();
  }

  /** The desired state with what the kernel offers now (the fast path is assumed before the first load). */
  private desired(policies: Policy[], gates: Gates): Desired {
    return desiredState(this.pins, policies, {
      fastPath: !this.pins.has('mr_slots') || fastPath(this.pins).usable,
      capacities: capacities(this.pins, this.cfg.attach?.object),
      previous: this.previous,
      gates,
      pendingMax: pendingBudget(this.cfg.attach ?? {}),
    });
  }

  plan({ policies, gates: g }: DesiredState): EbpfPlan {
    const gates = { guard: g?.guard ?? [], pass: g?.pass ?? [] };
    const desired = this.desired(policies, gates);
    const parts = this.parts.map((x) => x.plan(desired, policies));
    const outside = outsideRoot(policies, cgroupPathOf(this.attach.cgroupRoot));
    const notes: Note[] = outside.map((o) => ({
      level: 'warn',
      event: 'outside_root',
      message: o.message,
      fields: { policy: o.policy, field: o.field, cgroup: o.cgroup },
    }));
    return {
      mode: 'ebpf',
      input: policies,
      gates,
      desired,
      policies: outcomes(policies, desired, new Map()),
      notes,
      parts,
      render: () => {
        const rendered = this.parts.map((x, i) => ({ name: x.name, ...x.render(parts[i]) }));
        return {
          json: {
            mode: 'ebpf',
            slots:
              desired.slotsFrom === 'pins'
                ? `kept from the pinned mr_slots under ${this.cfg.bpffs}`
                : 'assigned anew (nothing pinned)',
            unresolved: desired.unresolved,
            outsideRoot: outside,
            rejected: desired.rejected.map((r) => r.message),
            failed: desired.failed.map((r) => r.message),
            ...(gates.guard.length || gates.pass.length ? { gates: gatesJson(desired.gates) } : {}),
            entries: desired.entries,
            ...Object.fromEntries(rendered.map((r) => [r.name, r.json])),
          },
          messages: [
            ...desired.unresolved.map(
              (u) =>
                `${u.field === 'spec.cgroup' ? 'cgroup' : 'bypass cgroup'} ${u.cgroup} of policy ${u.policy} does not exist (yet): no entries for it until it does`,
            ),
            ...desired.rejected.map((r) => r.message),
            ...desired.failed.map((r) => r.message),
            ...outside.map((x) => x.message),
            ...rendered.flatMap((r) => r.messages),
          ],
          ok: desired.rejected.length === 0 && desired.failed.length === 0,
        };
      },
    };
  }

  /** Loads and attaches again when what this process made is not intact (or not made yet); true if it did. */
  private loadIfChanged(notes: Note[]): boolean {
    if (!this.intact()) {
      // Something this process attached or pinned is not as it left it: someone else changed it.
      const damage = this.expected.known ? this.expected.damage() : [];
      if (damage.length)
        notes.push({
          level: 'warn',
          event: 'repaired',
          message: `changed behind the agent's back (not by this agent): ${damage.join('; ')}; loading and attaching again`,
          fields: { damage },
        });
      const first = !this.expected.known;
      notes.push(...loadNotes(this.load(), first));
      return true;
    }
    return false;
  }

  preload(): void {
    try {
      this.loadIfChanged(this.preloaded);
    } catch (e) {
      // Thrown by the apply that follows, where a failed load is met and reported.
      this.preloaded.length = 0;
      this.preloadFailure = { error: e };
    }
  }

  apply(plan: Plan): ApplyResult {
    const failed = this.preloadFailure;
    this.preloadFailure = undefined;
    if (failed) throw failed.error;
    const notes: Note[] = [...plan.notes, ...this.preloaded.splice(0)];
    const loaded = this.loadIfChanged(notes);
    // Loading may change what the plan assumed (slots, the fast path): then it is made again.
    const again = loaded || !(plan as EbpfPlan).desired;
    const desired = again ? this.desired(plan.input, plan.gates) : (plan as EbpfPlan).desired;
    const partPlans = again ? this.parts.map((x) => x.plan(desired, plan.input)) : (plan as EbpfPlan).parts;
    resetReassigned(this.pins, desired.slots);
    // A tracer killed without giving its lease back: the programs stopped emitting when it lapsed.
    if (clearLapsedLease(this.pins))
      notes.push({
        level: 'info',
        event: 'trace_lease_cleared',
        message: 'cleared the lapsed lease of a trace that died',
      });
    this.parts.forEach((x, i) => notes.push(...(x.beforeWrite?.(partPlans[i], desired) ?? [])));
    const names = new Map([...desired.slots].map(([n, s]) => [s, n]));
    const w = writeEntries(this.pins, desired.entries, { names, capacities: capacitiesOf(desired) });
    const wrote = writeNotes(w, desired, names, this.lastWritten);
    notes.push(...wrote.notes);
    this.lastWritten = wrote.lastWritten;
    const applied = this.parts.map((x, i) => x.apply(partPlans[i]));
    for (const a of applied) notes.push(...a.notes);
    notes.push(...this.drift.notes(this.pins));
    for (const x of [...desired.rejected, ...desired.failed]) {
      notes.push({
        level: 'error',
        event: 'policy_error',
        message: x.message,
        fields: { policy: x.name, file: x.file },
      });
    }
    for (const u of desired.unresolved) {
      notes.push(
        u.field === 'spec.cgroup'
          ? {
              level: 'warn',
              event: 'unresolved',
              message: `cgroup ${u.cgroup} does not exist yet; policy ${u.policy} waits for it`,
              fields: { policy: u.policy, cgroup: u.cgroup },
            }
          : {
              level: 'warn',
              event: 'unresolved_bypass',
              message: `bypass cgroup ${u.cgroup} of ${u.policy} does not exist`,
              fields: { policy: u.policy, cgroup: u.cgroup },
            },
      );
    }
    for (const p of desired.keep)
      for (const message of isolationNotes(p))
        notes.push({ level: 'warn', event: 'policy_note', message, fields: { policy: p.name } });
    const unwritten = new Map([...w.failed].map(([slot, why]) => [names.get(slot) ?? `slot ${slot}`, why]));
    // What is in the maps now, per policy: the version written, or (failed) the one before.
    const next = new Map<string, Policy>();
    for (const p of desired.keep) {
      const prev = this.previous.get(p.name);
      if (!unwritten.has(p.name)) next.set(p.name, p);
      else if (prev) next.set(p.name, prev);
    }
    this.previous = next;
    // A part changes the outcome of a policy only it serves (waiting for its netns, refused).
    const policies = outcomes(plan.input, desired, unwritten).map((o) =>
      applied.reduce((cur, a) => {
        const x = a.outcomes.get(o.policy);
        if (!x || cur.state !== 'applied') return cur;
        // Parts that each leave a feature off (DNS capture, accelerate) all say why.
        const reason = [cur.reason, x.reason].filter(Boolean).join('; ');
        return { ...cur, ...x, ...(reason ? { reason } : {}) };
      }, o),
    );
    const sum = (k: 'writes' | 'deletes') => applied.reduce((n, a) => n + a[k], w[k]);
    return { writes: sum('writes'), deletes: sum('deletes'), loaded, policies, notes };
  }

  /** Loads and attaches; remembers what it attached and pinned, to notice a change behind our back. */
  private load(): LoadReport {
    const rep = load(this.attach, this.pins, this.parts);
    this.expected.remember();
    return rep;
  }

  /** Every link and pin as this process's last load left it, and every part's own. */
  private intact(): boolean {
    return this.expected.known && this.parts.every((x) => x.intact()) && this.expected.damage().length === 0;
  }

  status() {
    return ebpfStatus(this.pins, this.parts);
  }

  verify(req: VerifyRequest) {
    return ebpfVerify(this.pins, req, this.parts);
  }

  pulse(): string | null {
    for (const x of this.parts) {
      const why = x.pulse();
      if (why) return why;
    }
    return null;
  }

  changedUnder(e: unknown): string | null {
    // A pin deleted between the reconcile's check of the pins and its use of one: the next one pins
    // it again from the attached programs' maps.
    return e instanceof BpfError && e.op === 'bpf_obj_get' && e.code === 'ENOENT' ? `${e.what}: it vanished` : null;
  }

  metrics() {
    // The inbound watch's own counters live in this process (what the agent did), not in the pins.
    return [...ebpfMetrics(this.pins), ...this.inbound.metrics()];
  }

  readiness() {
    return ebpfReadiness(this.pins);
  }

  cleanup(opts: { force?: boolean; drainMs?: number }): CleanupReport {
    return cleanupReport(cleanupPins(this.pins, opts), this.cfg.bpffs);
  }
}
