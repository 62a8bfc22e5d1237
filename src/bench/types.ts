// types.ts — what a bench run is asked (its options) and what it gives back (samples, missing modes);
// shared by the run, its scenarios, the report and the CLI.
import type { Counters } from './checks.js';
import type { Placement } from './lab.js';

export interface BenchOptions {
  /** Scenario names, as registered in scenarios.ts. */
  only: string[];
  rounds: number;
  /** Seconds per measurement (after a warm-up of WARMUP seconds). */
  duration: number;
  /** Message sizes of the hop scenario. */
  hopSizes?: number[];
  object: string;
  mrload: string;
  cli: string;
  /** The profiling build of the programs (build/meshredir-prof.bpf.o, bpf/mr_prof.h): `hooks`. */
  hookprof?: string;
  /** `hooks`: the CLI whose agent's programs are profiled (another build's, for before/after). */
  hooksAgent?: string;
  /** How the client, server and proxy processes are placed on CPUs (lab.ts; default split). */
  placement?: Placement;
  /** A/A: this mode measured twice, as itself and as `MODE (A/A)`, in the scenarios that allow it
   * (crr, proxy): the spread of their ratio is the bench's noise. */
  aa?: string;
  /** How often a measurement that something else disturbed is made again (run.ts; default 2). */
  retries?: number;
  /** Only these modes (and the baseline) in each scenario; all when absent. */
  modes?: string[];
  progress: (line: string) => void;
}

export interface Sample {
  scenario: string;
  mode: string;
  variant: string;
  round: number;
  metrics: Record<string, number>;
  /** What the mode in force did during the measurement (counter deltas; see checks.ts). */
  counters?: Counters;
  /** Why the sample was rejected; absent when it is valid. Rejected samples stay in the JSON and
   * out of the medians. */
  invalid?: string[];
}

/** A mode that could not run here, with why (instead of a sample). */
export interface Missing {
  scenario: string;
  mode: string;
  reason: string;
}

export interface BenchResult {
  samples: Sample[];
  missing: Missing[];
  env: Record<string, unknown>;
}

export const WARMUP = 0.3;
export const HOP_SIZES = [64, 1024, 16384, 65536];

/** The A/A copy of a mode: the same measurement under another name. */
export const AA = ' (A/A)';
/** The mode a name stands for: an A/A copy is its mode. */
export const baseMode = (mode: string) => (mode.endsWith(AA) ? mode.slice(0, -AA.length) : mode);
/** crr: the eBPF programs attached with the policy and the client covered by it, dialling the server at
 * 127.0.0.1 itself, which the policy lets pass (loopback): what a covered connection that is not
 * redirected costs (connect4 deciding, the unconditional sockops callbacks), without the redirect. */
export const BYPASSED = 'ebpf (client bypassed)';
