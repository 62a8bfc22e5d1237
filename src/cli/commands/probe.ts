// probe.ts — `meshredir probe`: what this kernel can do and which mode auto would choose.
import { Command } from 'commander';
import { probe, FEATURES } from '../../probe/probe.js';
import { printJson, table } from '../output.js';

export const probeCommand = new Command('probe')
  .description('test what this kernel and process can do (by loading tiny programs) and which mode auto would choose')
  .option('--json', 'print one JSON object')
  .action((opts: { json?: boolean }) => {
    const r = probe();
    if (opts.json) return printJson(r);
    const rows: (string | boolean)[][] = FEATURES.map((f) => [f, r.features[f] ? 'yes' : 'no', r.why[f] ?? '']);
    rows.push(['iptables (nft)', r.features.iptables.nft ? 'yes' : 'no', r.why['iptables.nft'] ?? '']);
    rows.push(['iptables (legacy)', r.features.iptables.legacy ? 'yes' : 'no', r.why['iptables.legacy'] ?? '']);
    console.log(`kernel   ${r.kernel} (libbpf ${r.libbpf})`);
    console.log(`cgroup2  ${r.cgroup2 ?? 'not mounted'}`);
    console.log(`bpffs    ${r.bpffs ?? 'not mounted (the agent mounts it at /sys/fs/bpf)'}`);
    console.log(table(['feature', 'works', 'why not'], rows));
    console.log(`mode: ${r.mode} — ${r.reason}`);
  });
