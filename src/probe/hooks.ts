// hooks.ts — one probe per kernel feature: a tiny program of the hook's type loaded and attached (to a
// throwaway cgroup or netns, never the host's), a map of the type created, a BTF blob loaded. Each
// answers true or why not ("operation: ERRNO"), as a value.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, openSync, closeSync } from 'node:fs';
import { join } from 'node:path';
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
} from '../bpf/raw.js';
import { closeFd, MapType } from '../bpf/fd.js';
import { errnoName } from '../bpf/errors.js';
import { kernelHasMember } from '../bpf/btf.js';

export type Outcome = true | string;
export const fail = (op: string, r: number): string => `${op}: ${errnoName(-r)}`;

/** bpf() itself: a one-element array map. */
export function probeBpf(): Outcome {
  const fd = createMap(MapType.ARRAY, 4, 4, 1);
  closeFd(fd);
  return fd >= 0 ? true : fail('bpf_map_create', fd);
}

/** A minimal BTF blob (one 32-bit int type): the kernel must accept BTF for CO-RE objects and maps. */
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

/** The kernel loads BTF, and libbpf reads the kernel's own (/sys/kernel/btf/vmlinux). */
export function probeBtf(): Outcome {
  const fd = loadBtf(tinyBtf());
  if (fd < 0) return fail('bpf_btf_load', fd);
  closeFd(fd);
  const vmlinux = vmlinuxBtf();
  if (vmlinux !== true)
    return `btf__load_vmlinux_btf: ${errnoName(-vmlinux)} (no usable kernel BTF: CONFIG_DEBUG_INFO_BTF)`;
  return true;
}

/** The fast path's flow control reads a peer's unread fast-path bytes (psock msg_tot_len). */
export function probeSkMsgQueueLen(): Outcome {
  const qlen = kernelHasMember('sk_psock', 'msg_tot_len');
  if (qlen === true) return true;
  return qlen === null
    ? 'no kernel BTF to look in'
    : "struct sk_psock has no msg_tot_len: the fast path could not bound a slow reader's queue (accelerate is not applied)";
}

/** A sockhash, and an sk_msg program attached to it. */
export function probeSockmap(): { sockhash: Outcome; skMsg: Outcome } {
  const sh = createMap(MapType.SOCKHASH, 4, 4, 1);
  const msg = loadTrivialProgram(ProgType.SK_MSG, AttachType.SK_MSG_VERDICT);
  try {
    const sockhash = sh >= 0 ? true : fail('bpf_map_create(sockhash)', sh);
    if (msg < 0) return { sockhash, skMsg: fail('bpf_prog_load(sk_msg)', msg) };
    if (sh < 0) return { sockhash, skMsg: 'no sockhash to attach to' };
    const r = progAttach(msg, sh, AttachType.SK_MSG_VERDICT);
    if (r === 0) progDetach(msg, sh, AttachType.SK_MSG_VERDICT);
    return { sockhash, skMsg: r < 0 ? fail('bpf_prog_attach(sk_msg)', r) : true };
  } finally {
    closeFd(msg);
    closeFd(sh);
  }
}

/** Loads a program for the hook and attaches it to a cgroup through a bpf_link, then undoes both. */
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

/** The cgroup hooks (and bpf_link) the eBPF mode cannot do without. */
export const CGROUP_REQUIRED = ['bpfLink', 'connect4', 'connect6', 'sockops', 'getsockopt', 'getpeername'] as const;

export const CGROUP_FEATURES = [
  ...CGROUP_REQUIRED,
  'sendmsg',
  // DNS capture (docs/dns-design.md): sendmsg6, recvmsg4|6 and sock_release besides sendmsg4.
  'sendmsg6',
  'recvmsg',
  'sockRelease',
] as const;
export type CgroupFeature = (typeof CGROUP_FEATURES)[number];

/**
 * Every cgroup hook, in a throwaway cgroup made under `parent` and removed afterwards; `inside` runs
 * while it exists (to attach meshredir's own programs there too).
 */
export function probeCgroupHooks<T>(
  parent: string,
  inside: (dir: string) => T,
): { outcomes: Record<CgroupFeature, Outcome>; inside?: T } {
  const dir = join(parent, `meshredir-probe-${process.pid}`);
  const out = {} as Record<CgroupFeature, Outcome>;
  let cgfd = -1;
  try {
    mkdirSync(dir);
    cgfd = openSync(dir, 'r');
    const hooks: [CgroupFeature, number, number][] = [
      ['connect4', ProgType.CGROUP_SOCK_ADDR, AttachType.INET4_CONNECT],
      ['connect6', ProgType.CGROUP_SOCK_ADDR, AttachType.INET6_CONNECT],
      ['sockops', ProgType.SOCK_OPS, AttachType.SOCK_OPS],
      ['getsockopt', ProgType.CGROUP_SOCKOPT, AttachType.GETSOCKOPT],
      ['sendmsg', ProgType.CGROUP_SOCK_ADDR, AttachType.UDP4_SENDMSG],
      ['sendmsg6', ProgType.CGROUP_SOCK_ADDR, AttachType.UDP6_SENDMSG],
      ['sockRelease', ProgType.CGROUP_SOCK, AttachType.INET_SOCK_RELEASE],
    ];
    let anyLink: Outcome = 'no program loaded';
    for (const [f, type, attach] of hooks) {
      const r = probeCgroupHook(type, attach, cgfd);
      out[f] = r.load === true ? r.link : r.load;
      if (r.link === true) anyLink = true;
      else if (anyLink !== true && r.load === true) anyLink = r.link;
    }
    const first = (r: { load: Outcome; link: Outcome }) => (r.load === true ? r.link : r.load);
    const g4 = first(probeCgroupHook(ProgType.CGROUP_SOCK_ADDR, AttachType.INET4_GETPEERNAME, cgfd));
    const g6 = first(probeCgroupHook(ProgType.CGROUP_SOCK_ADDR, AttachType.INET6_GETPEERNAME, cgfd));
    out.getpeername = g4 !== true ? g4 : g6;
    const r4 = first(probeCgroupHook(ProgType.CGROUP_SOCK_ADDR, AttachType.UDP4_RECVMSG, cgfd));
    const r6 = first(probeCgroupHook(ProgType.CGROUP_SOCK_ADDR, AttachType.UDP6_RECVMSG, cgfd));
    out.recvmsg = r4 !== true ? r4 : r6;
    out.bpfLink = anyLink;
    return { outcomes: out, inside: inside(dir) };
  } catch (e) {
    const msg = `temporary cgroup ${dir}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`;
    for (const f of CGROUP_FEATURES) out[f] = msg;
    return { outcomes: out };
  } finally {
    if (cgfd >= 0) closeSync(cgfd);
    if (existsSync(dir)) rmdirSync(dir);
  }
}

/** sk_lookup attaches to a network namespace: a throwaway one, never the host's. */
export function probeSkLookup(): Outcome {
  const fd = loadTrivialProgram(ProgType.SK_LOOKUP, AttachType.SK_LOOKUP);
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
      const l = linkCreate(fd, nsfd, AttachType.SK_LOOKUP);
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

/** iptables of one backend works here (its nat table can be read). */
export function iptablesWorks(bin: string): Outcome {
  try {
    execFileSync(bin, ['-w', '5', '-t', 'nat', '-S', 'OUTPUT'], { stdio: 'pipe', timeout: 10_000 });
    return true;
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: Buffer };
    if (err.code === 'ENOENT') return `${bin}: not installed`;
    return `${bin}: ${(err.stderr?.toString() ?? err.message).trim().split('\n')[0]}`;
  }
}
