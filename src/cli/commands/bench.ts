// bench.ts — `meshredir bench`: eBPF vs iptables vs direct on this machine, side by side.
import { Command } from 'commander';
import { z } from 'zod';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { release, cpus } from 'node:os';
import type { Scenario, Sample, Missing } from '../../bench/bench.js';
import type { RunJson } from '../../bench/runmeta.js';
import { DEFAULT_OBJECT, ROOT } from '../paths.js';
import { UserError } from '../output.js';
import { parseOptions } from '../options.js';

const root = ROOT;

// Kept here (not imported from the bench module) so that loading the CLI does not load the bench
// and its chart renderer: the agent's memory and start time are among the things measured.
const SCENARIOS = [
  'crr',
  'scale',
  'proxy',
  'hop',
  'hooks',
  'inbound',
  'dns',
  'control',
] as const satisfies readonly Scenario[];
/** The full run's defaults, and the quick run's (every scenario once, short measurements). */
const FULL = { rounds: 5, duration: 3 };
const QUICK = { rounds: 1, duration: 0.5, hopSizes: [64, 65536] };

const flags = z.object({
  only: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()))
    .pipe(z.array(z.enum(SCENARIOS))),
  rounds: z.coerce.number().int().min(1).max(50).optional(),
  duration: z.coerce.number().min(0.2).max(60).optional(),
  out: z.string(),
  quick: z.boolean().optional(),
  docs: z.boolean().optional(),
  from: z.string().optional(),
  hooksAgent: z.string().optional(),
  placement: z.enum(['split', 'same', 'none']).optional(),
  retries: z.coerce.number().int().min(0).max(5).optional(),
  aa: z.string().optional(),
  modes: z
    .string()
    .transform((s) => s.split(',').map((x) => x.trim()))
    .optional(),
});

export const benchCommand = new Command('bench')
  .description(
    'measure direct, iptables, eBPF and eBPF+sk_msg side by side (and inbound interception: REDIRECT, TPROXY, sk_lookup; DNS capture: queries/s through it vs direct) in namespaces it creates and removes (root)',
  )
  .option('--only <list>', `scenarios, comma-separated: ${SCENARIOS.join(',')}`, SCENARIOS.join(','))
  .option(
    '--rounds <n>',
    `rounds (modes interleaved within each round, their order rotated each round) (default: ${FULL.rounds}; --quick: ${QUICK.rounds})`,
  )
  .option('--duration <seconds>', `seconds per measurement (default: ${FULL.duration}; --quick: ${QUICK.duration})`)
  .option(
    '--quick',
    `a run under a minute: every scenario (or --only's) once, ${QUICK.duration} s measurements, hop sizes ${QUICK.hopSizes.join(' and ')} B only`,
  )
  .option(
    '--out <dir>',
    'where the JSON (every raw sample), the SVG chart and the markdown go',
    join(root, 'bench-results'),
  )
  .option(
    '--docs',
    "also write the results into docs/benchmarks.md (its generated section), docs/benchmarks.{json,svg} and the README's measured results (with --only: those scenarios' results only; not with --modes or --aa)",
  )
  .option(
    '--placement <how>',
    'CPUs of the crr and scale processes: split (client on CPU 0, server and a second client on the last CPU), same (all on CPU 0), none (where the scheduler puts them; the other scenarios always run so)',
    'split',
  )
  .option(
    '--retries <n>',
    'measure a sample again, up to N times, when something else used more than 0.3 of a core where the bench runs (default: 2)',
  )
  .option(
    '--aa <mode>',
    'A/A check: measure MODE twice, as itself and as "MODE (A/A)" (crr, proxy): their ratio shows the noise of the run',
  )
  .option(
    '--modes <list>',
    "only these modes of each scenario, comma-separated (the scenario's baseline is always measured)",
  )
  .option(
    '--hooks-agent <cli>',
    "hooks: profile the programs of another build's agent (its dist/cli/main.js), e.g. the previous release, for before/after",
  )
  .option(
    '--from <json>',
    'measure nothing: render the outputs (and with --docs the docs) again from the JSON of an earlier run',
  )
  .action(async (raw: Record<string, unknown>) => {
    const o = parseOptions(flags, raw);
    const { summarise, renderTable, renderMarkdown } = await import('../../bench/report.js');
    const { renderSvg } = await import('../../bench/chart.js');
    if (o.from) {
      let run: { meta: Record<string, unknown>; missing?: Missing[]; samples: Sample[] };
      try {
        run = JSON.parse(readFileSync(o.from, 'utf8')) as typeof run;
      } catch (e) {
        throw new UserError(`--from: ${(e as Error).message}`, 2);
      }
      if (!Array.isArray(run.samples) || typeof run.meta !== 'object')
        throw new UserError(`--from: ${o.from} is not the JSON of a bench run`, 2);
      const rows = summarise(run.samples);
      console.log(renderTable(rows, run.missing ?? [], run.samples));
      if (o.docs) await writeDocs(run.meta, run.samples, run.missing ?? []);
      return;
    }
    // The documented results are whole scenarios with every mode: a run that left modes out (--modes)
    // or added an A/A copy (--aa) would replace a scenario's documented rows with a partial or odd set.
    if (o.docs && (o.modes || o.aa))
      throw new UserError(
        `--docs: not with ${o.modes ? '--modes' : '--aa'} (the documented results keep every mode of a scenario, and no A/A copy)`,
        2,
      );
    const { runBench, WARMUP } = await import('../../bench/bench.js');
    const preset = o.quick ? QUICK : FULL;
    const rounds = o.rounds ?? preset.rounds;
    const duration = o.duration ?? preset.duration;
    const hopSizes = o.quick ? QUICK.hopSizes : undefined;
    const started = Date.now();
    const { samples, missing, env } = await runBench({
      only: o.only,
      rounds,
      duration,
      ...(hopSizes ? { hopSizes } : {}),
      object: DEFAULT_OBJECT,
      mrload: join(root, 'build', 'mrload'),
      cli: join(root, 'dist', 'cli', 'main.js'),
      hookprof: join(root, 'build', 'meshredir-prof.bpf.o'),
      ...(o.hooksAgent ? { hooksAgent: o.hooksAgent } : {}),
      ...(o.placement ? { placement: o.placement } : {}),
      ...(o.aa ? { aa: o.aa } : {}),
      ...(o.retries === undefined ? {} : { retries: o.retries }),
      ...(o.modes ? { modes: o.modes } : {}),
      progress: (line) => process.stderr.write(`${line}\n`),
    });
    const meta = {
      date: new Date().toISOString(),
      kernel: release(),
      cpus: cpus().length,
      rounds,
      duration,
      warmup: WARMUP,
      only: o.only,
      quick: !!o.quick,
      tcp_rmem: env.tcp_rmem,
      placement: env.placement,
      retries: o.retries ?? 2,
      seconds: (Date.now() - started) / 1000,
    };
    const rows = summarise(samples);
    mkdirSync(o.out, { recursive: true });
    const stamp = meta.date.replace(/[:.]/g, '-');
    writeFileSync(join(o.out, `bench-${stamp}.json`), JSON.stringify({ meta, missing, rows, samples }, null, 2));
    writeFileSync(join(o.out, `bench-${stamp}.svg`), await renderSvg(rows));
    writeFileSync(join(o.out, `bench-${stamp}.md`), renderMarkdown(rows, meta, samples, missing));
    console.log(renderTable(rows, missing, samples));
    console.log(
      `raw samples, chart and markdown: ${join(o.out, `bench-${stamp}.{json,svg,md}`)} (${meta.seconds.toFixed(0)} s)`,
    );
    if (o.docs) await writeDocs(meta, samples, missing);
    const rejected = samples.filter((s) => s.invalid).length;
    if (rejected)
      throw new Error(
        `${rejected} of ${samples.length} samples were rejected (listed above): their medians are over fewer samples, or missing`,
      );
  });

/** The documented run: docs/benchmarks.{json,svg}, the generated section of docs/benchmarks.md and
 * the README's measured results. The method and the reading around them are written by hand. A run
 * of some scenarios (--only) replaces only theirs: the others stay as the documented run had them,
 * and the results' header says which scenarios were measured when. */
async function writeDocs(meta: Record<string, unknown>, samples: Sample[], missing: Missing[]): Promise<void> {
  const { updateDocs } = await import('../../bench/docs.js');
  const { renderSvg } = await import('../../bench/chart.js');
  const docs = join(root, 'docs');
  const json = join(docs, 'benchmarks.json');
  const md = join(docs, 'benchmarks.md');
  const readme = join(root, 'README.md');
  let old: RunJson | undefined;
  if (existsSync(json)) {
    try {
      old = JSON.parse(readFileSync(json, 'utf8')) as RunJson;
    } catch (e) {
      throw new UserError(`--docs: ${json} is not the JSON of a bench run (${(e as Error).message})`, 2);
    }
  }
  const u = updateDocs(old, { meta, missing, samples }, SCENARIOS, {
    benchmarksMd: readFileSync(md, 'utf8'),
    readme: readFileSync(readme, 'utf8'),
  });
  writeFileSync(json, JSON.stringify(u.run, null, 2));
  writeFileSync(join(docs, 'benchmarks.svg'), await renderSvg(u.rows));
  writeFileSync(md, u.benchmarksMd);
  writeFileSync(readme, u.readme);
  const kept = (u.run.meta.only as string[]).filter((s) => !(meta.only as string[]).includes(s));
  console.log(
    `docs: ${md} (generated section), ${join(docs, 'benchmarks.{json,svg}')}, ${readme} (measured results)${kept.length ? `; kept from the documented run: ${kept.join(', ')}` : ''}`,
  );
}
