// raw.ts — the bare kernel calls the probe makes to learn what this kernel allows: create a map, load a
// one-instruction program of a type, link or attach it, load a BTF blob. Each returns the fd, or a
// negative errno (the probe reports failures as values, never as exceptions).
import { lib, NULL, isNull, errno } from '../sys/libbpf.js';

// r0 = 1; exit — "allow"/"pass" for every program type probed.
const RETURN_1 = Buffer.from([0xb7, 0, 0, 0, 1, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0]);

/** enum bpf_prog_type values the probe loads. */
export const ProgType = {
  CGROUP_SOCK: 9,
  CGROUP_SOCK_ADDR: 18,
  SOCK_OPS: 13,
  SK_MSG: 16,
  CGROUP_SOCKOPT: 25,
  SK_LOOKUP: 30,
} as const;

/** enum bpf_attach_type values the probe attaches. */
export const AttachType = {
  INET4_CONNECT: 10,
  INET6_CONNECT: 11,
  SOCK_OPS: 3,
  SK_MSG_VERDICT: 7,
  UDP4_SENDMSG: 14,
  UDP6_SENDMSG: 15,
  UDP4_RECVMSG: 19,
  UDP6_RECVMSG: 20,
  INET_SOCK_RELEASE: 34,
  GETSOCKOPT: 21,
  INET4_GETPEERNAME: 29,
  INET6_GETPEERNAME: 30,
  SK_LOOKUP: 36,
} as const;

export function createMap(type: number, keySize: number, valueSize: number, maxEntries: number): number {
  return lib.bpf_map_create(type, 'mr_probe', keySize, valueSize, maxEntries, NULL);
}

/** A program of `type` for `attach` that returns 1 (allow/pass). */
export function loadTrivialProgram(type: number, attach: number): number {
  const opts = Buffer.alloc(16); // struct bpf_prog_load_opts { size_t sz; int attempts; enum expected_attach_type; }
  opts.writeBigUInt64LE(16n, 0);
  opts.writeUInt32LE(attach, 12);
  return lib.bpf_prog_load(type, 'mr_probe', 'GPL', RETURN_1, 2, opts);
}

/** bpf_link_create: a link fd, detached again when its last fd closes (unless pinned). */
export function linkCreate(progFd: number, targetFd: number, attach: number): number {
  return lib.bpf_link_create(progFd, targetFd, attach, NULL);
}

/** The legacy attach (no link), and its detach. */
export function progAttach(progFd: number, targetFd: number, attach: number): number {
  return lib.bpf_prog_attach(progFd, targetFd, attach, 0);
}
export function progDetach(progFd: number, targetFd: number, attach: number): number {
  return lib.bpf_prog_detach2(progFd, targetFd, attach);
}

export function loadBtf(blob: Buffer): number {
  return lib.bpf_btf_load(blob, blob.length, NULL);
}

/** Whether libbpf finds and parses the kernel's BTF (/sys/kernel/btf/vmlinux); else the negative errno. */
export function vmlinuxBtf(): true | number {
  const btf = lib.btf__load_vmlinux_btf();
  if (isNull(btf)) return -errno();
  lib.btf__free(btf);
  return true;
}
export { version as libbpfVersion } from '../sys/libbpf.js';
