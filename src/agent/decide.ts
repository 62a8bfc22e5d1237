// decide.ts — which mode the agent runs: the one asked for, or with --mode auto what the probe says works
// here (meshredir's own programs loaded and attached where they will attach, never above it).
import { probe } from '../probe/probe.js';

export interface ModeDecision {
  requested: 'auto' | 'ebpf' | 'iptables';
  chosen: 'ebpf' | 'iptables';
  reason: string;
  /** The probe's verdicts (auto mode). */
  probe?: { kernel: string; libbpf: string; features: Record<string, boolean>; why: Record<string, string> };
}

export function decideMode(
  requested: 'auto' | 'ebpf' | 'iptables',
  o: { object: string; cgroupParent?: string },
): ModeDecision | Error {
  if (requested !== 'auto') return { requested, chosen: requested, reason: `--mode ${requested} given` };
  const p = probe({ object: o.object, ...(o.cgroupParent ? { cgroupParent: o.cgroupParent } : {}) });
  if (p.mode === 'none') return new Error(`no redirection mode works here: ${p.reason}`);
  const { iptables, ...features } = p.features;
  return {
    requested: 'auto',
    chosen: p.mode,
    reason: p.reason,
    probe: {
      kernel: p.kernel,
      libbpf: p.libbpf,
      features: { ...features, 'iptables.nft': iptables.nft, 'iptables.legacy': iptables.legacy },
      why: p.why as Record<string, string>,
    },
  };
}
