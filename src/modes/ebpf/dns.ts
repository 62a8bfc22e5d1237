// dns.ts — the eBPF mode's DNS capture part (docs/dns-design.md): the programs are the base's load
// (PROGRAMS, in attach order: recvmsg before sendmsg, connect4/6 last; sock_release attached on demand
// before the first mr_dns_pol entry by release.ts), with autoload off
// where this kernel lacks their hooks; this part writes mr_dns_ns and mr_dns_pol by difference — only
// while release and recvmsg (and sendmsg) are attached, as the kernel reports them when it writes, since
// connect4/6 capture as soon as mr_dns_pol has an entry — and reports, counts and verifies the chain.
// Owner, mark and bypass-cgroup entries are the outbound base's (mr_owners, mr_policies, mr_cgroups).
import type { Policy } from '../../policy/schema.js';
import type { BpfObject } from '../../bpf/object.js';
import type { BpfMap } from '../../bpf/map.js';
import { DNS_STAT_FIELDS, type DnsProgramName, type DnsStatName } from '../../bpf/abi.js';
import { unloadableDnsPrograms } from '../../bpf/optional.js';
import { toDnsEntries, type DnsEntries } from '../../policy/dns.js';
import type { Resolution } from '../../policy/entries.js';
import type { Checks } from '../checks.js';
import type { Note, VerifyRequest } from '../mode.js';
import type { Desired } from './desired.js';
import type { Pins } from './pins.js';
import type { Covered, EbpfPart, PartApply } from './part.js';
import { dnsStatus, dnsUnavailable } from './dns-status.js';
import { dnsVerify } from './dns-verify.js';

export interface DnsPlan {
  entries: DnsEntries;
  /** Policies with spec.dns whose cgroup exists, with their slot; `only`: nothing else to do (no proxy). */
  policies: { policy: string; slot: number; only: boolean }[];
  /** DNS programs not attached (or, before anything is loaded, not loadable here), with why. */
  unavailable: Partial<Record<DnsProgramName, string>>;
}

export class DnsPart implements EbpfPart<DnsPlan> {
  readonly name = 'dns';
  constructor(
    private readonly pins: Pins,
    /** Why the kernel refused to attach mr_dns_release at this pass (release.ts), or null. */
    private readonly releaseRefused: () => string | null = () => null,
  ) {}

  plan(base: Desired, _policies: Policy[]): DnsPlan {
    const waiting = new Set(base.unresolved.filter((u) => u.field === 'spec.cgroup').map((u) => u.policy));
    // toDnsEntries only asks whether the policy's cgroup exists (the ids are the base's entries).
    const res = new Map<string, Resolution>(
      base.keep.map((p) => [p.name, { cgroup: waiting.has(p.name) ? null : 1n, bypass: [] }]),
    );
    const entries = toDnsEntries(base.keep, base.slots, res);
    const policies = dnsPlanned(base);
    return { entries, policies, unavailable: policies.length ? dnsUnavailable(this.pins) : {} };
  }

  render(plan: DnsPlan) {
    const off = Object.entries(plan.unavailable);
    return {
      json: {
        available: off.length === 0,
        ...(off.length ? { unavailable: plan.unavailable } : {}),
        policies: plan.policies,
        entries: off.length ? { mr_dns_pol: [], mr_dns_ns: [] } : plan.entries,
      },
      messages: off.length ? plan.policies.map((p) => `${p.policy}: ${unavailableMessage(plan)}`) : [],
    };
  }

  /** Its links are the base's (PROGRAMS): the base's check covers them. */
  intact(): boolean {
    return true;
  }

  prepare(_obj: BpfObject): Record<string, string> {
    return unloadableDnsPrograms() as Record<string, string>;
  }

  loaded(_obj: BpfObject): string[] {
    return [];
  }

  apply(plan: DnsPlan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    // As the kernel reports the links now: mr_dns_release, attached on demand before the entries (release.ts),
    // must be attached, whatever the plan expected.
    const unavailable = dnsUnavailable(this.pins, 'write');
    const refused = this.releaseRefused();
    if (unavailable.mr_dns_release && refused) unavailable.mr_dns_release = `cannot be attached: ${refused}`;
    const ready = Object.keys(unavailable).length === 0;
    if (!ready && plan.policies.length) {
      const why = unavailableMessage({ ...plan, unavailable });
      for (const p of plan.policies) {
        out.notes.push({
          level: 'warn',
          event: 'dns_unavailable',
          message: `${p.policy}: ${why}`,
          fields: { policy: p.policy, unavailable } as Note['fields'],
        });
        out.outcomes.set(p.policy, { state: p.only ? 'rejected' : 'applied', reason: why });
      }
    }
    // Without its hooks nothing may be captured: the entries (the switch connect4/6 read) stay empty.
    const want: DnsEntries = ready ? plan.entries : { mr_dns_pol: [], mr_dns_ns: [] };
    const w = writeDns(this.pins, want);
    out.writes += w.writes;
    out.deletes += w.deletes;
    return out;
  }

  status() {
    return dnsStatus(this.pins);
  }

  covers(slot: number): boolean {
    if (!this.pins.has('mr_dns_pol')) return false;
    return this.pins.withMaps(['mr_dns_pol'], (m) => m.get('mr_dns_pol')!.get(slot) !== undefined);
  }

  verify(c: Checks, cov: Covered, req: VerifyRequest): Promise<void> {
    return dnsVerify(this.pins, c, cov, req);
  }

  /** Nothing to watch between reconciles: the kernel deletes a socket's entry when it closes. */
  pulse(): string | null {
    return null;
  }
}

/** The policies with spec.dns whose cgroup exists, with their slot; `only`: nothing else to do (no proxy).
 * Their entries are written only where DNS capture is available (dnsUnavailable is empty). */
export function dnsPlanned(base: Desired): DnsPlan['policies'] {
  const waiting = new Set(base.unresolved.filter((u) => u.field === 'spec.cgroup').map((u) => u.policy));
  return base.keep
    .filter((p) => p.dns && !waiting.has(p.name))
    .map((p) => ({
      policy: p.name,
      slot: base.slots.get(p.name)!,
      only: !p.proxy.outbound && !p.proxy.outbound6 && !p.proxy.inbound,
    }));
}

function unavailableMessage(plan: Pick<DnsPlan, 'unavailable'>): string {
  const list = Object.entries(plan.unavailable)
    .map(([n, why]) => `${n} (${why})`)
    .join('; ');
  return `spec.dns is not applied: DNS capture is unavailable on this kernel: ${list}; other traffic is redirected as usual, DNS queries go to the nameservers directly`;
}

/**
 * mr_dns_ns and mr_dns_pol by difference. mr_dns_pol is the switch connect4/6 and sendmsg read: on the way
 * in the nameservers go first, on the way out the policy goes first. A slot that starts capturing has its
 * counters zeroed (a new policy in a slot another used before).
 */
function writeDns(pins: Pins, want: DnsEntries): { writes: number; deletes: number } {
  return pins.withMaps(['mr_dns_pol', 'mr_dns_ns', 'mr_dns_stats'], (maps) => {
    const pol = maps.get('mr_dns_pol')! as BpfMap<unknown, unknown>;
    const ns = maps.get('mr_dns_ns')! as BpfMap<unknown, unknown>;
    const stats = maps.get('mr_dns_stats')! as BpfMap<number, Record<DnsStatName, bigint>>;
    const diff = (map: BpfMap<unknown, unknown>, list: [unknown, unknown][]) => {
      const w = new Map<string, [Buffer, Buffer]>();
      for (const [k, v] of list) {
        const kb = map.key.encode(k, Buffer.alloc(map.key.size));
        w.set(kb.toString('hex'), [kb, map.value.encode(v, Buffer.alloc(map.value.size))]);
      }
      const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('hex'), v]));
      return {
        changed: [...w.values()].filter(([kb, vb]) => !have.get(kb.toString('hex'))?.equals(vb)),
        gone: [...have.keys()].filter((h) => !w.has(h)).map((h) => Buffer.from(h, 'hex')),
        fresh: [...w.keys()].filter((h) => !have.has(h)),
      };
    };
    const dp = diff(pol, want.mr_dns_pol as [unknown, unknown][]);
    const dn = diff(ns, want.mr_dns_ns as [unknown, unknown][]);
    const zero = Object.fromEntries(DNS_STAT_FIELDS.map((f) => [f, 0n])) as Record<DnsStatName, bigint>;
    for (const h of dp.fresh) stats.set(Buffer.from(h, 'hex').readUInt32LE(0), zero);
    let writes = ns.setManyRaw(dn.changed);
    writes += pol.setManyRaw(dp.changed);
    let deletes = pol.deleteManyRaw(dp.gone);
    deletes += ns.deleteManyRaw(dn.gone);
    return { writes, deletes };
  });
}

export type { Covered };
