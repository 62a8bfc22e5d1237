// merge.ts — the agent's sources as one desired state: their policies concatenated with the claims
// between sources settled (one policy per cgroup, one per name), their gates united. Pure.
import type { Policy } from '../policy/schema.js';
import type { Gates } from '../policy/entries.js';
import type { SourceError, SourceRead } from '../sources/source.js';

export type Origin = 'file' | 'kubernetes';

export const originOf = (p: Policy): Origin => p.origin ?? 'file';

/**
 * Which origin wins a claim on one cgroup (or one name): a policy file. A file is the node's own
 * configuration, written by whoever administers the node, and names its cgroup explicitly; a pod's
 * policy is derived from a label that anyone who may edit pods or namespaces can set. A pod must never
 * take a cgroup away from the node's operator, so the pod's policy is the one left out (and said so).
 */
const RANK: Record<Origin, number> = { file: 0, kubernetes: 1 };

export interface Merged {
  policies: Policy[];
  gates: Gates;
  errors: SourceError[];
}

export function mergeSources(reads: SourceRead[]): Merged {
  const all = reads.flatMap((r) => r.policies);
  const ordered = [...all].sort((a, b) => RANK[originOf(a)] - RANK[originOf(b)]);
  const byCgroup = new Map<string, Policy>();
  const byName = new Map<string, Policy>();
  const kept = new Set<Policy>();
  const errors: SourceError[] = reads.flatMap((r) => r.errors);
  for (const p of ordered) {
    const winner = byCgroup.get(p.cgroup) ?? byName.get(p.name);
    if (winner && originOf(winner) !== originOf(p)) {
      const what = winner.cgroup === p.cgroup ? `its cgroup ${p.cgroup} is claimed by` : `its name is also the name of`;
      errors.push({
        source: originOf(p) === 'kubernetes' ? 'kubernetes' : 'files',
        object: p.file,
        message: `${p.file}: policy ${p.name} is not applied: ${what} policy ${winner.name} of ${winner.file}; a policy file wins over a pod (the node's own configuration is explicit, a pod's label is not)`,
      });
      continue;
    }
    // Claims within one source are that source's to settle (the files source does; pods cannot clash).
    if (!byCgroup.has(p.cgroup)) byCgroup.set(p.cgroup, p);
    if (!byName.has(p.name)) byName.set(p.name, p);
    kept.add(p);
  }
  const union = (k: keyof Gates) => [...new Set(reads.flatMap((r) => r.gates?.[k] ?? []))];
  return { policies: all.filter((p) => kept.has(p)), gates: { guard: union('guard'), pass: union('pass') }, errors };
}
