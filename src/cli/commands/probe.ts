// probe.ts — `meshredir probe`: what this kernel can do and which mode auto would choose.
import { Command, Option } from 'commander';
import { existsSync } from 'node:fs';
import { z } from 'zod';
import { shared, sharedSchema, parseOptions } from '../options.js';
import { printJson, table } from '../output.js';
import { DEFAULT_OBJECT } from '../paths.js';

const flags = sharedSchema(['json']).extend({ cgroupParent: z.string().optional(), object: z.string() });

export const probeCommand = shared(
  new Command('probe')
    .description(
      "test what this kernel and process can do (by loading tiny programs and meshredir's own) and which mode auto would choose",
    )
    .option(
      '--cgroup-parent <path>',
      'cgroup under which the probe makes (and removes) its throwaway cgroup (default: the cgroup2 root)',
    )
    .addOption(new Option('--object <path>', 'BPF object').default(DEFAULT_OBJECT).hideHelp()),
  ['json'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const [{ probe, FEATURES }, { resolveCgroupArg }] = await Promise.all([
    import('../../probe/probe.js'),
    import('../../util/host.js'),
  ]);
  const r = probe({
    ...(o.cgroupParent ? { cgroupParent: resolveCgroupArg(o.cgroupParent) } : {}),
    ...(existsSync(o.object) ? { object: o.object } : {}),
  });
  if (o.json) return printJson(r);
  const rows: (string | boolean)[][] = FEATURES.map((f) => [f, r.features[f] ? 'yes' : 'no', r.why[f] ?? '']);
  rows.push(['iptables (nft)', r.features.iptables.nft ? 'yes' : 'no', r.why['iptables.nft'] ?? '']);
  rows.push(['iptables (legacy)', r.features.iptables.legacy ? 'yes' : 'no', r.why['iptables.legacy'] ?? '']);
  rows.push([
    'meshredir.bpf.o',
    r.object ? (r.object.loads && r.object.attaches ? 'yes' : 'no') : 'not tried',
    r.object ? (r.object.why ?? '') : `${o.object} not found (run make build)`,
  ]);
  console.log(`kernel   ${r.kernel} (libbpf ${r.libbpf})`);
  console.log(`cgroup2  ${r.cgroup2 ?? 'not mounted'}`);
  console.log(`bpffs    ${r.bpffs ?? 'not mounted (the agent mounts it at /sys/fs/bpf)'}`);
  console.log(table(['feature', 'works', 'why not'], rows));
  console.log(`mode: ${r.mode} — ${r.reason}`);
});
