// verify-probe.ts — hidden: the throwaway process `verify` starts (it moves itself into the cgroup
// and netns being checked, so it must not be the verify process itself).
import { Command } from 'commander';
import { probeChild } from '../../modes/ebpf/verify.js';
import { printJson } from '../output.js';

export const verifyProbeCommand = new Command('verify-probe').argument('<json>').action(async (json: string) => {
  printJson(await probeChild(JSON.parse(json) as Parameters<typeof probeChild>[0]));
});
