// cgroup-latency.ts — the control plane's reaction time, part of the bench's control scenario: from a
// cgroup's mkdir to its policy in mr_cgroups, and from its rmdir to the stale id leaving the map. Measured
// against the real agent (a process, with --interval 600 so that only its cgroup watch can act), the map
// read by this process every few microseconds from the agent's pins.
import { existsSync, mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pins } from '../modes/ebpf/pins.js';
import { cgroupId } from '../util/host.js';
import type { Lab } from './lab.js';
import { startAgent } from './agent-proc.js';
import type { BenchOptions, Missing, Sample } from './types.js';

/** mkdir/rmdir pairs per round. */
const PER_ROUND = 20;
/** Past this, a change counts as missed (the agent's interval is 600 s: only the watch acts). */
const GIVE_UP_MS = 5000;

export const MKDIR_VARIANT = 'cgroup mkdir → policy in map (agent watch)';
export const RMDIR_VARIANT = 'cgroup rmdir → stale id out of map (agent watch)';

export interface LatencyCtx {
  /** Switches the bench's own programs off (the agent's must be the only ones). */
  use: (mode: string) => void;
  unavailable: Map<string, string>;
  samples: Sample[];
  missing: Missing[];
}

/** Waits (busy, yielding to the event loop) until cond holds; the milliseconds since t0, or null. */
async function until(cond: () => boolean, t0: number): Promise<number | null> {
  for (;;) {
    if (cond()) return performance.now() - t0;
    if (performance.now() - t0 > GIVE_UP_MS) return null;
    await new Promise((r) => setImmediate(r));
  }
}

/** Starts the agent on its own bpffs and state dir; resolves once it says redirect-ready. */
const startLatencyAgent = (o: BenchOptions, lab: Lab, dir: string, bpffs: string) =>
  startAgent(o.cli, { policies: dir, cgroupRoot: lab.cgRoot, bpffs, extra: ['--interval', '600'] });

export async function cgroupLatency(o: BenchOptions, lab: Lab, x: LatencyCtx): Promise<void> {
  const why = x.unavailable.get('ebpf');
  if (why) {
    x.missing.push({ scenario: 'control', mode: 'ebpf', reason: why });
    return;
  }
  const parent = lab.cgroup('watch');
  const path = `${parent}/app`;
  const dirOf = lab.cgDir(path);
  for (let round = 1; round <= o.rounds; round++) {
    x.use('direct'); // the bench's own programs off: the agent's are the only ones
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-bench-watch-'));
    const bpffs = `${lab.bpffs}-watch`;
    const fail = (variant: string, e: unknown) =>
      x.samples.push({
        scenario: 'control',
        mode: 'ebpf',
        variant,
        round,
        metrics: {},
        invalid: [`failed: ${(e as Error).message}`],
      });
    try {
      writeFileSync(
        join(dir, 'p.yaml'),
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: late }\nspec:\n  cgroup: ${path}\n  proxy: { outbound: "10.250.0.2:15001" }\n`,
      );
      const agent = await startLatencyAgent(o, lab, dir, bpffs);
      const map = new Pins(bpffs).openMap('mr_cgroups');
      const mk: number[] = [];
      const rm: number[] = [];
      try {
        for (let i = 0; i < PER_ROUND; i++) {
          let t0 = performance.now();
          mkdirSync(dirOf);
          const id = cgroupId(dirOf)!;
          const inMs = await until(() => map.get(id) !== undefined, t0);
          t0 = performance.now();
          rmdirSync(dirOf);
          const outMs = await until(() => map.get(id) === undefined, t0);
          const push = (variant: string, ms: number | null) =>
            x.samples.push(
              ms === null
                ? {
                    scenario: 'control',
                    mode: 'ebpf',
                    variant,
                    round,
                    metrics: {},
                    invalid: [`not within ${GIVE_UP_MS} ms`],
                  }
                : { scenario: 'control', mode: 'ebpf', variant, round, metrics: { ms } },
            );
          push(MKDIR_VARIANT, inMs);
          push(RMDIR_VARIANT, outMs);
          if (inMs !== null) mk.push(inMs);
          if (outMs !== null) rm.push(outMs);
        }
      } finally {
        map.close();
        if (existsSync(dirOf)) rmdirSync(dirOf);
        await agent.stop();
      }
      const med = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]?.toFixed(1) ?? '-';
      o.progress(
        `control plane, round ${round}: cgroup mkdir → policy in map ${med(mk)} ms, rmdir → id out ${med(rm)} ms (medians of ${PER_ROUND})`,
      );
    } catch (e) {
      fail(MKDIR_VARIANT, e);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      rmSync(`${dir}-state`, { recursive: true, force: true });
    }
  }
}
