// ulp-guard.ts — mr_setsockopt, the fast path's kTLS guard, attached at the cgroup root only while it is
// needed: while a policy accelerates, then until no socket is on the fast path or on its way there.
//
// The program costs ~60 ns, but its hook costs every setsockopt() below the root ~0.4–1 µs, whatever the
// socket (the kernel copies optval and takes the socket lock around the program), and a connection makes
// 3 (6 through HAProxy). So it is a part of its own: the load pins its program (progs/) and re-adopts a
// pinned link; beforeWrite attaches it before the first accelerate entry is written (no socket can be
// accelerated without it); apply, after the entries are written, detaches it once nothing needs it; the
// pulse asks for that apply when the last fast-path socket closed.
//
// What needs it without an accelerating policy: a socket in the sockhash; a record in flight that says
// "accelerate" (a connect made while the policy accelerated joins at ESTABLISHED, which a lost SYN can
// delay by minutes); and, for GRACE_MS after the last accelerate entry was seen, a connect() that read
// the policy just before its entry was rewritten and has not published its record yet.
import type { BpfObject } from '../../bpf/object.js';
import { OrigFlag, PolicyFlag } from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import type { Note, Section } from '../mode.js';
import type { Desired } from './desired.js';
import type { EbpfPart, PartApply } from './part.js';
import type { Pins } from './pins.js';
import { GRACE_MS, OnDemandLink, type Need } from './on-demand.js';

export { GRACE_MS };
export const GUARD = 'mr_setsockopt';
const NOTHING = 'no policy accelerates and no socket is on the fast path';

/** What decides whether the guard is needed. */
export interface GuardFacts {
  /** Policies whose entries accelerate (in the plan, or in the maps). */
  accelerating: string[];
  /** Sockets on the fast path (in the sockhash). */
  openSockets: number;
  /** Handshakes in flight whose record says "accelerate" (they join the fast path when established). */
  inFlight: number;
  /** What is left of the grace after the last accelerate entry was seen (0: over). */
  graceLeftMs: number;
}

/** Whether the guard is needed, and why (pure). */
export function guardNeed(f: GuardFacts): Need {
  const n = f.accelerating.length;
  if (n)
    return {
      needed: true,
      why: `${n === 1 ? 'policy' : 'policies'} ${f.accelerating.join(', ')} ${n === 1 ? 'accelerates' : 'accelerate'}`,
    };
  if (f.openSockets)
    return { needed: true, why: `no policy accelerates, but ${f.openSockets} socket(s) are still on the fast path` };
  if (f.inFlight)
    return { needed: true, why: `no policy accelerates, but ${f.inFlight} accelerated handshake(s) are in flight` };
  if (f.graceLeftMs > 0)
    return { needed: true, why: `accelerate was turned off less than ${GRACE_MS} ms ago (connects in progress)` };
  return { needed: false, why: NOTHING };
}

/** Policies (by name) whose entry in mr_policies accelerates now. */
function acceleratingInMaps(pins: Pins): string[] {
  const flags = pins.entries<[number, { flags: number }][]>('mr_policies');
  const on = new Set(flags.filter(([, p]) => p.flags & PolicyFlag.ACCELERATE).map(([slot]) => slot));
  if (!on.size) return [];
  return [...pins.slots()].filter(([, slot]) => on.has(slot)).map(([name]) => name);
}

/** Whether no socket is in the sockhash (one syscall, however many there are). */
function sockhashEmpty(pins: Pins): boolean {
  return !pins.has('mr_sockhash') || pins.withMaps(['mr_sockhash'], (m) => m.get('mr_sockhash')!.empty());
}

/** Records in flight whose connection joins the fast path when established. */
function acceleratedInFlight(pins: Pins): number {
  return pins.withMaps(
    ['mr_orig'],
    (m) =>
      (m.get('mr_orig')! as BpfMap<unknown, { flags: number }>).entries().filter(([, o]) => o.flags & OrigFlag.ACCEL)
        .length,
  );
}

export interface GuardPlan {
  /** Policies whose entries will accelerate. */
  accelerating: string[];
}

export class UlpGuardPart implements EbpfPart<GuardPlan> {
  readonly name = 'ktlsGuard';
  private readonly link: OnDemandLink;

  constructor(
    private readonly pins: Pins,
    /** Where the programs attach (the cgroup root). */
    root: () => string,
  ) {
    this.link = new OnDemandLink(pins, GUARD, 'setsockopt', root, {
      does: 'it refuses kTLS on fast-path sockets',
      event: 'ktls_guard',
      nothing: NOTHING,
    });
  }

  plan(base: Desired): GuardPlan {
    const on = new Set(
      base.entries.mr_policies.filter(([, p]) => p.flags & PolicyFlag.ACCELERATE).map(([slot]) => slot),
    );
    return { accelerating: [...base.slots].filter(([, slot]) => on.has(slot)).map(([name]) => name) };
  }

  render(plan: GuardPlan) {
    return {
      json: { program: GUARD, attach: plan.accelerating.length > 0, accelerating: plan.accelerating },
      messages: [],
    };
  }

  intact(): boolean {
    return this.link.hasProgram();
  }

  /** Pins the freshly loaded program, to attach when needed (attach.ts re-adopted a pinned link already). */
  loaded(obj: BpfObject): string[] {
    this.link.pinProgram(obj);
    return [];
  }

  /** Before the entries are written: attached when they will accelerate (so no socket is accelerated
   * without it); otherwise notes whether the maps still accelerate (the grace starts from the rewrite). */
  beforeWrite(plan: GuardPlan): Note[] {
    if (!plan.accelerating.length) {
      this.link.rewriting(() => acceleratingInMaps(this.pins).length > 0);
      return [];
    }
    return this.link.attachFor(`policy ${plan.accelerating.join(', ')} accelerates`, {
      policies: plan.accelerating,
    });
  }

  /** After the entries are written: detached once no policy accelerates and nothing is left on the fast path. */
  apply(plan: GuardPlan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    if (plan.accelerating.length) return out;
    out.notes.push(
      ...this.link.settle(
        () => this.drained(),
        () =>
          guardNeed({
            accelerating: [],
            openSockets: this.pins.acceleratedSockets(),
            inFlight: acceleratedInFlight(this.pins),
            graceLeftMs: this.link.graceLeftMs(),
          }).why,
      ),
    );
    return out;
  }

  /** Nothing is on the fast path or on its way there (no policy accelerates: the caller knows). Cheap first:
   * the records are read only once the sockhash is empty. */
  private drained(): boolean {
    return sockhashEmpty(this.pins) && acceleratedInFlight(this.pins) === 0;
  }

  status(): { json: unknown; sections: Section[] } {
    const f: GuardFacts = {
      accelerating: acceleratingInMaps(this.pins),
      openSockets: this.pins.acceleratedSockets(),
      inFlight: acceleratedInFlight(this.pins),
      graceLeftMs: 0,
    };
    const need = guardNeed(f);
    const { attached, state } = this.link.describe(need, 'setsockopt() below the root runs no program');
    return {
      json: { program: GUARD, attached, needed: need.needed, why: need.why, ...f },
      sections: [{ lines: [`kTLS guard (${GUARD}): ${state}`] }],
    };
  }

  covers(): boolean {
    return false;
  }

  async verify(): Promise<void> {}

  pulse(): string | null {
    return this.link.pulse(() => this.drained(), 'the fast path has drained');
  }
}
