// on-demand-part.ts — the part around an on-demand program (on-demand.ts): the kTLS guard (ulp-guard.ts) and
// DNS capture's sock_release (release.ts) differ only in which policies need their program, what else keeps
// it needed once none does, and their words; the steps are the same. The load pins the program (attach.ts
// re-adopted a pinned link already); beforeWrite attaches it before the first entry that needs it is
// written; apply, after the entries are written, detaches it once nothing needs it; the pulse asks for that
// apply when what kept it has gone; status says whether it is attached and why.
import type { BpfObject } from '../../bpf/object.js';
import type { OnDemandHook } from '../../bpf/link.js';
import type { Policy } from '../../policy/schema.js';
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

/** The names of the policies holding these slots (pins.slots()). */
export function policiesIn(pins: Pins, slots: Set<number>): string[] {
  if (!slots.size) return [];
  return [...pins.slots()].filter(([, slot]) => slots.has(slot)).map(([name]) => name);
}

export interface OnDemandSpec {
  program: string;
  hook: OnDemandHook;
  /** How the plan's policies need it: ["accelerates", "accelerate"]. */
  verb: [string, string];
  /** The agent's notes (on-demand.ts), and the pulse's reason once nothing but the plan needed it. */
  notes: OnDemandWords & { drainedWhy: string };
  /** The status line's name ("kTLS guard"), and what not having it attached spares ("setsockopt() below
   * the root runs no program"). */
  status: { title: string; idle: string };
}

export abstract class OnDemandPart<Plan, Facts extends object> implements EbpfPart<Plan> {
  abstract readonly name: string;
  protected readonly link: OnDemandLink;
  /** The last load left the program out (this kernel lacks its hook): nothing to keep pinned then. */
  private absent = false;

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

  /** Before the entries are written: attached when some will need it (so none is written without it);
   * otherwise notes whether the maps still need it (the grace starts from the rewrite). */
  beforeWrite(plan: Plan): Note[] {
    const names = this.planned(plan);
    if (!names.length) {
      this.link.rewriting(() => this.inMaps().length > 0);
      return [];
    }
    return this.link.attachFor(naming(names, this.spec.verb), { policies: names });
  }

  /** After the entries are written: detached once no policy needs it and nothing else does. */
  apply(plan: Plan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    if (this.planned(plan).length) return out;
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
