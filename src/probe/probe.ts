// probe.ts — what this kernel and this process can do, decided by loading and attaching tiny
// programs and creating maps (never by reading the version); the report mode selection reads.
import { release } from 'node:os';
import { existsSync, mkdirSync, rmdirSync, openSync, closeSync, accessSync, constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { lib, c, NULL } from '../sys/libbpf.js';
import { errnoName } from '../bpf/errors.js';
import { cgroup2Mount, bpffsMount } from '../util/host.js';

export const FEATURES = ['bpf', 'btf', 'bpfLink', 'connect4', 'connect6', 'sockops', 'sockhash', 'skMsg', 'getsockopt', 'getpeername', 'skLookup', 'sendmsg'] as const;
export type Feature = (typeof FEATURES)[number];

/** What the eBPF mode needs, all of it: a partial set must not make a half-working mode. */
export const EBPF_REQUIRED: Feature[] = ['bpf', 'btf', 'bpfLink', 'connect4', 'connect6', 'sockops', 'getsockopt', 'getpeername'];

export interface ProbeReport {
  kernel: string;
  libbpf: string;
  cgroup2: string | null;
  bpffs: string | null;
  features: Record<Feature, boolean> & { iptables: { nft: boolean; legacy: boolean } };
  /** Why a feature is false (errno name and the operation). */
  why: Partial<Record<Feature | 'iptables.nft' | 'iptables.legacy', string>>;
  mode: 'ebpf' | 'iptables' | 'none';
  reason: string;
}

const PROG = { CGROUP_SOCK_ADDR: 18, SOCK_OPS: 13, SK_MSG: 16, CGROUP_SOCKOPT: 25, SK_LOOKUP: 30 } as const;
const ATTACH = {
  INET4_CONNECT: 10,
  INET6_CONNECT: 11,
  SOCK_OPS: 3,
  SK_MSG_VERDICT: 7,
  UDP4_SENDMSG: 14,
  GETSOCKOPT: 21,
  INET4_GETPEERNAME: 29,
  INET6_GETPEERNAME: 30,
  SK_LOOKUP: 36,
} as const;
const MAP = { ARRAY: 2, SOCKHASH: 18 } as const;

// r0 = 1; exit — "allow"/"pass" for every program type probed here.
const RETURN_1 = Buffer.from([0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);

function loadProg(type: number, attach: number): number {
  const opts = Buffer.alloc(16); // struct bpf_prog_load_opts { size_t sz; int attempts; enum expected_attach_type; }
  opts.writeBigUInt64LE(16n, 0);
  opts.writeUInt32LE(attach, 12);
  return lib.bpf_prog_load(type, 'mr_probe', 'GPL', RETURN_1, 2, opts);
}

type Outcome = true | string;
const fail = (op: string, r: number): string => `${op}: ${errnoName(-r)}`;

/** Loads a program for the hook and attaches it to `cgroup` through a bpf_link, then undoes both. */
function probeCgroupHook(type: number, attach: number, cgfd: number): { load: Outcome; link: Outcome } {
  const fd = loadProg(type, attach);
  if (fd < 0) return { load: fail('bpf_prog_load', fd), link: 'program did not load' };
  try {
    const l: number = lib.bpf_link_create(fd, cgfd, attach, NULL);
    if (l < 0) return { load: true, link: fail('bpf_link_create', l) };
    c.close(l); // an unpinned link detaches when its last fd closes
    return { load: true, link: true };
  } finally {
    c.close(fd);
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
}

export function probe(opts: ProbeOptions = {}): ProbeReport {
  const cg2 = cgroup2Mount();
  const features = Object.fromEntries(FEATURES.map((f) => [f, false])) as Record<Feature, boolean>;
  const why: ProbeReport['why'] = {};
  const set = (f: Feature, o: Outcome) => {
    features[f] = o === true;
    if (o !== true) why[f] = o;
  };

  const mfd: number = lib.bpf_map_create(MAP.ARRAY, 'mr_probe', 4, 4, 1, NULL);
  set('bpf', mfd >= 0 ? true : fail('bpf_map_create', mfd));
  if (mfd >= 0) c.close(mfd);

  if (features.bpf) {
    try {
      accessSync('/sys/kernel/btf/vmlinux', fsc.R_OK);
      set('btf', true);
    } catch {
      set('btf', '/sys/kernel/btf/vmlinux: not readable (kernel built without CONFIG_DEBUG_INFO_BTF)');
    }
    const sh: number = lib.bpf_map_create(MAP.SOCKHASH, 'mr_probe', 4, 4, 1, NULL);
    set('sockhash', sh >= 0 ? true : fail('bpf_map_create(sockhash)', sh));

    const msg = loadProg(PROG.SK_MSG, ATTACH.SK_MSG_VERDICT);
    if (msg < 0) set('skMsg', fail('bpf_prog_load(sk_msg)', msg));
    else if (sh < 0) set('skMsg', 'no sockhash to attach to');
    else {
      const r: number = lib.bpf_prog_attach(msg, sh, ATTACH.SK_MSG_VERDICT, 0);
      set('skMsg', r < 0 ? fail('bpf_prog_attach(sk_msg)', r) : true);
      if (r === 0) lib.bpf_prog_detach2(msg, sh, ATTACH.SK_MSG_VERDICT);
    }
    if (msg >= 0) c.close(msg);
    if (sh >= 0) c.close(sh);

    const parent = opts.cgroupParent ?? cg2;
    if (!parent) {
      for (const f of ['bpfLink', 'connect4', 'connect6', 'sockops', 'getsockopt', 'getpeername', 'sendmsg'] as Feature[]) set(f, 'no cgroup2 mount to attach to');
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
        set('getpeername', g4.link !== true ? (g4.load === true ? g4.link : g4.load) : g6.link !== true ? (g6.load === true ? g6.link : g6.load) : true);
        set('bpfLink', anyLink);
      } catch (e) {
        const msg = `temporary cgroup ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
        for (const f of ['bpfLink', 'connect4', 'connect6', 'sockops', 'getsockopt', 'getpeername', 'sendmsg'] as Feature[]) set(f, msg);
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

  const missing = EBPF_REQUIRED.filter((f) => !features[f]);
  let mode: ProbeReport['mode'];
  let reason: string;
  if (!cg2) {
    mode = ipt.nft || ipt.legacy ? 'iptables' : 'none';
    reason = 'no cgroup2 mount: the eBPF programs have nothing to attach to';
  } else if (missing.length === 0) {
    mode = 'ebpf';
    reason = `every program the eBPF mode needs loads and attaches (${EBPF_REQUIRED.join(', ')})`;
  } else {
    const what = missing.map((f) => `${f} (${why[f]})`).join('; ');
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
    libbpf: `${lib.libbpf_major_version()}.${lib.libbpf_minor_version()}`,
    cgroup2: cg2,
    bpffs: bpffsMount(),
    features: { ...features, iptables: ipt },
    why,
    mode,
    reason,
  };
}

/** sk_lookup attaches to a network namespace: a throwaway one, never the host's. */
function probeSkLookup(): Outcome {
  const fd = loadProg(PROG.SK_LOOKUP, ATTACH.SK_LOOKUP);
  if (fd < 0) return fail('bpf_prog_load(sk_lookup)', fd);
  const ns = `mr-probe-${process.pid}`;
  try {
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
  } catch (e) {
    c.close(fd);
    return `ip netns add: ${((e as { stderr?: Buffer }).stderr?.toString() ?? (e as Error).message).trim()}`;
  }
  try {
    const nsfd = openSync(`/run/netns/${ns}`, 'r');
    try {
      const l: number = lib.bpf_link_create(fd, nsfd, ATTACH.SK_LOOKUP, NULL);
      if (l < 0) return fail('bpf_link_create(sk_lookup)', l);
      c.close(l);
      return true;
    } finally {
      closeSync(nsfd);
    }
  } finally {
    c.close(fd);
    execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
  }
}
