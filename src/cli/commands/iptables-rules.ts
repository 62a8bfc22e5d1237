// iptables-rules.ts — `meshredir iptables-rules FILE`: the exact iptables-restore input a policy
// file becomes in iptables mode, without applying anything.
import { Command, Option } from 'commander';
import { loadPolicies, formatError } from '../../policy/load.js';
import { renderRestore, jumpRules, unsupported, ignoredFields } from '../../modes/iptables/rules.js';
import { UserError } from '../output.js';

export const iptablesRulesCommand = new Command('iptables-rules')
  .description('print the iptables-restore input (nat table, MESHREDIR_* chains) that a policy file becomes in iptables mode')
  .argument('<path>', 'policy file or directory')
  .addOption(new Option('--family <n>', 'only IPv4 (4) or IPv6 (6)').choices(['4', '6']))
  .action(async (path: string, o: { family?: '4' | '6' }) => {
    const set = await loadPolicies(path).catch((e: Error) => {
      throw new UserError(`${path}: ${e.message}`);
    });
    for (const e of set.errors) console.error(formatError(e));
    for (const p of set.policies) {
      for (const why of unsupported(p)) console.error(`${p.file}: ${p.name}: not supported in iptables mode: ${why}`);
      for (const n of ignoredFields(p)) console.error(`${p.file}: ${p.name}: ${n}`);
      for (const family of o.family ? [Number(o.family) as 4 | 6] : ([4, 6] as const)) {
        process.stdout.write(`# ${p.name} (${p.file}): ${family === 4 ? 'iptables' : 'ip6tables'}-restore --noflush\n`);
        process.stdout.write(renderRestore(p, { family }));
        for (const j of jumpRules(p, { family })) process.stdout.write(`# then, if missing: ${family === 4 ? 'iptables' : 'ip6tables'} ${j.join(' ')}\n`);
      }
    }
    if (set.errors.length) process.exitCode = 1;
  });
