// ulp-guard.test.ts — when the kTLS guard (mr_setsockopt) is needed, and which policies a plan says
// accelerate (pure: no kernel). Its attach and detach are proved by test/kernel/ktls-guard.kernel.test.ts.
import { describe, expect, it } from 'vitest';
import { GRACE_MS, GUARD, UlpGuardPart, guardNeed, type GuardFacts } from '../../src/modes/ebpf/ulp-guard.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { ON_DEMAND_PROGRAMS, OPTIONAL_PROGRAMS, PROGRAMS, PolicyFlag } from '../../src/bpf/abi.js';
import type { Desired } from '../../src/modes/ebpf/desired.js';

const none: GuardFacts = { accelerating: [], openSockets: 0, inFlight: 0, graceLeftMs: 0 };

describe('guardNeed', () => {
  it('not needed with nothing accelerating, open, in flight or in its grace', () => {
    expect(guardNeed(none)).toEqual({
      needed: false,
      why: 'no policy accelerates and no socket is on the fast path',
    });
  });

  it('needed while a policy accelerates, naming it', () => {
    expect(guardNeed({ ...none, accelerating: ['a'] })).toEqual({ needed: true, why: 'policy a accelerates' });
    expect(guardNeed({ ...none, accelerating: ['a', 'b'], openSockets: 3 }).why).toBe('policies a, b accelerate');
  });

  it('still needed after accelerate went, for each thing that can still put or keep a socket on the fast path', () => {
    expect(guardNeed({ ...none, openSockets: 2 })).toMatchObject({
      needed: true,
      why: expect.stringMatching(/2 socket\(s\) are still on the fast path/),
    });
    expect(guardNeed({ ...none, inFlight: 1 })).toMatchObject({
      needed: true,
      why: expect.stringMatching(/1 accelerated handshake\(s\) are in flight/),
    });
    expect(guardNeed({ ...none, graceLeftMs: 1 })).toMatchObject({
      needed: true,
      why: expect.stringContaining(`less than ${GRACE_MS} ms ago`),
    });
  });
});

describe('the guard part', () => {
  const desired = (flags: [string, number, number][]) =>
    ({
      slots: new Map(flags.map(([name, slot]) => [name, slot])),
      entries: { mr_policies: flags.map(([, slot, f]) => [slot, { flags: f }]) },
    }) as unknown as Desired;

  it('plans the policies whose entries accelerate (after the fast-path check, as written)', () => {
    const part = new UlpGuardPart(new Pins('/nonexistent'), () => '/nonexistent');
    const plan = part.plan(
      desired([
        ['fast', 1, PolicyFlag.ACCELERATE | PolicyFlag.PROXY4],
        ['plain', 2, PolicyFlag.PROXY4],
      ]),
    );
    expect(plan).toEqual({ accelerating: ['fast'] });
    expect(part.render(plan).json).toEqual({ program: GUARD, attach: true, accelerating: ['fast'] });
    expect(part.plan(desired([['plain', 2, PolicyFlag.PROXY4]]))).toEqual({ accelerating: [] });
  });

  it('its program is on demand: in the attach order, never attached by a load, not optional', () => {
    expect(ON_DEMAND_PROGRAMS).toContain(GUARD);
    expect(Object.keys(PROGRAMS)).toContain(GUARD);
    expect(OPTIONAL_PROGRAMS).not.toContain(GUARD);
  });

  it('asks for nothing between reconciles while it is not draining', () => {
    const part = new UlpGuardPart(new Pins('/nonexistent'), () => '/nonexistent');
    expect(part.pulse()).toBeNull();
  });

  it('an attach the kernel refuses fails nothing: the policies are written without accelerate and say why', () => {
    // Nothing pinned under /nonexistent: opening the program's pin fails (bpf_obj_get), as a refusal would.
    const part = new UlpGuardPart(new Pins('/nonexistent'), () => '/nonexistent');
    const base = desired([
      ['fast', 1, PolicyFlag.ACCELERATE | PolicyFlag.PROXY4],
      ['plain', 2, PolicyFlag.PROXY4],
    ]);
    const plan = part.plan(base);
    const notes = part.beforeWrite(plan, base);
    expect(notes).toEqual([
      expect.objectContaining({ level: 'warn', event: 'ktls_guard_attach_failed', fields: { policies: ['fast'] } }),
    ]);
    expect(base.entries.mr_policies).toEqual([
      [1, { flags: PolicyFlag.PROXY4 }],
      [2, { flags: PolicyFlag.PROXY4 }],
    ]);
    expect(part.attachRefused()).toMatch(/bpf_obj_get/);
    const applied = part.apply(plan);
    expect(applied.notes).toEqual([
      expect.objectContaining({ level: 'warn', event: 'accelerate_off', fields: { policy: 'fast' } }),
    ]);
    expect(applied.outcomes.get('fast')).toEqual({
      state: 'applied',
      reason: expect.stringMatching(
        /^spec\.accelerate is not applied: the kTLS guard \(mr_setsockopt\) cannot be attached/,
      ),
    });
    expect(applied.outcomes.has('plain')).toBe(false);
    // The next pass tries again; the failure was said once, each policy says it at every pass.
    const again = desired([['fast', 1, PolicyFlag.ACCELERATE | PolicyFlag.PROXY4]]);
    const plan2 = part.plan(again);
    expect(part.beforeWrite(plan2, again)).toEqual([]);
    expect(again.entries.mr_policies).toEqual([[1, { flags: PolicyFlag.PROXY4 }]]);
    expect(part.apply(plan2).notes).toHaveLength(1);
    // Nothing accelerates any more: nothing to attach, the refusal forgotten.
    const none = desired([['plain', 2, PolicyFlag.PROXY4]]);
    expect(part.beforeWrite(part.plan(none), none)).toEqual([]);
    expect(part.attachRefused()).toBeNull();
  });
});
