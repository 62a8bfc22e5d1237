// release.ts — mr_dns_release (cgroup/sock_release), which deletes a captured socket's mr_dns_socks entry as
// the socket closes, attached at the cgroup root only while it is needed: while a policy captures DNS, then
// until no captured socket is open.
//
// Its hook runs on every inet socket close below the root (~100 ns each, 2 per redirected connection, 4
// through a proxy), whatever the socket. So it is a part of its own (on-demand.ts, as the kTLS guard):
// beforeWrite attaches it before the first mr_dns_pol entry is written (connect4/6 and sendmsg make entries
// only while their policy's mr_dns_pol entry exists, so none is made without it); apply, after the entries
// are written, detaches it once nothing needs it; the pulse asks for that apply when the last entry went.
//
// Entries left after the last DNS policy went belong to sockets still open (a resolver's connected UDP
// socket can live for long): they are kept, since recvmsg and getpeername still relabel those sockets'
// replies from them, and the hook stays attached until each has been deleted at its socket's close. The
// alternative — detaching at once and sweeping the entries left — would need to tell closed sockets from
// open ones (a sock_diag dump of every socket of the host each time), and a stale entry is never reused (a
// cookie is unique), but fills the table. The inbound watch does not need this hook: it checks its
// registered listeners each second where the hook is not attached (inbound-watch.ts).
import type { BpfObject } from '../../bpf/object.js';
import type { Policy } from '../../policy/schema.js';
import type { Note, Section } from '../mode.js';
import type { Desired } from './desired.js';
import type { EbpfPart, PartApply } from './part.js';
import type { Pins } from './pins.js';
import { GRACE_MS, OnDemandLink, type Need } from './on-demand.js';
import { dnsPlanned } from './dns.js';
import { dnsUnavailable } from './dns-status.js';

export const RELEASE = 'mr_dns_release';

const NOTHING = 'no policy captures DNS and no captured socket is open';

/** What decides whether the release hook is needed. */
export interface ReleaseFacts {
  /** Policies that capture DNS (in the plan, or with an entry in mr_dns_pol). */
  capturing: string[];
  /** Captured sockets whose entry is still in mr_dns_socks (deleted when they close). */
  openSockets: number;
  /** What is left of the grace after the last mr_dns_pol entry was seen (0: over). */
  graceLeftMs: number;
}

/** Whether the release hook is needed, and why (pure). */
export function releaseNeed(f: ReleaseFacts): Need {
  const n = f.capturing.length;
  if (n)
    return {
      needed: true,
      why: `${n === 1 ? 'policy' : 'policies'} ${f.capturing.join(', ')} ${n === 1 ? 'captures' : 'capture'} DNS`,
    };
  if (f.openSockets)
    return {
      needed: true,
      why: `no policy captures DNS, but ${f.openSockets} captured socket(s) are still open (their entries go as they close)`,
    };
  if (f.graceLeftMs > 0)
    return { needed: true, why: `DNS capture was turned off less than ${GRACE_MS} ms ago (connects in progress)` };
  return { needed: false, why: NOTHING };
}

export interface ReleasePlan {
  /** Policies whose mr_dns_pol entries will be written (DNS capture available here). */
  capturing: string[];
}

/** Policies (by name) with an entry in mr_dns_pol now. */
function capturingInMaps(pins: Pins): string[] {
  if (!pins.has('mr_dns_pol')) return [];
  const slots = new Set(pins.withMaps(['mr_dns_pol'], (m) => m.get('mr_dns_pol')!.keys() as number[]));
  if (!slots.size) return [];
  return [...pins.slots()].filter(([, slot]) => slots.has(slot)).map(([name]) => name);
}

/** Entries in mr_dns_socks (captured sockets not closed yet). */
function openEntries(pins: Pins): number {
  if (!pins.has('mr_dns_socks')) return 0;
  return pins.withMaps(['mr_dns_socks'], (m) => m.get('mr_dns_socks')!.keys().length);
}

/** Whether mr_dns_socks is empty (one syscall, however many entries there are). */
function noEntries(pins: Pins): boolean {
  return !pins.has('mr_dns_socks') || pins.withMaps(['mr_dns_socks'], (m) => m.get('mr_dns_socks')!.empty());
}

export class ReleasePart implements EbpfPart<ReleasePlan> {
  readonly name = 'dnsRelease';
  private readonly link: OnDemandLink;
  /** Why the last load could not pin its program (this kernel lacks the hook): nothing to keep pinned then. */
  private absent = false;

  constructor(
    private readonly pins: Pins,
    /** Where the programs attach (the cgroup root). */
    root: () => string,
  ) {
    this.link = new OnDemandLink(pins, RELEASE, 'sock_release', root, {
      does: "it deletes a captured socket's entry as it closes",
      event: 'dns_release',
      nothing: NOTHING,
    });
  }

  plan(base: Desired, _policies: Policy[]): ReleasePlan {
    const planned = dnsPlanned(base);
    // Where DNS capture is unavailable the DNS part writes no entry: nothing to delete.
    const ready = planned.length > 0 && Object.keys(dnsUnavailable(this.pins)).length === 0;
    return { capturing: ready ? planned.map((p) => p.policy) : [] };
  }

  render(plan: ReleasePlan) {
    return { json: { program: RELEASE, attach: plan.capturing.length > 0, capturing: plan.capturing }, messages: [] };
  }

  intact(): boolean {
    return this.absent || this.link.hasProgram();
  }

  /** Pins the freshly loaded program, to attach when needed (attach.ts re-adopted a pinned link already). */
  loaded(obj: BpfObject): string[] {
    this.absent = !this.link.pinProgram(obj);
    return [];
  }

  /** Before the entries are written: attached when a policy will capture DNS (so no captured socket's entry
   * is made without it); otherwise notes whether mr_dns_pol still has entries (the grace starts then). */
  beforeWrite(plan: ReleasePlan): Note[] {
    if (!plan.capturing.length) {
      this.link.rewriting(() => capturingInMaps(this.pins).length > 0);
      return [];
    }
    const n = plan.capturing.length;
    return this.link.attachFor(`${n === 1 ? 'policy' : 'policies'} ${plan.capturing.join(', ')} captures DNS`, {
      policies: plan.capturing,
    });
  }

  /** After the entries are written: detached once no policy captures DNS and no captured socket is open. */
  apply(plan: ReleasePlan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    if (plan.capturing.length) return out;
    out.notes.push(
      ...this.link.settle(
        () => noEntries(this.pins),
        () =>
          releaseNeed({ capturing: [], openSockets: openEntries(this.pins), graceLeftMs: this.link.graceLeftMs() }).why,
      ),
    );
    return out;
  }

  status(): { json: unknown; sections: Section[] } {
    const f: ReleaseFacts = {
      capturing: capturingInMaps(this.pins),
      openSockets: openEntries(this.pins),
      graceLeftMs: 0,
    };
    const need = releaseNeed(f);
    const { attached, state } = this.link.describe(need, 'closing a socket below the root runs no program');
    return {
      json: { program: RELEASE, attached, needed: need.needed, why: need.why, ...f },
      sections: [{ lines: [`DNS socket release (${RELEASE}): ${state}`] }],
    };
  }

  covers(): boolean {
    return false;
  }

  async verify(): Promise<void> {}

  pulse(): string | null {
    return this.link.pulse(() => noEntries(this.pins), 'the captured DNS sockets have closed');
  }
}
