// probe.ts — what this kernel and this process can do, decided by loading and attaching tiny programs
// and meshredir's own, and creating maps (never by reading the version); the report mode selection reads.
import { release } from 'node:os';
import { libbpfVersion } from '../bpf/raw.js';
import { PROGRAMS } from '../bpf/abi.js';
import { cgroup2Mount, bpffsMount } from '../util/host.js';
import {
  probeBpf,
  probeBtf,
  probeSkMsgQueueLen,
  probeSockmap,
  probeCgroupHooks,
  probeSkLookup,
  iptablesWorks,
  CGROUP_FEATURES,
  CGROUP_REQUIRED,
  type Outcome,
} from './hooks.js';
import { probeObject, type ObjectCheck } from './object.js';

export type { ObjectCheck };

export const FEATURES = [
  'bpf',
  'btf',
  'bpfLink',
  'connect4',
  'connect6',
  'sockops',
  'sockhash',
  'skMsg',
  'skMsgQueueLen',
  'getsockopt',
  'getpeername',
  'skLookup',
  'sendmsg',
  'sendmsg6',
  'recvmsg',
  'sockRelease',
] as const;
export type Feature = (typeof FEATURES)[number];

/** What the eBPF mode needs, all of it: a partial set must not make a half-working mode. */
export const EBPF_REQUIRED: Feature[] = ['bpf', 'btf', ...CGROUP_REQUIRED];

export interface ProbeReport {
  kernel: string;
  libbpf: string;
  cgroup2: string | null;
  bpffs: string | null;
  features: Record<Feature, boolean> & { iptables: { nft: boolean; legacy: boolean } };
  /** The eBPF mode's own object, loaded and attached for real (null: no object given). */
  object: ObjectCheck | null;
  /** Why a feature is false (errno name and the operation). */
  why: Partial<Record<Feature | 'iptables.nft' | 'iptables.legacy', string>>;
  mode: 'ebpf' | 'iptables' | 'none';
  reason: string;
}

export interface ProbeOptions {
  /** Where the probe makes its temporary cgroup (default: the cgroup2 mount). */
  cgroupParent?: string;
  /** meshredir.bpf.o: when given, mode ebpf also needs its programs to load and attach. */
  object?: string;
}

export function probe(opts: ProbeOptions = {}): ProbeReport {
  const cg2 = cgroup2Mount();
  const features = Object.fromEntries(FEATURES.map((f) => [f, false])) as Record<Feature, boolean>;
  const why: ProbeReport['why'] = {};
  const set = (f: Feature, o: Outcome) => {
    features[f] = o === true;
    if (o !== true) why[f] = o;
  };

  let object: ObjectCheck | null = null;
  set('bpf', probeBpf());
  if (features.bpf) {
    set('btf', probeBtf());
    set('skMsgQueueLen', probeSkMsgQueueLen());
    const sm = probeSockmap();
    set('sockhash', sm.sockhash);
    set('skMsg', sm.skMsg);
    const parent = opts.cgroupParent ?? cg2;
    if (!parent) for (const f of CGROUP_FEATURES) set(f, 'no cgroup2 mount to attach to');
    else {
      const r = probeCgroupHooks(parent, (dir) => (opts.object ? probeObject(opts.object, dir) : null));
      for (const f of CGROUP_FEATURES) set(f, r.outcomes[f]);
      if (r.inside) object = r.inside;
      else if (opts.object)
        object = { path: opts.object, loads: false, attaches: false, why: String(r.outcomes.bpfLink) };
    }
    set('skLookup', probeSkLookup());
  } else {
    for (const f of FEATURES) if (f !== 'bpf') set(f, 'bpf() is not usable by this process');
  }

  const nft = iptablesWorks('iptables-nft');
  const legacy = iptablesWorks('iptables-legacy');
  if (nft !== true) why['iptables.nft'] = nft;
  if (legacy !== true) why['iptables.legacy'] = legacy;
  const ipt = { nft: nft === true, legacy: legacy === true };

  if (opts.object && !object) {
    const reason = features.bpf ? 'no cgroup2 mount' : 'bpf() is not usable by this process';
    object = { path: opts.object, loads: false, attaches: false, why: reason };
  }
  return {
    kernel: release(),
    libbpf: libbpfVersion(),
    cgroup2: cg2,
    bpffs: bpffsMount(),
    features: { ...features, iptables: ipt },
    object,
    why,
    ...chooseMode(Boolean(cg2), features, why, object, ipt),
  };
}

/** The mode auto picks: eBPF when every required hook and meshredir's own programs work, else iptables. */
function chooseMode(
  cgroup2: boolean,
  features: Record<Feature, boolean>,
  why: ProbeReport['why'],
  object: ObjectCheck | null,
  ipt: { nft: boolean; legacy: boolean },
): { mode: ProbeReport['mode']; reason: string } {
  if (!cgroup2)
    return {
      mode: ipt.nft || ipt.legacy ? 'iptables' : 'none',
      reason: 'no cgroup2 mount: the eBPF programs have nothing to attach to',
    };
  // Without bpf() every other check failed for that one reason: name it alone.
  const missing: string[] = !features.bpf
    ? [`bpf (${why.bpf})`]
    : EBPF_REQUIRED.filter((f) => !features[f]).map((f) => `${f} (${why[f]})`);
  if (features.bpf && object && !(object.loads && object.attaches)) missing.push(`${object.path} (${object.why})`);
  if (missing.length === 0) {
    const progs = Object.keys(PROGRAMS)
      .filter((n) => n !== 'mr_skmsg')
      .join(', ');
    return {
      mode: 'ebpf',
      reason: object
        ? `meshredir's programs load and attach here (${progs}), and so do the hooks they need (${EBPF_REQUIRED.join(', ')})${
            object.fastPath && !object.fastPath.loads
              ? `; without the sk_msg fast path, which does not load here (${object.fastPath.why}): accelerate is not applied`
              : ''
          }`
        : `every hook the eBPF mode needs loads and attaches (${EBPF_REQUIRED.join(', ')}); meshredir's own object was not tried`,
    };
  }
  const what = missing.join('; ');
  if (ipt.nft || ipt.legacy) return { mode: 'iptables', reason: `eBPF mode unavailable: ${what}` };
  const iptWhy = [why['iptables.nft'], why['iptables.legacy']].filter(Boolean).join('; ');
  return { mode: 'none', reason: `eBPF mode unavailable: ${what}; iptables unusable too: ${iptWhy}` };
}
