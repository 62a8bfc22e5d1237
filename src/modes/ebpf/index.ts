// index.ts — the eBPF mode: meshredir.bpf.o loaded (or re-adopted) with its maps and links pinned under
// the bpffs directory, policy maps written by difference, status from the pins, verify by a throwaway
// process, cleanup that keeps what open fast-path sockets still use.
import type { Policy } from '../../policy/schema.js';
import { outsideRoot } from '../../policy/scope.js';
import { cgroupId, cgroupPathOf } from '../../util/host.js';
import type {
  ApplyResult,
  AttachConfig,
  CleanupReport,
  Mode,
  ModeConfig,
  Note,
  Plan,
  PolicyOutcome,
  VerifyRequest,
} from '../mode.js';
import { Pins } from './pins.js';
import { load, type LoadReport } from './load.js';
import { capacities, desiredState, type Desired } from './desired.js';
import { writeEntries, type WriteReport } from './write.js';
import type { MapName } from '../../bpf/abi.js';
import { fastPath, pendingDrift } from './counters.js';
import { ebpfStatus } from './status.js';
import { ebpfVerify } from './verify.js';
import { cleanupPins } from './cleanup.js';

interface EbpfPlan extends Plan {
  readonly desired: Desired;
}

export class EbpfMode implements Mode {
  readonly name = 'ebpf' as const;
  readonly pins: Pins;
  /** What the last load attached (link name → program id) and pinned (map name → id). */
  private expectedProgs = new Map<string, number>();
  private expectedMaps = new Map<string, number | undefined>();
  /** The gap between the pending gauge and the records, at the last apply. */
  private lastDrift = 0n;
  /** The version of each policy this process wrote last: kept when a new version does not fit. */
  private previous = new Map<string, Policy>();
  /** Per map, the fingerprint of what the last clean apply wrote: a difference found while it is
   * unchanged was made by someone else. */
  private lastWritten?: WriteReport['maps'];

  constructor(readonly cfg: Pick<ModeConfig, 'bpffs' | 'attach'>) {
    this.pins = new Pins(cfg.bpffs);
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
  private desired(policies: Policy[]): Desired {
    return desiredState(this.pins, policies, {
      fastPath: !this.pins.has('mr_slots') || fastPath(this.pins).usable,
      capacities: capacities(this.pins, this.cfg.attach?.object),
      previous: this.previous,
    });
  }

  plan(policies: Policy[]): EbpfPlan {
    const desired = this.desired(policies);
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
      desired,
      policies: outcomes(policies, desired, new Map()),
      notes,
      render: () => ({
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
          entries: desired.entries,
        },
        messages: [
          ...desired.unresolved.map(
            (u) =>
              `${u.field === 'spec.cgroup' ? 'cgroup' : 'bypass cgroup'} ${u.cgroup} of policy ${u.policy} does not exist (yet): no entries for it until it does`,
          ),
          ...desired.rejected.map((r) => r.message),
          ...desired.failed.map((r) => r.message),
          ...outside.map((x) => x.message),
        ],
        ok: desired.rejected.length === 0 && desired.failed.length === 0,
      }),
    };
  }

  apply(plan: Plan): ApplyResult {
    const notes: Note[] = [...plan.notes];
    let loaded = false;
    if (!this.intact()) {
      // Something this process attached or pinned is not as it left it: someone else changed it.
      const damage = this.expectedProgs.size ? this.damage() : [];
      if (damage.length)
        notes.push({
          level: 'warn',
          event: 'repaired',
          message: `changed behind the agent's back (not by this agent): ${damage.join('; ')}; loading and attaching again`,
          fields: { damage },
        });
      const first = this.expectedProgs.size === 0;
      notes.push(...loadNotes(this.load(), first));
      loaded = true;
    }
    // Loading may change what the plan assumed (slots, the fast path): then it is made again.
    const desired = loaded || !(plan as EbpfPlan).desired ? this.desired(plan.input) : (plan as EbpfPlan).desired;
    const names = new Map([...desired.slots].map(([n, s]) => [s, n]));
    const w = writeEntries(this.pins, desired.entries, { names, capacities: capacitiesOf(desired) });
    notes.push(...this.writeNotes(w, desired, names));
    notes.push(...this.driftNotes());
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
    const waiting = new Set(desired.unresolved.filter((u) => u.field === 'spec.cgroup').map((u) => u.policy));
    for (const p of desired.keep) {
      if (p.proxy.inbound && !waiting.has(p.name)) {
        notes.push({
          level: 'warn',
          event: 'unsupported',
          message: `${p.name}: spec.proxy.inbound is not supported by the eBPF mode yet (inbound interception needs sk_lookup); inbound traffic is not redirected`,
          fields: { policy: p.name, field: 'spec.proxy.inbound' },
        });
      }
    }
    const unwritten = new Map([...w.failed].map(([slot, why]) => [names.get(slot) ?? `slot ${slot}`, why]));
    // What is in the maps now, per policy: the version written, or (failed) the one before.
    const next = new Map<string, Policy>();
    for (const p of desired.keep) {
      const prev = this.previous.get(p.name);
      if (!unwritten.has(p.name)) next.set(p.name, p);
      else if (prev) next.set(p.name, prev);
    }
    this.previous = next;
    return {
      writes: w.writes,
      deletes: w.deletes,
      loaded,
      policies: outcomes(plan.input, desired, unwritten),
      notes,
    };
  }

  /** What writing said: policies rolled back, entries someone else had changed, room made first. */
  private writeNotes(w: WriteReport, desired: Desired, names: Map<number, string>): Note[] {
    const notes: Note[] = [];
    const file = new Map(desired.keep.map((p) => [p.name, p.file]));
    if (w.perPolicy)
      notes.push({
        level: 'warn',
        event: 'write_isolated',
        message: `writing the policy maps in one batch failed (${w.batchError}); what it had written was put back and the policies were written one at a time`,
      });
    for (const [slot, why] of w.failed) {
      const name = names.get(slot);
      notes.push({
        level: 'error',
        event: 'write_failed',
        message: `${name ? `${file.get(name)}: policy ${name}` : `the entries of slot ${slot} (no policy now)`}: cannot be written: ${why}; what this pass wrote of it was rolled back (what was in place before stays)`,
        fields: { policy: name ?? null, file: name ? file.get(name) : null, slot },
      });
    }
    if (w.deletedFirst.length)
      notes.push({
        level: 'info',
        event: 'room',
        message: `${w.deletedFirst.join(', ')}: stale entries removed before the new ones were written (the map had no room for both)`,
      });
    // A difference while what we want is what we wrote last: someone else edited the map.
    const last = this.lastWritten;
    const edited = last
      ? (Object.entries(w.maps) as [MapName, { written: number; deleted: number; fingerprint: string }][]).filter(
          ([m, x]) => last[m]?.fingerprint === x.fingerprint && x.written + x.deleted > 0,
        )
      : [];
    if (edited.length)
      notes.push({
        level: 'warn',
        event: 'repaired',
        message: `map entries changed behind the agent's back (not by this agent), restored: ${edited
          .map(([m, x]) => `${m} (${x.written} written back, ${x.deleted} removed)`)
          .join(', ')}`,
        fields: { maps: Object.fromEntries(edited.map(([m, x]) => [m, { written: x.written, deleted: x.deleted }])) },
      });
    this.lastWritten = w.failed.size ? undefined : w.maps;
    return notes;
  }

  /** What differs from what this process attached and pinned (for the repair warning). */
  private damage(): string[] {
    const out: string[] = [];
    const rootId = String(cgroupId(this.attach.cgroupRoot));
    const links = new Map(this.pins.links().map((l) => [l.name, l]));
    for (const [name, prog] of this.expectedProgs) {
      const l = links.get(name);
      if (!l) out.push(`link pin ${name} deleted`);
      else if (!l.attached) out.push(`link ${name} detached`);
      else if (l.progId !== prog) out.push(`link ${name} runs another program (id ${l.progId}, not ${prog})`);
      else if (l.mapId === undefined && l.cgroupId !== rootId) out.push(`link ${name} attached elsewhere`);
    }
    for (const name of links.keys()) if (!this.expectedProgs.has(name)) out.push(`unknown link pin ${name}`);
    const maps = this.pins.mapIds();
    for (const [name, id] of this.expectedMaps) {
      const cur = maps.get(name);
      if (cur === undefined) out.push(`map pin ${name} deleted`);
      else if (cur !== id) out.push(`map pin ${name} replaced by another map (id ${cur}, not ${id})`);
    }
    return out;
  }

  /** Loads and attaches; remembers what it attached and pinned, to notice a change behind our back. */
  private load(): LoadReport {
    const rep = load(this.attach, this.pins);
    this.expectedProgs = new Map(this.pins.links().map((l) => [l.name, l.progId ?? -1]));
    this.expectedMaps = this.pins.mapIds();
    return rep;
  }

  /**
   * True when every pinned link is attached at our root with the program we put there, and every map pin
   * is there and is the map we loaded with (a deleted or replaced map pin needs a load: the policy maps are
   * written through their pins).
   */
  private intact(): boolean {
    if (this.expectedProgs.size === 0) return false;
    const rootId = String(cgroupId(this.attach.cgroupRoot));
    const links = this.pins.links();
    if (links.length !== this.expectedProgs.size) return false;
    const ours = (l: (typeof links)[number]) =>
      l.attached && (l.mapId !== undefined || l.cgroupId === rootId) && this.expectedProgs.get(l.name) === l.progId;
    if (!links.every(ours)) return false;
    const maps = this.pins.mapIds();
    return [...this.expectedMaps].every(([name, id]) => id !== undefined && maps.get(name) === id);
  }

  /** Records come and go between the two reads: only a gap seen twice in a row is reported. */
  private driftNotes(): Note[] {
    const drift = pendingDrift(this.pins);
    const gap = drift.gauge - BigInt(drift.records);
    const seen = gap !== 0n && this.lastDrift === gap;
    this.lastDrift = gap;
    if (!seen) return [];
    return [
      {
        level: 'error',
        event: 'drift',
        message: `the count of handshakes in flight (${drift.gauge}) disagrees with the records in mr_orig (${drift.records}): records were deleted from outside; connects are refused past --max-connections by that count until 'meshredir cleanup' and a restart`,
        fields: { map: 'mr_gauges', gauge: String(drift.gauge), records: drift.records },
      },
    ];
  }

  status() {
    return ebpfStatus(this.pins);
  }

  verify(req: VerifyRequest) {
    return ebpfVerify(this.pins, req);
  }

  cleanup(opts: { force?: boolean; drainMs?: number }): CleanupReport {
    const r = cleanupPins(this.pins, opts);
    const kept = r.kept.length
      ? [
          `kept ${r.kept.join(', ')} for ${r.openAccelerated} socket(s) still on the fast path: the kernel keeps their fast path until they close, and these pins keep refusing kTLS on them. ` +
            'Redirection has stopped; run cleanup again once they have closed, or use --force (they then keep the fast path, without the kTLS guard).',
        ]
      : [];
    const notes: Note[] =
      r.undrained > 0
        ? [
            {
              level: 'warn',
              event: 'undrained',
              message: `${r.undrained} redirected handshake(s) were still in flight after 5 s: their proxy may not find their original destination`,
            },
          ]
        : [];
    const removed =
      r.detached.length || r.unpinned.length
        ? [`detached ${r.detached.length} link(s), removed ${r.unpinned.length} pin(s) under ${this.cfg.bpffs}`]
        : [];
    return { mode: 'ebpf', removed, kept, failed: [], notes, json: { ...r } };
  }
}

/** The maps' capacities as the writer takes them. */
const capacitiesOf = (d: Desired): Partial<Record<MapName, number>> => ({ ...d.capacities });

function outcomes(policies: Policy[], d: Desired, unwritten: ReadonlyMap<string, string>): PolicyOutcome[] {
  const rejected = new Map(d.rejected.map((r) => [r.name, r.message]));
  const failed = new Map([...d.failed.map((f): [string, string] => [f.name, f.message]), ...unwritten]);
  const waiting = new Set(d.unresolved.filter((u) => u.field === 'spec.cgroup').map((u) => u.policy));
  return policies.map((p): PolicyOutcome => {
    if (rejected.has(p.name)) return { policy: p.name, file: p.file, state: 'rejected', reason: rejected.get(p.name)! };
    if (failed.has(p.name)) return { policy: p.name, file: p.file, state: 'failed', reason: failed.get(p.name)! };
    if (waiting.has(p.name))
      return { policy: p.name, file: p.file, state: 'waiting', reason: `cgroup ${p.cgroup} does not exist yet` };
    return { policy: p.name, file: p.file, state: 'applied' };
  });
}

function loadNotes(rep: LoadReport, first: boolean): Note[] {
  const notes: Note[] = [];
  // At start, an installation found incomplete was changed while no agent ran (or a load crashed).
  if (first && rep.adoptedMaps.length && rep.attachedLinks.length) {
    notes.push({
      level: 'warn',
      event: 'repaired',
      message: `at start, ${rep.attachedLinks.join(', ')} were not attached (detached, unpinned or never finished while no agent ran); attached again`,
      fields: { links: rep.attachedLinks },
    });
  }
  if (rep.repinnedMaps.length) {
    notes.push({
      level: 'warn',
      event: 'repinned',
      message: `map pins ${rep.repinnedMaps.join(', ')} had been deleted; pinned again from the maps the attached programs use (contents kept)`,
      fields: { maps: rep.repinnedMaps },
    });
  }
  for (const [prog, why] of Object.entries(rep.rebound)) {
    notes.push({
      level: 'warn',
      event: 'rebound',
      message: `${prog} used other maps than the pinned ones (${why}); its link now runs the program on the pinned maps`,
      fields: { program: prog },
    });
  }
  notes.push({ level: 'info', event: 'loaded', message: 'programs loaded and attached', fields: { ...rep } });
  for (const [prog, why] of Object.entries(rep.unavailable)) {
    notes.push({
      level: 'warn',
      event: 'unavailable',
      message: `${prog} not attached (${why}): policies with accelerate use the normal path`,
      fields: { program: prog },
    });
  }
  return notes;
}
