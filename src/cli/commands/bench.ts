// bench.ts — `meshredir bench`: eBPF vs iptables vs direct on this machine, side by side.
import { Command } from 'commander';
import { z } from 'zod';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { release, cpus } from 'node:os';
import type { Scenario } from '../../bench/bench.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { UserError } from '../output.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// Kept here (not imported from the bench module) so that loading the CLI does not load the bench
// and its chart renderer: the agent's memory and start time are among the things measured.
const SCENARIOS = ['crr', 'scale', 'proxy', 'hop', 'control'] as const satisfies readonly Scenario[];

const flags = z.object({
  only: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(z.enum(SCENARIOS))),
  rounds: z.coerce.number().int().min(1).max(50),
  duration: z.coerce.number().min(0.2).max(60),
  out: z.string(),
  quick: z.boolean().optional(),
});

export const benchCommand = new Command('bench')
  .description('measure direct, iptables, eBPF and eBPF+sk_msg side by side in namespaces it creates and removes (root)')
  .option('--only <list>', `scenarios, comma-separated: ${SCENARIOS.join(',')}`, SCENARIOS.join(','))
  .option('--rounds <n>', 'rounds (modes interleaved within each round)', '5')
  .option('--duration <seconds>', 'seconds per measurement', '3')
  .option('--quick', 'a run under a minute: crr and control only, 1 s measurements')
  .option('--out <dir>', 'where the JSON (every raw sample), the SVG chart and the markdown go', join(root, 'bench-results'))
  .action(async (raw: Record<string, unknown>) => {
    const r = flags.safeParse(raw);
    if (!r.success) throw new UserError(r.error.issues.map((i) => `--${String(i.path[0])}: ${i.message}`).join('\n'), 2);
    const o = r.data;
    const { runBench } = await import('../../bench/bench.js');
    const { summarise, renderTable, renderSvg, renderMarkdown } = await import('../../bench/report.js');
    const only: Scenario[] = o.quick ? ['crr', 'control'] : o.only;
    const duration = o.quick ? 1 : o.duration;
    const started = Date.now();
    const { samples } = await runBench({
      only,
      rounds: o.rounds,
      duration,
      object: DEFAULT_OBJECT,
      mrload: join(root, 'build', 'mrload'),
      cli: join(root, 'dist', 'cli', 'main.js'),
      progress: (line) => process.stderr.write(`${line}\n`),
    });
    const meta = { date: new Date().toISOString(), kernel: release(), cpus: cpus().length, rounds: o.rounds, duration, only, seconds: (Date.now() - started) / 1000 };
    const rows = summarise(samples);
    mkdirSync(o.out, { recursive: true });
    const stamp = meta.date.replace(/[:.]/g, '-');
    writeFileSync(join(o.out, `bench-${stamp}.json`), JSON.stringify({ meta, rows, samples }, null, 2));
    writeFileSync(join(o.out, `bench-${stamp}.svg`), await renderSvg(rows));
    writeFileSync(join(o.out, `bench-${stamp}.md`), renderMarkdown(rows, meta));
    console.log(renderTable(rows));
    console.log(`raw samples, chart and markdown: ${join(o.out, `bench-${stamp}.{json,svg,md}`)} (${meta.seconds.toFixed(0)} s)`);
  });
