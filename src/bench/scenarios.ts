// scenarios.ts — the bench's scenarios, registered here by name, one line each, in the order a run
// measures them (and `--only` names them; the CLI keeps its own copy of the names so that loading it
// loads no bench). A scenario is a ScenarioDef (run.ts) in a file of its own.
import { HOP_SIZES } from './types.js';
import type { ScenarioDef } from './run.js';
import { crr } from './crr.js';
import { scale } from './scale.js';
import { proxy } from './proxy.js';
import { hop } from './hop.js';
import { inbound } from './inbound-scenario.js';
import { dns } from './dns.js';
import { control } from './control.js';
import { hooks } from './hookbench.js';

export const SCENARIOS = {
  crr,
  scale,
  proxy,
  hop,
  hooks,
  inbound,
  dns,
  control,
} satisfies Record<string, ScenarioDef>;

export type Scenario = keyof typeof SCENARIOS;

/** How many measurements a run makes with the modes that can run (for progress and its estimate);
 * `modes` says how many of a scenario's modes can run (by default all). */
export function plannedSteps(
  only: readonly Scenario[],
  rounds: number,
  hopSizes: readonly number[] = HOP_SIZES,
  modes: (s: Scenario) => number = (s) => SCENARIOS[s].modes.length,
): number {
  return only.reduce((a, s) => a + SCENARIOS[s].steps(modes(s), hopSizes) * rounds, 0);
}
