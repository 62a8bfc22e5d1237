// scope.ts — which cgroups of a policy set lie outside the cgroup where the programs attach (the hooks
// run only for tasks at or below it): pure, so it is unit-tested without root.
import type { Policy } from './schema.js';
import { within } from '../util/host.js';

export interface OutOfScope {
  policy: string;
  field: 'spec.cgroup' | 'spec.proxy.bypass.cgroups';
  cgroup: string;
  message: string;
}

/** Whether cgroup path `p` is `root` or below it (both normalised policy paths such as /pods/a). */
export function underRoot(p: string, root: string): boolean {
  return within(p, root);
}

/** The policy and bypass cgroups that are not at or below `root` (a policy path), with why it matters. */
export function outsideRoot(policies: Policy[], root: string): OutOfScope[] {
  const out: OutOfScope[] = [];
  for (const p of policies) {
    if (!underRoot(p.cgroup, root)) {
      out.push({
        policy: p.name,
        field: 'spec.cgroup',
        cgroup: p.cgroup,
        message: `${p.file}: policy ${p.name}: cgroup ${p.cgroup} is outside --cgroup-root ${root}, where the programs are attached: the hooks do not run there, so nothing from it is redirected`,
      });
    }
    for (const b of p.bypass.cgroups) {
      if (underRoot(b, root)) continue;
      out.push({
        policy: p.name,
        field: 'spec.proxy.bypass.cgroups',
        cgroup: b,
        message: `${p.file}: policy ${p.name}: bypass cgroup ${b} is outside --cgroup-root ${root}: the hooks never run there, so this entry has no effect`,
      });
    }
  }
  return out;
}
