// object.ts — meshredir's own object, probed for real: loaded through the verifier and each of its cgroup
// programs attached to a throwaway cgroup, so a kernel that has every hook but not everything the
// programs use (helpers, socket storage, BTF features) is caught. Two parts are optional: DNS capture's
// hooks (left out where this kernel lacks them) and the sk_msg fast path (when the whole object does not
// load, it is tried again without it).
import { BpfObject } from '../bpf/object.js';
import { BpfError, withVerifier } from '../bpf/errors.js';
import { Link } from '../bpf/link.js';
import { PROGRAMS, FAST_PATH, WITHOUT_FAST_PATH, programFor, type ProgramName } from '../bpf/abi.js';
import { unloadableDnsPrograms } from '../bpf/optional.js';
import { retryInterrupted } from '../bpf/retry.js';

export interface ObjectCheck {
  path: string;
  /** The real programs (meshredir.bpf.o) pass the verifier on this kernel (the fast path aside). */
  loads: boolean;
  /** The optional sk_msg fast path (its maps and programs) loads too; if not, why (the rest is loaded
   * without it, and the eBPF mode redirects without acceleration). */
  fastPath?: { loads: boolean; why?: string };
  /** Each cgroup program attaches through a bpf_link (to a throwaway cgroup). */
  attaches: boolean;
  why?: string;
  /** Optional programs left out because this kernel cannot load them (DNS capture's hooks), with why. */
  without?: Record<string, string>;
}

const why = (e: unknown) => (e instanceof BpfError ? withVerifier(e) : (e as Error).message);

/** Opens and loads the object as the eBPF mode does: `without` left out (autoload off, or libbpf would
 * fail the whole object), and with or without the fast path. */
function loadObject(path: string, fast: boolean, without: Record<string, string>): BpfObject {
  const once = (): BpfObject => {
    const obj = BpfObject.open(path);
    try {
      for (const name of Object.keys(without)) obj.setAutoload(name, false);
      if (fast) obj.exclude(WITHOUT_FAST_PATH);
      else obj.exclude(FAST_PATH.programs, FAST_PATH.maps);
      obj.load();
      return obj;
    } catch (e) {
      obj.close();
      throw e;
    }
  };
  return retryInterrupted(once, () => {}); // each try opens its own object
}

/** Loads the real object and attaches each of its cgroup programs to `cgroupDir`, then lets go. */
export function probeObject(path: string, cgroupDir: string | null): ObjectCheck {
  const without: Record<string, string> = { ...unloadableDnsPrograms() };
  const extra = Object.keys(without).length ? { without } : {};
  let obj: BpfObject;
  let fastPath: NonNullable<ObjectCheck['fastPath']> = { loads: true };
  try {
    obj = loadObject(path, true, without);
  } catch (e) {
    // The fast path is optional: without it, redirection alone may still load.
    try {
      obj = loadObject(path, false, without);
      fastPath = { loads: false, why: why(e) };
    } catch (e2) {
      return { path, loads: false, attaches: false, why: why(e2), ...extra };
    }
  }
  try {
    if (!cgroupDir)
      return { path, loads: true, attaches: false, fastPath, why: 'no cgroup2 mount to attach to', ...extra };
    for (const name of Object.keys(PROGRAMS) as ProgramName[]) {
      if (PROGRAMS[name].attach === 'sk_msg') continue; // optional (fast path), probed as skMsg
      if (name in without) continue;
      try {
        Link.attachCgroup(obj.program(programFor(name, fastPath.loads)), cgroupDir).close(); // unpinned: detached on close
      } catch (e) {
        return { path, loads: true, attaches: false, fastPath, why: (e as Error).message, ...extra };
      }
    }
    return { path, loads: true, attaches: true, fastPath, ...extra };
  } finally {
    obj.close();
  }
}
