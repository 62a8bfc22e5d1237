// part.ts — the seam for a traffic feature inside the eBPF mode (inbound, DNS capture). The outbound part
// is the mode's base: it owns the slots, the policy and bypass-cgroup entries and the programs at the cgroup
// root, which every feature reuses (a feature's maps are keyed by the policy's slot). A part adds what is
// its own — maps and their entries, links elsewhere (a netns), programs kept to attach later — and the
// mode calls it at each step: plan (read the host, write nothing), load, apply, status, verify, pulse.
import type { BpfObject } from '../../bpf/object.js';
import type { Policy } from '../../policy/schema.js';
import type { Checks } from '../checks.js';
import type { Note, PolicyOutcome, Section, VerifyRequest } from '../mode.js';
import type { Desired } from './desired.js';

/** The base's view of one policy for a part's verify: which slot covers the cgroup, and what it redirects. */
export interface Covered {
  policy: string;
  slot: number;
  /** The cgroup checked (a directory under the cgroup2 mount). */
  dir: string;
  /** The policy's bypass (proxy) cgroups, as ids. */
  bypassIds: bigint[];
}

export interface PartApply {
  writes: number;
  deletes: number;
  notes: Note[];
  /** Outcomes this part changes (a policy that only this part serves, waiting or refused). */
  outcomes: Map<string, Pick<PolicyOutcome, 'state' | 'reason'>>;
}

export interface EbpfPart<Plan> {
  readonly name: string;
  /** What the part wants for the policies the base keeps (reads the host, writes nothing). */
  plan(base: Desired, policies: Policy[]): Plan;
  /** Its section of the dry run (JSON), and what it would not do (stderr). */
  render(plan: Plan): { json: unknown; messages: string[] };
  /** Whether what it keeps pinned beside the base's is in place (else the object is loaded again). */
  intact(): boolean;
  /** Before a load, with the object open: its programs this kernel cannot load, with why (their autoload
   * goes off, else libbpf would fail the whole object; they are then never attached). */
  prepare?(obj: BpfObject): Record<string, string>;
  /** After a load, with the object still open: pin what it attaches later, swap its links' programs. */
  loaded(obj: BpfObject): string[];
  /** Before the base's entries are written: what must be in place before them (the kTLS guard before the
   * first accelerate entry); where it cannot be, the part may take out of `base` what needs it. */
  beforeWrite?(plan: Plan, base: Desired): Note[];
  /** Makes the host match the plan, after the base's entries are written. */
  apply(plan: Plan): PartApply;
  status(): { json: unknown; sections: Section[] };
  /** Whether the part has anything for this slot (its verify then runs). */
  covers(slot: number): boolean;
  /** Its verify steps, after the base found the covering policy. */
  verify(c: Checks, cov: Covered, req: VerifyRequest): Promise<void>;
  /** A cheap look between reconciles (every second): a reason to reconcile now, or null. */
  pulse(): string | null;
}
