// object.ts — meshredir's own object, probed for real: loaded through the verifier and each of its cgroup
// programs attached to a throwaway cgroup, so a kernel that has every hook but not everything the
// programs use (helpers, socket storage, BTF features) is caught.
import { BpfObject } from '../bpf/object.js';
import { BpfError } from '../bpf/errors.js';
import { Link } from '../bpf/link.js';
import { PROGRAMS, type ProgramName } from '../bpf/abi.js';
import { unloadableDnsPrograms } from '../bpf/optional.js';

export interface ObjectCheck {
  path: string;
  /** The real programs (meshredir.bpf.o) pass the verifier on this kernel. */
  loads: boolean;
  /** Each cgroup program attaches through a bpf_link (to a throwaway cgroup). */
  attaches: boolean;
  why?: string;
  /** Optional programs left out because this kernel cannot load them (DNS capture's hooks), with why. */
  without?: Record<string, string>;
}

/** A load error with the failing program and the verifier's verdict, from libbpf's log. */
function withVerifier(e: BpfError): string {
  const prog = e.log.find((l) => /prog '.*': failed to load/.test(l))?.replace(/^libbpf: /, '');
  const at = e.log.findIndex((l) => /^processed \d+ insns/.test(l));
  const verdict = at > 0 ? e.log[at - 1] : undefined;
  return [e.message, prog, verdict].filter(Boolean).join('; ');
}

/** Loads the real object and attaches each of its cgroup programs to `cgroupDir`, then lets go. */
export function probeObject(path: string, cgroupDir: string | null): ObjectCheck {
  let obj: BpfObject | undefined;
  // As the eBPF mode loads it: a program whose hook this kernel lacks has autoload off (DNS capture is
  // then off), or libbpf would fail the whole object.
  const without: Record<string, string> = { ...unloadableDnsPrograms() };
  const extra = Object.keys(without).length ? { without } : {};
  try {
    obj = BpfObject.open(path);
    for (const name of Object.keys(without)) obj.setAutoload(name, false);
    obj.load();
  } catch (e) {
    obj?.close();
    return {
      path,
      loads: false,
      attaches: false,
      why: e instanceof BpfError ? withVerifier(e) : (e as Error).message,
      ...extra,
    };
  }
  try {
    if (!cgroupDir) return { path, loads: true, attaches: false, why: 'no cgroup2 mount to attach to', ...extra };
    for (const name of Object.keys(PROGRAMS) as ProgramName[]) {
      if (PROGRAMS[name].attach === 'sk_msg') continue; // optional (fast path), probed as skMsg
      if (name in without) continue;
      try {
        Link.attachCgroup(obj.program(name), cgroupDir).close(); // unpinned: detached on close
      } catch (e) {
        return { path, loads: true, attaches: false, why: (e as Error).message, ...extra };
      }
    }
    return { path, loads: true, attaches: true, ...extra };
  } finally {
    obj.close();
  }
}
