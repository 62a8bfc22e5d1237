// ulp-guard.ts — mr_setsockopt, the fast path's kTLS guard, attached at the cgroup root only while it is
// needed: while a policy accelerates, then until no socket is on the fast path or on its way there.
//
// The program costs ~60 ns, but its hook costs every setsockopt() below the root ~0.4–1 µs, whatever the
// socket (the kernel copies optval and takes the socket lock around the program), and a connection makes
// 3 (6 through HAProxy). So it is a part of its own: the load pins its program (progs/) and re-adopts a
// pinned link; beforeWrite attaches it before the first accelerate entry is written (no socket can be
// accelerated without it); apply, after the entries are written, detaches it once nothing needs it; the
// pulse asks for that apply when the last fast-path socket closed. Where the kernel refuses the attach, the
// policies' entries are written without accelerate (each says why): redirected, never accelerated unguarded.
//
// What needs it without an accelerating policy: a socket in the sockhash; a record in flight that says
// "accelerate" (a connect made while the policy accelerated joins at ESTABLISHED, which a lost SYN can
// delay by minutes); and, for GRACE_MS after the last accelerate entry was seen, a connect() that read
// the policy just before its entry was rewritten and has not published its record yet.
import { OrigFlag, PolicyFlag } from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import type { Desired } from './desired.js';
import type { Pins } from './pins.js';
import { GRACE_MS, type Need } from './on-demand.js';
import { OnDemandPart, namesIn, naming, needOf, policiesIn, type DrainFacts } from './on-demand-part.js';

export { GRACE_MS };
export const GUARD = 'mr_setsockopt';

const NOTHING = 'no policy accelerates and no socket is on the fast path';

/** What decides whether the guard is needed (openSockets: in the sockhash). */
export interface GuardFacts extends DrainFacts {
  /** Policies whose entries accelerate (in the plan, or in the maps). */
  accelerating: string[];
  /** Handshakes in flight whose record says "accelerate" (they join the fast path when established). */
  inFlight: number;
}

/** Whether the guard is needed, and why (pure). */
export function guardNeed(f: GuardFacts): Need {
  return needOf(
    f.accelerating.length ? naming(f.accelerating, ['accelerates', 'accelerate']) : null,
    [
      [f.openSockets, `no policy accelerates, but ${f.openSockets} socket(s) are still on the fast path`],
      [f.inFlight, `no policy accelerates, but ${f.inFlight} accelerated handshake(s) are in flight`],
      [f.graceLeftMs, `accelerate was turned off less than ${GRACE_MS} ms ago (connects in progress)`],
    ],
    NOTHING,
  );
}

/** Policies (by name) whose entry in mr_policies accelerates now. */
function acceleratingInMaps(pins: Pins): string[] {
  const flags = pins.entries<[number, { flags: number }][]>('mr_policies');
  return policiesIn(pins, new Set(flags.filter(([, p]) => p.flags & PolicyFlag.ACCELERATE).map(([slot]) => slot)));
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

export class UlpGuardPart extends OnDemandPart<GuardPlan, GuardFacts> {
  readonly name = 'ktlsGuard';

  constructor(pins: Pins, root: () => string) {
    super(pins, root, {
      program: GUARD,
      hook: 'setsockopt',
      verb: ['accelerates', 'accelerate'],
      notes: {
        event: 'ktls_guard',
        does: 'it refuses kTLS on fast-path sockets',
        nothing: NOTHING,
        drainedWhy: 'the fast path has drained',
        without: 'redirected, not accelerated',
      },
      status: { title: 'kTLS guard', idle: 'setsockopt() below the root runs no program' },
    });
  }

  plan(base: Desired): GuardPlan {
    const on = base.entries.mr_policies.filter(([, p]) => p.flags & PolicyFlag.ACCELERATE).map(([slot]) => slot);
    return { accelerating: namesIn(base.slots, new Set(on)) };
  }

  protected planned(plan: GuardPlan): string[] {
    return plan.accelerating;
  }

  protected inMaps(): string[] {
    return acceleratingInMaps(this.pins);
  }

  /** Nothing is on the fast path or on its way there. Cheap first: the records are read only once the
   * sockhash is empty. */
  protected drained(): boolean {
    return this.pins.mapEmpty('mr_sockhash') && acceleratedInFlight(this.pins) === 0;
  }

  protected facts(accelerating: string[], graceLeftMs: number): GuardFacts {
    return {
      accelerating,
      openSockets: this.pins.acceleratedSockets(),
      inFlight: acceleratedInFlight(this.pins),
      graceLeftMs,
    };
  }

  protected need(f: GuardFacts): Need {
    return guardNeed(f);
  }

  /** No socket is accelerated without the guard: their entries are written without accelerate (the rest of
   * each policy applies; failing the pass instead would leave accelerate entries written before). */
  protected without(base: Desired, names: string[]): void {
    const off = new Set(names.map((n) => base.slots.get(n)));
    base.entries.mr_policies = base.entries.mr_policies.map(([slot, p]) =>
      off.has(slot) ? [slot, { ...p, flags: p.flags & ~PolicyFlag.ACCELERATE }] : [slot, p],
    );
  }

  protected unattached(why: string): { event: string; reason: string } {
    return {
      event: 'accelerate_off',
      reason: `spec.accelerate is not applied: the kTLS guard (${GUARD}) cannot be attached (${why}); connections are redirected without the fast path`,
    };
  }
}
