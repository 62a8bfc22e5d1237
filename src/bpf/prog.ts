// prog.ts — facts about loaded programs by id: name, tag (hash of the instructions), type, and the
// maps a program uses; BPF_PROG_TEST_RUN of a program on a context.
import { lib, c, addressOf } from '../sys/libbpf.js';
import { mapInfo } from './map.js';
import { BpfError } from './errors.js';

export interface ProgInfo {
  id: number;
  type: number;
  tag: string;
  name: string;
}

export function progInfoByFd(fd: number, what: string): ProgInfo {
  const buf = Buffer.alloc(232);
  const len = Buffer.alloc(4);
  len.writeUInt32LE(buf.length);
  const r: number = lib.bpf_obj_get_info_by_fd(fd, buf, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  return {
    type: buf.readUInt32LE(0),
    id: buf.readUInt32LE(4),
    tag: buf.subarray(8, 16).toString('hex'),
    name: buf.toString('latin1', 64, 80).replace(/\0.*$/s, ''),
  };
}

export function progInfoById(id: number): ProgInfo | null {
  const fd: number = lib.bpf_prog_get_fd_by_id(id);
  if (fd < 0) return null;
  try {
    return progInfoByFd(fd, `program ${id}`);
  } finally {
    c.close(fd);
  }
}

const INFO_SIZE = 232;

/** The ids of the maps a program uses (bpf_prog_info.map_ids). */
export function progMapIds(fd: number, what: string): number[] {
  const len = Buffer.alloc(4);
  len.writeUInt32LE(INFO_SIZE);
  const first = Buffer.alloc(INFO_SIZE);
  let r: number = lib.bpf_obj_get_info_by_fd(fd, first, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  const n = first.readUInt32LE(52);
  if (n === 0) return [];
  const ids = Buffer.alloc(n * 4);
  const info = Buffer.alloc(INFO_SIZE);
  info.writeUInt32LE(n, 52); // nr_map_ids
  info.writeBigUInt64LE(addressOf(ids), 56); // map_ids
  len.writeUInt32LE(INFO_SIZE);
  r = lib.bpf_obj_get_info_by_fd(fd, info, len);
  if (r < 0) throw new BpfError(what, 'bpf_obj_get_info_by_fd', r);
  return Array.from({ length: Math.min(n, info.readUInt32LE(52)) }, (_, i) => ids.readUInt32LE(i * 4));
}

/** The maps a program (by id) uses, by map name → map id; null when the program is gone. */
export function progMapsById(progId: number): Map<string, number> | null {
  const fd: number = lib.bpf_prog_get_fd_by_id(progId);
  if (fd < 0) return null;
  try {
    const out = new Map<string, number>();
    for (const id of progMapIds(fd, `program ${progId}: map ids`)) {
      const mfd: number = lib.bpf_map_get_fd_by_id(id);
      if (mfd < 0) continue; // freed meanwhile
      try {
        out.set(mapInfo(mfd, `map ${id}`).name, id);
      } finally {
        c.close(mfd);
      }
    }
    return out;
  } finally {
    c.close(fd);
  }
}

/** The same for a program by fd (e.g. one just loaded). */
export function progMapsByFd(fd: number, what: string): Map<string, number> {
  const info = progInfoByFd(fd, what);
  return progMapsById(info.id) ?? new Map();
}

export interface TestRun {
  /** The program's return value (sk_lookup: SK_PASS 1, SK_DROP 0). */
  retval: number;
  /** Average run time in ns (over `repeat` runs). */
  duration: number;
  /** The context as the kernel wrote it back (sk_lookup: the selected socket's cookie). */
  ctxOut: Buffer;
}

/** BPF_PROG_TEST_RUN with a context and no packet data (the sk_lookup kind, kernel 5.13+). */
export function testRun(progFd: number, ctxIn: Buffer, what: string, repeat = 1): TestRun {
  const ctxOut = Buffer.alloc(ctxIn.length);
  // struct bpf_test_run_opts (libbpf ≥ 1.0): sz, data_in, data_out, data_size_in, data_size_out,
  // ctx_in, ctx_out, ctx_size_in, ctx_size_out, retval, repeat, duration, flags, cpu, batch_size.
  const opts = Buffer.alloc(80);
  opts.writeBigUInt64LE(80n, 0);
  opts.writeBigUInt64LE(addressOf(ctxIn), 32);
  opts.writeBigUInt64LE(addressOf(ctxOut), 40);
  opts.writeUInt32LE(ctxIn.length, 48);
  opts.writeUInt32LE(ctxOut.length, 52);
  opts.writeInt32LE(repeat, 60);
  const r: number = lib.bpf_prog_test_run_opts(progFd, opts);
  if (r < 0) throw new BpfError(what, 'bpf_prog_test_run_opts', r);
  return { retval: opts.readUInt32LE(56), duration: opts.readUInt32LE(64), ctxOut };
}

/** A program's run count and total run time (bpf_prog_info.run_cnt/run_time_ns: counted only while
 * kernel.bpf_stats_enabled is on, e.g. while an enableStats() fd is open); null when it is gone. */
export function progStats(id: number): { runCnt: bigint; runTimeNs: bigint; name: string } | null {
  const fd: number = lib.bpf_prog_get_fd_by_id(id);
  if (fd < 0) return null;
  try {
    const buf = Buffer.alloc(INFO_SIZE);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(INFO_SIZE);
    const r: number = lib.bpf_obj_get_info_by_fd(fd, buf, len);
    if (r < 0) throw new BpfError(`program ${id}`, 'bpf_obj_get_info_by_fd', r);
    return {
      runTimeNs: buf.readBigUInt64LE(192),
      runCnt: buf.readBigUInt64LE(200),
      name: buf.toString('latin1', 64, 80).replace(/\0.*$/s, ''),
    };
  } finally {
    c.close(fd);
  }
}

/** Turns on run-time statistics of every BPF program (BPF_ENABLE_STATS) until the returned function is
 * called: a file descriptor, so they go off again even if the process dies. */
export function enableStats(): () => void {
  const fd: number = lib.bpf_enable_stats(0 /* BPF_STATS_RUN_TIME */);
  if (fd < 0) throw new BpfError('turn on BPF run-time statistics', 'bpf_enable_stats', fd);
  return () => c.close(fd);
}
