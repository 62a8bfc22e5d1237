// probe.ts — what this kernel and this process can do, decided by loading and attaching tiny
// programs and creating maps (never by reading the version); the report mode selection reads.
import { release } from 'node:os';
import { existsSync, mkdirSync, rmdirSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import {
  createMap,
  loadTrivialProgram,
  linkCreate,
  progAttach,
  progDetach,
  loadBtf,
  vmlinuxBtf,
  ProgType,
  AttachType,
  libbpfVersion,
} from '../bpf/raw.js';
import { closeFd, MapType } from '../bpf/fd.js';
import { errnoName, BpfError } from '../bpf/errors.js';
import { BpfObject } from '../bpf/object.js';
import { Link } from '../bpf/link.js';
import { kernelHasMember } from '../bpf/btf.js';
import { PROGRAMS, type ProgramName } from '../bpf/abi.js';
import { cgroup2Mount, bpffsMount } from '../util/host.js';

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
] as const;
export type Feature = (typeof FEATURES)[number];

/** What the eBPF mode needs, all of it: a partial set must not make a half-working mode. */
export const EBPF_REQUIRED: Feature[] = [
  'bpf',
  'btf',
  'bpfLink',
  'connect4',
  'connect6',
  'sockops',
  'getsockopt',
  'getpeername',
];

export interface ObjectCheck {
  path: string;
  /** The real programs (meshredir.bpf.o) pass the verifier on this kernel. */
  loads: boolean;
  /** Each cgroup program attaches through a bpf_link (to a throwaway cgroup). */
  attaches: boolean;
  why?: string;
}

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

const PROG = ProgType;
const ATTACH = AttachType;

type Outcome = true | string;
const fail = (op: string, r: number): string => `${op}: ${errnoName(-r)}`;

/** Loads a program for the hook and attaches it to `cgroup` through a bpf_link, then undoes both. */
function probeCgroupHook(type: number, attach: number, cgfd: number): { load: Outcome; link: Outcome } {
  const fd = loadTrivialProgram(type, attach);
  if (fd < 0) return { load: fail('bpf_prog_load', fd), link: 'program did not load' };
  try {
    const l = linkCreate(fd, cgfd, attach);
    if (l < 0) return { load: true, link: fail('bpf_link_create', l) };
    closeFd(l); // an unpinned link detaches when its last fd closes
    return { load: true, link: true };
  } finally {
    closeFd(fd);
  }
}

function iptablesWorks(bin: string): Outcome {
  try {
    execFileSync(bin, ['-w', '5', '-t', 'nat', '-S', 'OUTPUT'], { stdio: 'pipe', timeout: 10_000 });
    return true;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') return `${bin}: not installed`;
    return `${bin}: ${(err.stderr?.toString() ?? err.message).trim().split('\n')[0]}`;
  }
}

export interface ProbeOptions {
  /** Where the probe makes its temporary cgroup (default: the cgroup2 mount). */
  cgroupParent?: string;
  /** meshredir.bpf.o: when given, mode ebpf also needs its programs to load and attach. */
  object?: string;
}

// A minimal BTF blob (one 32-bit int type): the kernel must accept BTF for CO-RE objects and maps.
function tinyBtf(): Buffer {
  const strings = Buffer.from('\0int\0', 'latin1');
  const types = Buffer.alloc(16);
  types.writeUInt32LE(1, 0); // name_off -> "int"
  types.writeUInt32LE(1 << 24, 4); // BTF_KIND_INT, vlen 0
  types.writeUInt32LE(4, 8); // size
  types.writeUInt32LE(32, 12); // encoding 0, offset 0, 32 bits
  const hdr = Buffer.alloc(24);
  hdr.writeUInt16LE(0xeb9f, 0);
  hdr.writeUInt8(1, 2);
  hdr.writeUInt32LE(24, 4);
  hdr.writeUInt32LE(0, 8);
  hdr.writeUInt32LE(types.length, 12);
  hdr.writeUInt32LE(types.length, 16);
  hdr.writeUInt32LE(strings.length, 20);
  return Buffer.concat([hdr, types, strings]);
}

function probeBtf(): Outcome {
  const blob = tinyBtf();
  const fd = loadBtf(blob);
  if (fd < 0) return fail('bpf_btf_load', fd);
  closeFd(fd);
  const vmlinux = vmlinuxBtf();
  if (vmlinux !== true)
    return `btf__load_vmlinux_btf: ${errnoName(-vmlinux)} (no usable kernel BTF: CONFIG_DEBUG_INFO_BTF)`;
  return true;
}

/** A load error with the failing program and the verifier's verdict, from libbpf's log. */
function withVerifier(e: BpfError): string {
  const prog = e.log.find((l) => /prog '.*': failed to load/.test(l))?.replace(/^libbpf: /, '');
  const at = e.log.findIndex((l) => /^processed \d+ insns/.test(l));
  const verdict = at > 0 ? e.log[at - 1] : undefined;
  return [e.message, prog, verdict].filter(Boolean).join('; ');
}

/** Loads the real object and attaches each of its cgroup programs to `cgroupDir`, then lets go. */
function probeObject(path: string, cgroupDir: string | null): ObjectCheck {
  let obj: BpfObject | undefined;
  try {
    obj = BpfObject.open(path);
    obj.load();
  } catch (e) {
    obj?.close();
    return { path, loads: false, attaches: false, why: e instanceof BpfError ? withVerifier(e) : (e as Error).message };
  }
  try {
    if (!cgroupDir) return { path, loads: true, attaches: false, why: 'no cgroup2 mount to attach to' };
    for (const name of Object.keys(PROGRAMS) as ProgramName[]) {
      if (PROGRAMS[name].attach === 'sk_msg') continue; // optional (fast path), probed as skMsg
      try {
        Link.attachCgroup(obj.program(name), cgroupDir).close(); // unpinned: detached on close
      } catch (e) {
        return { path, loads: true, attaches: false, why: (e as Error).message };
      }
    }
    return { path, loads: true, attaches: true };
  } finally {
    obj.close();
  }
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
  const mfd = createMap(MapType.ARRAY, 4, 4, 1);
  set('bpf', mfd >= 0 ? true : fail('bpf_map_create', mfd));
  closeFd(mfd);

  if (features.bpf) {
    set('btf', probeBtf());
    // The fast path's flow control reads a peer's unread fast-path bytes (psock msg_tot_len).
    const qlen = kernelHasMember('sk_psock', 'msg_tot_len');
    set(
      'skMsgQueueLen',
      qlen === true
        ? true
        : qlen === null
          ? 'no kernel BTF to look in'
          : "struct sk_psock has no msg_tot_len: the fast path could not bound a slow reader's queue (accelerate is not applied)",
    );
    const sh = createMap(MapType.SOCKHASH, 4, 4, 1);
    set('sockhash', sh >= 0 ? true : fail('bpf_map_create(sockhash)', sh));

    const msg = loadTrivialProgram(PROG.SK_MSG, ATTACH.SK_MSG_VERDICT);
    if (msg < 0) set('skMsg', fail('bpf_prog_load(sk_msg)', msg));
    else if (sh < 0) set('skMsg', 'no sockhash to attach to');
    else {
      const r = progAttach(msg, sh, ATTACH.SK_MSG_VERDICT);
      set('skMsg', r < 0 ? fail('bpf_prog_attach(sk_msg)', r) : true);
      if (r === 0) progDetach(msg, sh, ATTACH.SK_MSG_VERDICT);
    }
    closeFd(msg);
    closeFd(sh);

    const parent = opts.cgroupParent ?? cg2;
    if (!parent) {
      for (const f of [
        'bpfLink',
        'connect4',
        'connect6',
        'sockops',
        'getsockopt',
        'getpeername',
        'sendmsg',
      ] as Feature[])
        set(f, 'no cgroup2 mount to attach to');
    } else {
      const dir = join(parent, `meshredir-probe-${process.pid}`);
      let cgfd = -1;
      try {
        mkdirSync(dir);
        cgfd = openSync(dir, 'r');
        const hooks: [Feature, number, number][] = [
          ['connect4', PROG.CGROUP_SOCK_ADDR, ATTACH.INET4_CONNECT],
          ['connect6', PROG.CGROUP_SOCK_ADDR, ATTACH.INET6_CONNECT],
          ['sockops', PROG.SOCK_OPS, ATTACH.SOCK_OPS],
          ['getsockopt', PROG.CGROUP_SOCKOPT, ATTACH.GETSOCKOPT],
          ['sendmsg', PROG.CGROUP_SOCK_ADDR, ATTACH.UDP4_SENDMSG],
        ];
        let anyLink: Outcome = 'no program loaded';
        for (const [f, type, attach] of hooks) {
          const r = probeCgroupHook(type, attach, cgfd);
          set(f, r.load === true ? r.link : r.load);
          if (r.link === true) anyLink = true;
          else if (anyLink !== true && r.load === true) anyLink = r.link;
        }
        const g4 = probeCgroupHook(PROG.CGROUP_SOCK_ADDR, ATTACH.INET4_GETPEERNAME, cgfd);
        const g6 = probeCgroupHook(PROG.CGROUP_SOCK_ADDR, ATTACH.INET6_GETPEERNAME, cgfd);
        set(
          'getpeername',
          g4.link !== true
            ? g4.load === true
              ? g4.link
              : g4.load
            : g6.link !== true
              ? g6.load === true
                ? g6.link
                : g6.load
              : true,
        );
        set('bpfLink', anyLink);
        if (opts.object) object = probeObject(opts.object, dir);
      } catch (e) {
        const msg = `temporary cgroup ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
        for (const f of [
          'bpfLink',
          'connect4',
          'connect6',
          'sockops',
          'getsockopt',
          'getpeername',
          'sendmsg',
        ] as Feature[])
          set(f, msg);
        if (opts.object) object = { path: opts.object, loads: false, attaches: false, why: msg };
      } finally {
        if (cgfd >= 0) closeSync(cgfd);
        if (existsSync(dir)) rmdirSync(dir);
      }
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

  if (opts.object && !object)
    object = {
      path: opts.object,
      loads: false,
      attaches: false,
      why: features.bpf ? 'no cgroup2 mount' : 'bpf() is not usable by this process',
    };
  // Without bpf() every other check failed for that one reason: name it alone.
  const missing: string[] = !features.bpf
    ? [`bpf (${why.bpf})`]
    : EBPF_REQUIRED.filter((f) => !features[f]).map((f) => `${f} (${why[f]})`);
  if (features.bpf && object && !(object.loads && object.attaches)) missing.push(`${object.path} (${object.why})`);
  let mode: ProbeReport['mode'];
  let reason: string;
  if (!cg2) {
    mode = ipt.nft || ipt.legacy ? 'iptables' : 'none';
    reason = 'no cgroup2 mount: the eBPF programs have nothing to attach to';
  } else if (missing.length === 0) {
    mode = 'ebpf';
    reason = object
      ? `meshredir's programs load and attach here (${Object.keys(PROGRAMS)
          .filter((n) => n !== 'mr_skmsg')
          .join(', ')}), and so do the hooks they need (${EBPF_REQUIRED.join(', ')})`
      : `every hook the eBPF mode needs loads and attaches (${EBPF_REQUIRED.join(', ')}); meshredir's own object was not tried`;
  } else {
    const what = missing.join('; ');
    if (ipt.nft || ipt.legacy) {
      mode = 'iptables';
      reason = `eBPF mode unavailable: ${what}`;
    } else {
      mode = 'none';
      reason = `eBPF mode unavailable: ${what}; iptables unusable too: ${[why['iptables.nft'], why['iptables.legacy']].filter(Boolean).join('; ')}`;
    }
  }
  return {
    kernel: release(),
    libbpf: libbpfVersion,
    cgroup2: cg2,
    bpffs: bpffsMount(),
    features: { ...features, iptables: ipt },
    object,
    why,
    mode,
    reason,
  };
}

/** sk_lookup attaches to a network namespace: a throwaway one, never the host's. */
function probeSkLookup(): Outcome {
  const fd = loadTrivialProgram(PROG.SK_LOOKUP, ATTACH.SK_LOOKUP);
  if (fd < 0) return fail('bpf_prog_load(sk_lookup)', fd);
  const ns = `mr-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
  } catch (e) {
    closeFd(fd);
    return `ip netns add: ${((e as { stderr?: Buffer }).stderr?.toString() ?? (e as Error).message).trim()}`;
  }
  try {
    const nsfd = openSync(`/run/netns/${ns}`, 'r');
    try {
      const l = linkCreate(fd, nsfd, ATTACH.SK_LOOKUP);
      if (l < 0) return fail('bpf_link_create(sk_lookup)', l);
      closeFd(l);
      return true;
    } finally {
      closeSync(nsfd);
    }
  } finally {
    closeFd(fd);
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
  }
}
