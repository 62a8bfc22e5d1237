// notes.ts — what the eBPF mode's apply tells the agent: per-policy outcomes, what loading did (and what it
// found changed), what writing did (policies rolled back, entries changed from outside, room made first).
import type { Policy } from '../../policy/schema.js';
import type { MapName } from '../../bpf/abi.js';
import type { Note, PolicyOutcome } from '../mode.js';
import type { Desired } from './desired.js';
import type { LoadReport } from './load.js';
import type { WriteReport } from './write.js';

/**
 * What writing said: policies rolled back, entries someone else had changed (a map that differs from what
 * was written last while what is wanted is unchanged), room made first. `last`: the maps as the last clean
 * apply wrote them; returns what to remember for the next one.
 */
export function writeNotes(
  w: WriteReport,
  desired: Desired,
  names: Map<number, string>,
  last: WriteReport['maps'] | undefined,
): { notes: Note[]; lastWritten: WriteReport['maps'] | undefined } {
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
  return { notes, lastWritten: w.failed.size ? undefined : w.maps };
}

/** The maps' capacities as the writer takes them. */
export const capacitiesOf = (d: Desired): Partial<Record<MapName, number>> => ({ ...d.capacities });

export function outcomes(policies: Policy[], d: Desired, unwritten: ReadonlyMap<string, string>): PolicyOutcome[] {
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

export function loadNotes(rep: LoadReport, first: boolean): Note[] {
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
