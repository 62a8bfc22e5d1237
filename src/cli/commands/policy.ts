// policy.ts — `meshredir policy check FILE|DIR`: validate policies without applying them.
import { Command } from 'commander';
import { sharedSchema, shared, parseOptions } from '../options.js';
import { printJson, table, UserError } from '../output.js';

const flags = sharedSchema(['json']);

const check = shared(
  new Command('check')
    .description('validate policy files (a file or a directory of *.yaml) without applying anything')
    .argument('<path>', 'policy file or directory'),
  ['json'],
).action(async (path: string, raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const [{ loadPolicies, formatError }, { checkCapacity }, { MAP_CAPACITY, LIMITS }] = await Promise.all([
    import('../../policy/load.js'),
    import('../../policy/capacity.js'),
    import('../../policy/limits.js'),
  ]);
  let set;
  try {
    set = await loadPolicies(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new UserError(`${path}: ${code === 'ENOENT' ? 'no such file or directory' : (e as Error).message}`);
  }
  // The same limits as the agent's (applied while reading), and whether the set fits in the eBPF maps
  // (every cgroup counted as existing: the most the maps could have to hold).
  const fit = checkCapacity(set.policies, MAP_CAPACITY, LIMITS.policies);
  const refused = new Set(fit.rejected.map((r) => r.policy));
  set = {
    ...set,
    policies: set.policies.filter((p) => !refused.has(p)),
    errors: [
      ...set.errors,
      ...fit.rejected.map((r) => ({
        file: r.policy.file,
        path: '',
        message: r.message.replace(`${r.policy.file}: `, ''),
      })),
    ],
  };
  const warnings = set.warnings ?? [];
  if (o.json) {
    printJson({
      ok: set.errors.length === 0,
      policies: set.policies.map((p) => ({ name: p.name, file: p.file, cgroup: p.cgroup })),
      errors: set.errors,
      warnings,
    });
  } else {
    if (set.policies.length)
      console.log(
        table(
          ['policy', 'cgroup', 'file'],
          set.policies.map((p) => [p.name, p.cgroup, p.file]),
        ),
      );
    for (const w of warnings) console.error(`warning: ${formatError(w)}`);
    for (const e of set.errors) console.error(formatError(e));
    const n = set.policies.length;
    console.log(set.errors.length ? `${set.errors.length} error(s)` : `${n} valid polic${n === 1 ? 'y' : 'ies'}`);
  }
  if (set.errors.length) process.exitCode = 1;
});

export const policyCommand = new Command('policy').description('work with policy files').addCommand(check);
