// release.ts — mr_dns_release (cgroup/sock_release), which deletes a captured socket's mr_dns_socks entry as
// the socket closes, attached at the cgroup root only while it is needed: while a policy captures DNS, then
// until no captured socket is open.
//
// Its hook runs on every inet socket close below the root (~100 ns each, 2 per redirected connection, 4
// through a proxy), whatever the socket. So it is a part of its own (on-demand.ts, as the kTLS guard):
// beforeWrite attaches it before the first mr_dns_pol entry is written (connect4/6 and sendmsg make entries
// only while their policy's mr_dns_pol entry exists, so none is made without it); apply, after the entries
// are written, detaches it once nothing needs it; the pulse asks for that apply when the last entry went.
// DNS capture's part writes mr_dns_pol entries only while this link is attached, as the kernel reports it:
// where the attach is refused, DNS capture is off (each policy says why) and the rest is redirected.
//
// Entries left after the last DNS policy went belong to sockets still open (a resolver's connected UDP
// socket can live for long): they are kept, since recvmsg and getpeername still relabel those sockets'
// replies from them, and the hook stays attached until each has been deleted at its socket's close. The
// alternative — detaching at once and sweeping the entries left — would need to tell closed sockets from
// open ones (a sock_diag dump of every socket of the host each time), and a stale entry is never reused (a
// cookie is unique), but fills the table. The inbound watch does not need this hook: it looks up its
// registered listeners and netns links each second, attached or not (inbound-watch.ts).
import type { Policy } from '../../policy/schema.js';
import type { Desired } from './desired.js';
import type { Pins } from './pins.js';
import { GRACE_MS, type Need } from './on-demand.js';
import { OnDemandPart, naming, needOf, policiesIn, type DrainFacts } from './on-demand-part.js';
import { dnsPlanned } from './dns.js';
import { dnsUnavailable } from './dns-status.js';

export const RELEASE = 'mr_dns_release';

const NOTHING = 'no policy captures DNS and no captured socket is open';

/** What decides whether the release hook is needed (openSockets: captured sockets whose entry is still in
 * mr_dns_socks, deleted as they close). */
export interface ReleaseFacts extends DrainFacts {
  /** Policies that capture DNS (in the plan, or with an entry in mr_dns_pol). */
  capturing: string[];
}

/** Whether the release hook is needed, and why (pure). */
export function releaseNeed(f: ReleaseFacts): Need {
  return needOf(
    f.capturing.length ? naming(f.capturing, ['captures DNS', 'capture DNS']) : null,
    [
      [
        f.openSockets,
        `no policy captures DNS, but ${f.openSockets} captured socket(s) are still open (their entries go as they close)`,
      ],
      [f.graceLeftMs, `DNS capture was turned off less than ${GRACE_MS} ms ago (connects and sends in progress)`],
    ],
    NOTHING,
  );
}

export interface ReleasePlan {
  /** Policies whose mr_dns_pol entries will be written (DNS capture available here). */
  capturing: string[];
}

/** Policies (by name) with an entry in mr_dns_pol now. */
function capturingInMaps(pins: Pins): string[] {
  if (!pins.has('mr_dns_pol')) return [];
  return policiesIn(pins, new Set(pins.withMaps(['mr_dns_pol'], (m) => m.get('mr_dns_pol')!.keys() as number[])));
}

/** Entries in mr_dns_socks (captured sockets not closed yet). */
function openEntries(pins: Pins): number {
  if (!pins.has('mr_dns_socks')) return 0;
  return pins.withMaps(['mr_dns_socks'], (m) => m.get('mr_dns_socks')!.keys().length);
}

export class ReleasePart extends OnDemandPart<ReleasePlan, ReleaseFacts> {
  readonly name = 'dnsRelease';

  constructor(pins: Pins, root: () => string) {
    super(pins, root, {
      program: RELEASE,
      hook: 'sock_release',
      verb: ['captures DNS', 'capture DNS'],
      notes: {
        event: 'dns_release',
        does: "it deletes a captured socket's entry as it closes",
        nothing: NOTHING,
        drainedWhy: 'the captured DNS sockets have closed',
        without: 'DNS capture is off, other traffic is redirected as usual',
      },
      status: { title: 'DNS socket release', idle: 'closing a socket below the root runs no program' },
    });
  }

  plan(base: Desired, _policies: Policy[]): ReleasePlan {
    const planned = dnsPlanned(base);
    // Where DNS capture is unavailable the DNS part writes no entry: nothing to delete.
    const ready = planned.length > 0 && Object.keys(dnsUnavailable(this.pins)).length === 0;
    return { capturing: ready ? planned.map((p) => p.policy) : [] };
  }

  protected planned(plan: ReleasePlan): string[] {
    return plan.capturing;
  }

  protected inMaps(): string[] {
    return capturingInMaps(this.pins);
  }

  /** No entry left in mr_dns_socks (one syscall, however many there are). */
  protected drained(): boolean {
    return this.pins.mapEmpty('mr_dns_socks');
  }

  protected facts(capturing: string[], graceLeftMs: number): ReleaseFacts {
    return { capturing, openSockets: openEntries(this.pins), graceLeftMs };
  }

  protected need(f: ReleaseFacts): Need {
    return releaseNeed(f);
  }

  /** Nothing to take out of the base: DNS capture's part writes mr_dns_pol only while this link is attached
   * (the kernel says so, dns.ts), and there says why not to each policy. */
  protected without(): void {}

  protected unattached(): null {
    return null;
  }
}
