// bench.ts — `meshredir bench`: every mode measured in one run on one machine, modes interleaved
// round by round (A B C, then B C A, …), medians and min–max, ratios to a baseline. Every sample
// carries the counters of the mode that was in force and is rejected when they show that the mode did
// not act; a mode that cannot run here is reported missing with the reason, never faked. This file
// runs the scenarios registered in scenarios.ts, each in a file of its own, on a Run (run.ts).
import { Lab } from './lab.js';
import { Run, SERVER } from './run.js';
import { SCENARIOS, plannedSteps, type Scenario } from './scenarios.js';
import { AA, baseMode, type BenchOptions, type BenchResult } from './types.js';
import { BASELINE } from './report.js';

export { rotate } from './run.js';
export { plannedSteps, type Scenario } from './scenarios.js';
export { WARMUP, HOP_SIZES, type BenchOptions, type BenchResult, type Sample, type Missing } from './types.js';

export async function runBench(o: BenchOptions): Promise<BenchResult> {
  const lab = new Lab();
  const r = new Run(o, lab);
  try {
    r.probe();
    const only = o.only as Scenario[];
    const why = (s: Scenario, m: string) =>
      SCENARIOS[s].missing?.(baseMode(m)) ?? r.unavailable.get(baseMode(m)) ?? notAsked(o, s, m);
    const all = (s: Scenario) => withAa(o, s);
    r.plan(plannedSteps(only, o.rounds, r.hopSizes, (s) => all(s).filter((m) => !why(s, m)).length));
    const tcpRmem = r.tcpRmem();
    r.server = lab.start(r.srvCg, o.mrload, ['server', SERVER], undefined, lab.ns, 'server');
    await lab.listening(9000, r.server);

    // In the registry's order, whatever the order of --only.
    for (const [name, def] of Object.entries(SCENARIOS) as [Scenario, (typeof SCENARIOS)[Scenario]][]) {
      if (!only.includes(name)) continue;
      /** The modes of the scenario that can run; the others are recorded as missing, once. */
      const modes = all(name).filter((m) => {
        const w = why(name, m);
        if (w && w !== SKIPPED) r.missing.push({ scenario: name, mode: m, reason: w });
        return !w;
      });
      // --placement applies to the scenarios where pinning was measured to tighten A/A (crr, scale);
      // the others run where the scheduler puts them (docs/benchmarks.md, "CPU placement").
      lab.placement = 'pinned' in def && def.pinned ? r.placement : 'none';
      await def.run(r, modes);
    }
    return {
      samples: r.samples,
      missing: r.missing,
      env: {
        netns: lab.ns,
        cgroup: lab.cgRoot,
        tcp_rmem: tcpRmem,
        placement: r.placement,
        seconds: (performance.now() - r.started) / 1000,
      },
    };
  } finally {
    await r.close();
  }
}

const SKIPPED = 'not asked for (--modes)';

/** A mode left out by --modes (the scenario's baseline never is: the ratios need it). */
function notAsked(o: BenchOptions, s: Scenario, m: string): string | undefined {
  if (!o.modes || m === BASELINE[s] || o.modes.includes(m) || o.modes.includes(baseMode(m))) return undefined;
  return SKIPPED;
}

/** A scenario's modes, with `--aa MODE`'s copy right after MODE where the scenario allows it. */
export function withAa(o: Pick<BenchOptions, 'aa'>, s: Scenario): string[] {
  const def = SCENARIOS[s];
  const modes: string[] = [...def.modes];
  if (!o.aa || !('aa' in def && def.aa) || !modes.includes(o.aa)) return modes;
  modes.splice(modes.indexOf(o.aa) + 1, 0, `${o.aa}${AA}`);
  return modes;
}
