// link.ts — a bpf_link as a first-class object: attach to a cgroup or a network namespace, pin, reopen
// from a pin, swap its program atomically, detach.
import { openSync, closeSync, rmSync } from 'node:fs';
import { lib, isNull, errno, c, NULL, type Ptr } from '../sys/libbpf.js';
import { BpfError } from './errors.js';
import type { Program } from './object.js';

export interface LinkInfo {
  id: number;
  type: number;
  progId: number;
  /** For cgroup links. */
  cgroupId?: bigint;
  attachType?: number;
  /** For sockmap links (sk_msg on a sockhash). */
  mapId?: number;
  /** For netns links (sk_lookup): the netns inode, 0 once the netns is gone (the link is then defunct). */
  netnsIno?: number;
}

const BPF_LINK_TYPE_CGROUP = 3;
export const BPF_LINK_TYPE_NETNS = 5;
export const BPF_LINK_TYPE_SOCKMAP = 14;
const BPF_SK_MSG_VERDICT = 7;
/** Cgroup hooks whose programs are attached on demand by fd (their pinned program), with bpf_link_create. */
const CGROUP_ATTACH = { setsockopt: 22, sock_release: 34 } as const;
export type OnDemandHook = keyof typeof CGROUP_ATTACH;
const BPF_SK_LOOKUP = 36;

export function linkInfoByFd(fd: number, what: string): LinkInfo {
  const buf = Buffer.alloc(64);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(buf.length);
  const r: number = lib.bpf_obj_get_info_by_fd(fd, buf, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  const type = buf.readUInt32LE(0);
  const info: LinkInfo = { type, id: buf.readUInt32LE(4), progId: buf.readUInt32LE(8) };
  if (type === BPF_LINK_TYPE_CGROUP) {
    info.cgroupId = buf.readBigUInt64LE(16);
    info.attachType = buf.readUInt32LE(24);
  }
  if (type === BPF_LINK_TYPE_NETNS) {
    info.netnsIno = buf.readUInt32LE(16);
    info.attachType = buf.readUInt32LE(20);
  }
  if (type === BPF_LINK_TYPE_SOCKMAP) {
    info.mapId = buf.readUInt32LE(16);
    info.attachType = buf.readUInt32LE(20);
  }
  return info;
}

export class Link {
  private ptr: Ptr | null;
  private constructor(
    ptr: Ptr,
    /** For messages: what the link attaches. */
    readonly label: string,
  ) {
    this.ptr = ptr;
  }

  private get handle(): Ptr {
    if (!this.ptr) throw new Error(`link ${this.label}: already closed`);
    return this.ptr;
  }

  get fd(): number {
    return lib.bpf_link__fd(this.handle);
  }

  /** Attaches a program to a cgroup (by path) through a bpf_link. */
  static attachCgroup(prog: Program, cgroupPath: string): Link {
    const what = `attach ${prog.name} to ${cgroupPath}`;
    let cgfd: number;
    try {
      cgfd = openSync(cgroupPath, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).errno ?? -2;
      throw new BpfError(what, 'open', code);
    }
    try {
      const p: Ptr = lib.bpf_program__attach_cgroup(prog.ptr, cgfd);
      if (isNull(p)) throw new BpfError(what, 'bpf_program__attach_cgroup', errno());
      return new Link(p, `${prog.name}@${cgroupPath}`);
    } finally {
      closeSync(cgfd);
    }
  }

  /** Attaches a program (sk_lookup) to a network namespace (by path, e.g. /run/netns/x or
   * /proc/PID/ns/net) through a bpf_link. The link does not keep the netns alive: once the netns is
   * destroyed the link is defunct (info().netnsIno === 0) until it is unpinned and closed. */
  static attachNetns(prog: Program, netnsPath: string): Link {
    const what = `attach ${prog.name} to netns ${netnsPath}`;
    let nsfd: number;
    try {
      nsfd = openSync(netnsPath, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).errno ?? -2;
      throw new BpfError(what, 'open', code);
    }
    try {
      const p: Ptr = lib.bpf_program__attach_netns(prog.ptr, nsfd);
      if (isNull(p)) throw new BpfError(what, 'bpf_program__attach_netns', errno());
      return new Link(p, `${prog.name}@${netnsPath}`);
    } finally {
      closeSync(nsfd);
    }
  }

  /** Attaches an sk_msg program to a sockhash through a bpf_link (kernel 6.10+) and pins it. */
  static attachSkMsgPinned(prog: Program, mapFd: number, pinPath: string): void {
    createPinned(prog.fd, mapFd, BPF_SK_MSG_VERDICT, pinPath, `attach ${prog.name} to its sockhash`, prog.name);
  }

  /** Attaches a (pinned, loaded earlier) sk_lookup program by fd to a network namespace by fd, pins the
   * link and lets go of it: the pin keeps it attached. */
  static attachNetnsPinned(progFd: number, netnsFd: number, pinPath: string, label: string): void {
    createPinned(progFd, netnsFd, BPF_SK_LOOKUP, pinPath, `attach mr_sklookup to netns ${label}`, `of netns ${label}`);
  }

  /** Attaches a (pinned, loaded earlier) cgroup program by fd to a cgroup by path, pins the link and lets go
   * of it: the pin keeps it attached. */
  static attachCgroupPinned(progFd: number, hook: OnDemandHook, cgroupPath: string, pinPath: string, label: string) {
    const what = `attach ${label} to ${cgroupPath}`;
    let cgfd: number;
    try {
      cgfd = openSync(cgroupPath, 'r');
    } catch (e) {
      throw new BpfError(what, 'open', (e as NodeJS.ErrnoException).errno ?? -2);
    }
    try {
      createPinned(progFd, cgfd, CGROUP_ATTACH[hook], pinPath, what, label);
    } finally {
      closeSync(cgfd);
    }
  }

  /** Reopens a pinned link (how a restarted agent re-adopts its attachments). */
  static open(pinPath: string): Link {
    const p: Ptr = lib.bpf_link__open(pinPath);
    if (isNull(p)) throw new BpfError(`open pinned link ${pinPath}`, 'bpf_link__open', errno());
    return new Link(p, pinPath);
  }

  info(): LinkInfo {
    return linkInfoByFd(this.fd, `link ${this.label}: info`);
  }

  pin(path: string): void {
    const r: number = lib.bpf_link__pin(this.handle, path);
    if (r < 0) throw new BpfError(`pin link ${this.label} at ${path}`, 'bpf_link__pin', r);
  }

  unpin(): void {
    const r: number = lib.bpf_link__unpin(this.handle);
    if (r < 0) throw new BpfError(`unpin link ${this.label}`, 'bpf_link__unpin', r);
  }

  /** Replaces the program atomically: no moment without a program attached. */
  update(prog: Program): void {
    const r: number = lib.bpf_link__update_program(this.handle, prog.ptr);
    if (r < 0) throw new BpfError(`update link ${this.label} to ${prog.name}`, 'bpf_link__update_program', r);
  }

  /** Detaches the program from its hook; the link object stays valid (defunct) until closed. */
  detach(): void {
    const r: number = lib.bpf_link__detach(this.handle);
    if (r < 0) throw new BpfError(`detach link ${this.label}`, 'bpf_link__detach', r);
  }

  /** Releases this process's handle: a pinned link stays attached (the pin holds it), an unpinned one
   * is released, which detaches it. Safe to call twice. (libbpf's destroy of a link disconnected
   * first never closes its fd: every open/close leaked one, and with it the link and its program.) */
  close(): void {
    if (!this.ptr) return;
    lib.bpf_link__destroy(this.ptr);
    this.ptr = null;
  }
}

/** Detaches the link pinned at `pin` and removes the pin; a pin already defunct or not a link is removed too. */
export function detachPinned(pin: string): void {
  try {
    const l = Link.open(pin);
    try {
      l.detach();
    } finally {
      l.close();
    }
  } catch (e) {
    if (!(e instanceof BpfError)) throw e; // already defunct or not a link: still ours to unpin
  }
  rmSync(pin, { force: true });
}

/** bpf_link_create, then the link pinned and let go of: the pin keeps it attached (a failed pin: detached
 * with the close). */
function createPinned(progFd: number, targetFd: number, type: number, pinPath: string, what: string, label: string) {
  const fd: number = lib.bpf_link_create(progFd, targetFd, type, NULL);
  if (fd < 0) throw new BpfError(what, 'bpf_link_create', fd);
  try {
    const r: number = lib.bpf_obj_pin(fd, pinPath);
    if (r < 0) throw new BpfError(`pin link ${label} at ${pinPath}`, 'bpf_obj_pin', r);
  } finally {
    c.close(fd);
  }
}
