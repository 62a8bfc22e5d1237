// on-demand-part.ts — the part around an on-demand program (on-demand.ts): the kTLS guard (ulp-guard.ts) and
// DNS capture's sock_release (release.ts) differ only in which policies need their program, what else keeps
// it needed once none does, and their words; the steps are the same. The load pins the program (attach.ts
// re-adopted a pinned link already); beforeWrite attaches it before the first entry that needs it is
// written; apply, after the entries are written, detaches it once nothing needs it; the pulse asks for that
// apply when what kept it has gone; status says whether it is attached and why.
//
// An attach the kernel refuses fails neither the pass nor the other policies: the policies that need the
// program go without what needs it (`without`: DNS capture off, accelerate off), say why, and the next pass
// tries again. Failing the pass instead would leave the entries written before in place, without the
// program their hooks rely on.
import type { BpfObject } from '../../bpf/object.js';
import type { OnDemandHook } from '../../bpf/link.js';
import type { Policy } from '../../policy/schema.js';
import { BpfError } from '../../bpf/errors.js';
import type { Note, Section } from '../mode.js';
import type { Desired } from './desired.js';
import type { EbpfPart, PartApply } from './part.js';
import type { Pins } from './pins.js';
import { OnDemandLink, type Need, type OnDemandWords } from './on-demand.js';

/** "policy a accelerates", "policies a, b accelerate". */
export function naming(names: string[], verb: [one: string, many: string]): string {
  return `${names.length === 1 ? 'policy' : 'policies'} ${names.join(', ')} ${names.length === 1 ? verb[0] : verb[1]}`;
}

/** Needed by the policies named (`by`), else by the first of `still` whose count is not 0, else not (pure). */
export function needOf(by: string | null, still: [count: number, why: string][], nothing: string): Need {
  if (by) return { needed: true, why: by };
  for (const [n, why] of still) if (n > 0) return { needed: true, why };
  return { needed: false, why: nothing };
}

/** What keeps the program needed once no policy does, common to both: the sockets that still use it, and
 * the grace. */
export interface DrainFacts {
  /** Sockets that still use it (until they close). */
  openSockets: number;
  /** What is left of the grace after the last entry needing it was seen (0: over). */
  graceLeftMs: number;
}

/** The names of the policies holding these slots, of a name → slot map (a plan's, or pins.slots()). */
export function namesIn(slotsByName: Map<string, number>, slots: Set<number>): string[] {
  return [...slotsByName].filter(([, slot]) => slots.has(slot)).map(([name]) => name);
}

/** The names of the policies holding these slots now (pins.slots()). */
export function policiesIn(pins: Pins, slots: Set<number>): string[] {
  return slots.size ? namesIn(pins.slots(), slots) : [];
}

export interface OnDemandSpec {
  program: string;
  hook: OnDemandHook;
  /** How the plan's policies need it: ["accelerates", "accelerate"]. */
  verb: [string, string];
  /** The agent's notes (on-demand.ts), the pulse's reason once nothing but the plan needed it, and what the
   * policies do without it when it cannot be attached ("redirected, not accelerated"). */
  notes: OnDemandWords & { drainedWhy: string; without: string };
  /** The status line's name ("kTLS guard"), and what not having it attached spares ("setsockopt() below
   * the root runs no program"). */
  status: { title: string; idle: string };
}

export abstract class OnDemandPart<Plan, Facts extends object> implements EbpfPart<Plan> {
  abstract readonly name: string;
  protected readonly link: OnDemandLink;
  /** The last load left the program out (this kernel lacks its hook): nothing to keep pinned then. */
  private absent = false;
  /** Why the last attach failed (the kernel refused it); null when it did not fail or was not needed. */
  private refused: string | null = null;

  constructor(
    protected readonly pins: Pins,
    /** Where the programs attach (the cgroup root). */
    root: () => string,
    protected readonly spec: OnDemandSpec,
  ) {
    this.link = new OnDemandLink(pins, spec.program, spec.hook, root, spec.notes);
  }

  abstract plan(base: Desired, policies: Policy[]): Plan;
  /** The policies of a plan that need the program. */
  protected abstract planned(plan: Plan): string[];
  /** The policies whose entries in the maps need it now. */
  protected abstract inMaps(): string[];
  /** Nothing but a policy needs it any more (no policy does: the caller knows); cheap first. */
  protected abstract drained(): boolean;
  /** What decides whether it is needed, with these policies needing it. */
  protected abstract facts(policies: string[], graceLeftMs: number): Facts;
  protected abstract need(f: Facts): Need;
  /** The program could not be attached: these policies go without what needs it, made so in `base` before
   * its entries are written (the kTLS guard: no accelerate entry). */
  protected abstract without(base: Desired, names: string[]): void;
  /** What each of them says then, at every pass (a warning, and its outcome's reason); null: another part
   * says it (DNS capture's, which knows which policies only capture DNS). */
  protected abstract unattached(why: string): { event: string; reason: string } | null;

  /** Why the kernel refused the last attach (null: attached, or not needed). */
  attachRefused(): string | null {
    return this.refused;
  }

  render(plan: Plan) {
    return { json: { program: this.spec.program, attach: this.planned(plan).length > 0, ...plan }, messages: [] };
  }

  intact(): boolean {
    return this.absent || this.link.hasProgram();
  }

  loaded(obj: BpfObject): string[] {
    this.absent = !this.link.pinProgram(obj);
    return [];
  }

  /** Before the entries are written: attached when some will need it (so none is written without it; if the
   * kernel refuses, they go without it: `without`); otherwise notes whether the maps still need it (the
   * grace starts from the rewrite). */
  beforeWrite(plan: Plan, base: Desired): Note[] {
    const names = this.planned(plan);
    if (!names.length) {
      this.refused = null;
      this.link.rewriting(() => this.inMaps().length > 0);
      return [];
    }
    try {
      const notes = this.link.attachFor(naming(names, this.spec.verb), { policies: names });
      this.refused = null;
      return notes;
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      const again = this.refused === e.message;
      this.refused = e.message;
      this.without(base, names);
      if (again) return []; // said at its first failure; each policy's note says it at every pass
      return [
        {
          level: 'warn',
          event: `${this.spec.notes.event}_attach_failed`,
          message: `${this.spec.program} cannot be attached: ${e.message}; ${names.length === 1 ? 'policy' : 'policies'} ${names.join(', ')}: ${this.spec.notes.without}; tried again at each pass`,
          fields: { policies: names },
        },
      ];
    }
  }

  /** After the entries are written: detached once no policy needs it and nothing else does. Refused: the
   * policies that needed it say why. */
  apply(plan: Plan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    const names = this.planned(plan);
    if (names.length) {
      const u = this.refused === null ? null : this.unattached(this.refused);
      for (const n of u ? names : []) {
        out.notes.push({ level: 'warn', event: u!.event, message: `${n}: ${u!.reason}`, fields: { policy: n } });
        out.outcomes.set(n, { state: 'applied', reason: u!.reason });
      }
      return out;
    }
    out.notes.push(
      ...this.link.settle(
        () => this.drained(),
        () => this.need(this.facts([], this.link.graceLeftMs())).why,
      ),
    );
    return out;
  }

  status(): { json: unknown; sections: Section[] } {
    const f = this.facts(this.inMaps(), 0);
    const need = this.need(f);
    const { attached, state } = this.link.describe(need, this.spec.status.idle);
    return {
      json: { program: this.spec.program, attached, needed: need.needed, why: need.why, ...f },
      sections: [{ lines: [`${this.spec.status.title} (${this.spec.program}): ${state}`] }],
    };
  }

  covers(): boolean {
    return false;
  }

  async verify(): Promise<void> {}

  pulse(): string | null {
    return this.link.pulse(() => this.drained(), this.spec.notes.drainedWhy);
  }
}
