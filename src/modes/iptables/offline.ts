// offline.ts — what policy files become in iptables mode, from the files alone (no netns is read): the
// exact iptables-restore input per policy and family, and which policies the mode would refuse.
import type { Policy } from '../../policy/schema.js';
import { underRoot } from '../../policy/scope.js';
import type { DryRun } from '../mode.js';
import { ignoredFields } from './rules.js';
import { policyFamilies, renderPolicy, unsupportedAll } from './tables.js';
import { routeCommands, tproxyRoutes } from './tproxy.js';

/** Policies that would end up in one netns, as far as the files alone can tell. */
export function sharedNetns(policies: Policy[]): Map<string, string> {
  const why = new Map<string, string>();
  for (const p of policies) {
    for (const o of policies) {
      if (o === p) continue;
      if (p.netns && p.netns === o.netns) why.set(p.name, `spec.netns ${p.netns} is also that of policy ${o.name}`);
      else if (!p.netns && !o.netns && (underRoot(p.cgroup, o.cgroup) || underRoot(o.cgroup, p.cgroup))) {
        why.set(
          p.name,
          `cgroup ${p.cgroup} and cgroup ${o.cgroup} of policy ${o.name} are one subtree, so their processes share one network namespace`,
        );
      }
    }
  }
  return why;
}

/** The restore input of every policy the mode would apply (per family), and why the others are refused. */
export function renderFiles(policies: Policy[], o: { family?: 4 | 6; lockWait: number }): DryRun {
  const out: string[] = [];
  const messages: string[] = [];
  let ok = true;
  const shared = sharedNetns(policies);
  for (const p of policies) {
    const why = [
      ...unsupportedAll(p),
      ...(shared.has(p.name) ? [`one policy per network namespace: ${shared.get(p.name)!}`] : []),
    ];
    if (why.length) {
      ok = false;
      for (const w of why) messages.push(`${p.file}: ${p.name}: not applied in iptables mode: ${w}`);
      continue;
    }
    for (const n of ignoredFields(p)) messages.push(`${p.file}: ${p.name}: ${n}`);
    for (const family of policyFamilies(p).filter((f) => !o.family || f === o.family)) {
      const tool = family === 4 ? 'iptables' : 'ip6tables';
      out.push(
        `# ${p.name} (${p.file}), IPv${family}: the agent runs \`${tool}-<nft|legacy>-restore --noflush -w ${o.lockWait}\` in the pod netns with this input\n` +
          `# (the -A OUTPUT/-A PREROUTING jump lines are left out where that netns already has them)\n` +
          (p.bypass.cgroups.length
            ? `# (a bypass cgroup that does not exist then is left out: the kernel refuses a -m cgroup path that does not exist)\n`
            : ''),
        renderPolicy(p, family),
        ...tproxyRoutes(p, family).map(
          (r) =>
            `# then, when missing: ${routeCommands(r)
              .map((c) => c.join(' '))
              .join('; ')}\n`,
        ),
      );
    }
  }
  return { text: out.join(''), messages, ok };
}
