// iptables-rules.ts — `meshredir iptables-rules FILE`: the exact iptables-restore input a policy file
// becomes in iptables mode, without applying anything; policies the mode would not apply are named on
// stderr (with why) and make the exit code 1.
import { Command, Option } from 'commander';
import { z } from 'zod';
import { shared, sharedSchema, parseOptions } from '../options.js';
import { UserError } from '../output.js';

const flags = sharedSchema(['lockWait']).extend({ family: z.enum(['4', '6']).optional() });

export const iptablesRulesCommand = shared(
  new Command('iptables-rules')
    .description(
      'print the iptables-restore input (nat table, MESHREDIR_* chains and the jumps into them) that a policy file becomes in iptables mode',
    )
    .argument('<path>', 'policy file or directory')
    .addOption(new Option('--family <n>', 'only IPv4 (4) or IPv6 (6)').choices(['4', '6'])),
  ['lockWait'],
).action(async (path: string, raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const [{ loadPolicies, formatError }, { renderFiles }] = await Promise.all([
    import('../../policy/load.js'),
    import('../../modes/iptables/offline.js'),
  ]);
  const set = await loadPolicies(path).catch((e: Error) => {
    throw new UserError(`${path}: ${e.message}`);
  });
  for (const e of set.errors) console.error(formatError(e));
  const d = renderFiles(set.policies, {
    lockWait: o.lockWait,
    ...(o.family ? { family: Number(o.family) as 4 | 6 } : {}),
  });
  for (const m of d.messages) console.error(m);
  process.stdout.write(d.text ?? '');
  if (!d.ok || set.errors.length) process.exitCode = 1;
});
