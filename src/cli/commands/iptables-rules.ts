// iptables-rules.ts — `meshredir iptables-rules FILE`: the exact iptables-restore input a policy
// file becomes in iptables mode, without applying anything; policies the mode would not apply are
// named on stderr (with why) and make the exit code 1.
import { Command, Option } from 'commander';
import { loadPolicies, formatError } from '../../policy/load.js';
import type { Policy } from '../../policy/schema.js';
import { renderRestore, unsupported, ignoredFields, families } from '../../modes/iptables/rules.js';
import { UserError } from '../output.js';

/** Policies that would end up in one netns, as far as the files alone can tell. */
export function sharedNetns(policies: Policy[]): Map<string, string> {
  const why = new Map<string, string>();
  const inside = (a: string, b: string) => b === '/' || a === b || a.startsWith(`${b}/`);
  for (const p of policies) {
    for (const o of policies) {
      if (o === p) continue;
      if (p.netns && p.netns === o.netns) why.set(p.name, `spec.netns ${p.netns} is also that of policy ${o.name}`);
      else if (!p.netns && !o.netns && (inside(p.cgroup, o.cgroup) || inside(o.cgroup, p.cgroup))) {
        why.set(
          p.name,
          `cgroup ${p.cgroup} and cgroup ${o.cgroup} of policy ${o.name} are one subtree, so their processes share one network namespace`,
        );
      }
    }
  }
  return why;
}

export const iptablesRulesCommand = new Command('iptables-rules')
  .description(
    'print the iptables-restore input (nat table, MESHREDIR_* chains and the jumps into them) that a policy file becomes in iptables mode',
  )
  .argument('<path>', 'policy file or directory')
  .addOption(new Option('--family <n>', 'only IPv4 (4) or IPv6 (6)').choices(['4', '6']))
  .option('--lock-wait <seconds>', 'the -w the agent would pass (shown in the command line)', '10')
  .action(async (path: string, o: { family?: '4' | '6'; lockWait: string }) => {
    const set = await loadPolicies(path).catch((e: Error) => {
      throw new UserError(`${path}: ${e.message}`);
    });
    let refused = set.errors.length > 0;
    for (const e of set.errors) console.error(formatError(e));
    const shared = sharedNetns(set.policies);
    for (const p of set.policies) {
      const why = [
        ...unsupported(p),
        ...(shared.has(p.name) ? [`one policy per network namespace: ${shared.get(p.name)!}`] : []),
      ];
      if (why.length) {
        refused = true;
        for (const w of why) console.error(`${p.file}: ${p.name}: not applied in iptables mode: ${w}`);
        continue;
      }
      for (const n of ignoredFields(p)) console.error(`${p.file}: ${p.name}: ${n}`);
      for (const family of families(p).filter((f) => !o.family || String(f) === o.family)) {
        const tool = family === 4 ? 'iptables' : 'ip6tables';
        process.stdout.write(
          `# ${p.name} (${p.file}), IPv${family}: the agent runs \`${tool}-<nft|legacy>-restore --noflush -w ${o.lockWait}\` in the pod netns with this input\n` +
            `# (the -A OUTPUT/-A PREROUTING jump lines are left out where that netns already has them)\n`,
        );
        process.stdout.write(renderRestore(p, { family }));
      }
    }
    if (refused) process.exitCode = 1;
  });
