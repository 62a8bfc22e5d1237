// policy.ts — `meshredir policy check FILE|DIR`: validate policies without applying them.
import { Command } from 'commander';
import { loadPolicies, formatError } from '../../policy/load.js';
import { printJson, table, UserError } from '../output.js';

const check = new Command('check')
  .description('validate policy files (a file or a directory of *.yaml) without applying anything')
  .argument('<path>', 'policy file or directory')
  .option('--json', 'print one JSON object')
  .action(async (path: string, opts: { json?: boolean }) => {
    let set;
    try {
      set = await loadPolicies(path);
    } catch (e) {
      throw new UserError(
        `${path}: ${(e as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`,
      );
    }
    if (opts.json) {
      printJson({
        ok: set.errors.length === 0,
        policies: set.policies.map((p) => ({ name: p.name, file: p.file, cgroup: p.cgroup })),
        errors: set.errors,
      });
    } else {
      if (set.policies.length)
        console.log(
          table(
            ['policy', 'cgroup', 'file'],
            set.policies.map((p) => [p.name, p.cgroup, p.file]),
          ),
        );
      for (const e of set.errors) console.error(formatError(e));
      console.log(
        set.errors.length
          ? `${set.errors.length} error(s)`
          : `${set.policies.length} valid polic${set.policies.length === 1 ? 'y' : 'ies'}`,
      );
    }
    if (set.errors.length) process.exitCode = 1;
  });

export const policyCommand = new Command('policy').description('work with policy files').addCommand(check);
