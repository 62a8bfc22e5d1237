// pod-modes.ts — what a pod-level scenario (dns, inbound) switches between: an eBPF mode attached at the
// pod's cgroup and an iptables mode, each with pins or state of the scenario's own, removed together by
// off(); and its one bench policy, parsed from YAML like a user's.
import { join } from 'node:path';
import { EbpfMode } from '../modes/ebpf/index.js';
import { IptablesMode } from '../modes/iptables/index.js';
import { parsePolicyText } from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import type { Lab } from './lab.js';

export interface PodModes {
  ebpf: EbpfMode;
  ipt: IptablesMode;
  /** Removes whatever either mode installed (a failed iptables cleanup throws). */
  off(): void;
}

/** The two modes for the pod cgroup `pod`; `suffix` names their pins directory and state file. */
export function podModes(lab: Lab, pod: string, object: string, suffix: string): PodModes {
  const ebpf = new EbpfMode({
    bpffs: `${lab.bpffs}-${suffix}`,
    attach: { cgroupRoot: join(lab.cgMount, pod), object },
  });
  const ipt = new IptablesMode({ iptablesState: lab.stateFile.replace(/\.json$/, `-${suffix}.json`), lockWait: 10 });
  return {
    ebpf,
    ipt,
    off() {
      const bad = ipt.cleanup().failed;
      if (bad.length) throw new Error(`iptables cleanup failed: ${bad.join('; ')}`);
      ebpf.cleanup({ force: true });
    },
  };
}

/** The one policy of a policy file's text (its errors thrown). */
export function benchPolicy(yaml: string, name: string): Policy {
  const r = parsePolicyText(yaml, name);
  if (r.errors.length) throw new Error(r.errors.map((e) => e.message).join('; '));
  return r.policies[0]!;
}
