// libbpf.ts — the only file that touches the FFI: thin declarations of the libbpf (and the few libc)
// functions meshredir calls, plus libbpf's log routed into a buffer errors can quote.
import ffi from '@2060.io/ffi-napi';
import ref from '@2060.io/ref-napi';

export type Ptr = Buffer; // an opaque C pointer as ref-napi represents it

const p = 'pointer';
const libbpfDecl = {
  libbpf_major_version: ['uint32', []],
  libbpf_minor_version: ['uint32', []],
  libbpf_set_print: [p, [p]],
  bpf_object__open_file: [p, ['string', p]],
  bpf_object__load: ['int', [p]],
  bpf_object__close: ['void', [p]],
  bpf_object__find_program_by_name: [p, [p, 'string']],
  bpf_object__find_map_by_name: [p, [p, 'string']],
  bpf_object__next_map: [p, [p, p]],
  bpf_object__next_program: [p, [p, p]],
  bpf_object__btf: [p, [p]],
  bpf_program__fd: ['int', [p]],
  bpf_program__set_autoload: ['int', [p, 'bool']],
  bpf_program__name: ['string', [p]],
  bpf_program__attach_cgroup: [p, [p, 'int']],
  bpf_program__attach_netns: [p, [p, 'int']],
  bpf_map__fd: ['int', [p]],
  bpf_map__name: ['string', [p]],
  bpf_map__type: ['int', [p]],
  bpf_map__set_max_entries: ['int', [p, 'uint32']],
  bpf_map__max_entries: ['uint32', [p]],
  bpf_map__key_size: ['uint32', [p]],
  bpf_map__value_size: ['uint32', [p]],
  bpf_map__reuse_fd: ['int', [p, 'int']],
  bpf_map__set_autocreate: ['int', [p, 'bool']],
  bpf_map__btf_key_type_id: ['uint32', [p]],
  bpf_map__btf_value_type_id: ['uint32', [p]],
  bpf_link__pin: ['int', [p, 'string']],
  bpf_link__unpin: ['int', [p]],
  bpf_link__fd: ['int', [p]],
  bpf_link__open: [p, ['string']],
  bpf_link__update_program: ['int', [p, p]],
  bpf_link__detach: ['int', [p]],
  bpf_link__destroy: ['int', [p]],
  bpf_link__disconnect: ['void', [p]],
  bpf_map_update_elem: ['int', ['int', p, p, 'uint64']],
  bpf_map_lookup_elem: ['int', ['int', p, p]],
  bpf_map_delete_elem: ['int', ['int', p]],
  bpf_map_get_next_key: ['int', ['int', p, p]],
  bpf_map_update_batch: ['int', ['int', p, p, p, p]],
  bpf_map_lookup_batch: ['int', ['int', p, p, p, p, p, p]],
  bpf_map_delete_batch: ['int', ['int', p, p, p]],
  bpf_obj_pin: ['int', ['int', 'string']],
  bpf_obj_get: ['int', ['string']],
  bpf_obj_get_info_by_fd: ['int', ['int', p, p]],
  bpf_prog_get_fd_by_id: ['int', ['uint32']],
  bpf_map_get_fd_by_id: ['int', ['uint32']],
  bpf_link_get_fd_by_id: ['int', ['uint32']],
  bpf_prog_get_next_id: ['int', ['uint32', p]],
  bpf_link_get_next_id: ['int', ['uint32', p]],
  bpf_prog_load: ['int', ['int', 'string', 'string', p, 'size_t', p]],
  bpf_map_create: ['int', ['int', 'string', 'uint32', 'uint32', 'uint32', p]],
  bpf_link_create: ['int', ['int', 'int', 'int', p]],
  bpf_link_detach: ['int', ['int']],
  bpf_prog_attach: ['int', ['int', 'int', 'int', 'uint32']],
  bpf_prog_detach2: ['int', ['int', 'int', 'int']],
  bpf_prog_query: ['int', ['int', 'int', 'uint32', p, p, p]],
  bpf_prog_test_run_opts: ['int', ['int', p]],
  bpf_btf_load: ['int', [p, 'size_t', p]],
  bpf_enable_stats: ['int', ['int']],
  btf__load_vmlinux_btf: [p, []],
  btf__free: ['void', [p]],
  btf__find_by_name_kind: ['int', [p, 'string', 'uint32']],
  btf__type_by_id: [p, [p, 'uint32']],
  btf__name_by_offset: ['string', [p, 'uint32']],
  btf__load_from_kernel_by_id: [p, ['uint32']],
  ring_buffer__new: [p, ['int', p, p, p]],
  ring_buffer__consume: ['int', [p]],
  ring_buffer__free: ['void', [p]],
} as const;
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Native<D> = { [K in keyof D]: (...args: any[]) => any };
const native = ffi.Library('libbpf.so.1', libbpfDecl as never) as unknown as Native<typeof libbpfDecl>;

const libcDecl = {
  vsnprintf: ['int', [p, 'size_t', p, p]],
  close: ['int', ['int']],
  open: ['int', ['string', 'int']],
  flock: ['int', ['int', 'int']],
  setns: ['int', ['int', 'int']],
  socket: ['int', ['int', 'int', 'int']],
  setsockopt: ['int', ['int', 'int', 'int', p, 'uint32']],
  getsockopt: ['int', ['int', 'int', 'int', p, p]],
  connect: ['int', ['int', p, 'uint32']],
  getsockname: ['int', ['int', p, p]],
  getpeername: ['int', ['int', p, p]],
  ioctl: ['int', ['int', 'ulong', 'int']],
  // pidfd_open/pidfd_getfd by number: their glibc wrappers only exist since 2.36.
  syscall: ['long', ['long', 'int', 'int', 'uint32']],
} as const;
const libc = ffi.Library(null as unknown as string, libcDecl as never) as unknown as Native<typeof libcDecl>;

export const NULL: Ptr = ref.NULL;
export const isNull = (x: Ptr): boolean => ref.isNull(x);
export const errno = (): number => ffi.errno();

/** The address of a buffer's memory, for the pointer fields of bpf_*_info (e.g. map_ids). */
export const addressOf = (b: Buffer): bigint => BigInt(ref.address(b));

/** Reads `size` bytes that a C pointer points at (BTF records). */
export function readAt(ptr: Ptr, size: number, offset = 0): Buffer {
  return ref.reinterpret(ptr as never, size + offset, 0).subarray(offset, offset + size);
}

// libbpf's log (verifier output included) is kept so a failing operation can quote it.
const logLines: string[] = [];
const LOG_KEEP = 400;
// Large enough for a whole verifier log (libbpf prints it as one message; its verdict is at the end).
// Unzeroed: pages are only touched as far as a message reaches.
const printBuf = Buffer.allocUnsafeSlow(4 << 20);
const printer = ffi.Callback('int', ['int', p, p], (_level: number, fmt: Ptr, args: Ptr) => {
  const n = libc.vsnprintf(printBuf, printBuf.length, fmt, args);
  const text = printBuf.toString('utf8', 0, Math.max(0, Math.min(n, printBuf.length - 1)));
  for (const line of text.split('\n')) if (line) logLines.push(line);
  if (logLines.length > LOG_KEEP) logLines.splice(0, logLines.length - LOG_KEEP);
  return 0;
});
native.libbpf_set_print(printer);
process.on('exit', () => void printer); // keeps the callback alive for the life of the process

/** Marks the log so that `logSince(mark)` returns only what libbpf said after it. */
export function logMark(): number {
  logLines.push('\u0000mark');
  return logLines.length;
}
export function logSince(mark: number): string[] {
  const at = logLines.lastIndexOf('\u0000mark', Math.max(0, mark - 1));
  return logLines.slice(at + 1).filter((l) => l !== '\u0000mark');
}

const SYS_PIDFD_OPEN = 434; // the same number on every architecture (unified syscall table)
const SYS_PIDFD_GETFD = 438;
/** pidfd_open(2): an fd for process `pid`; < 0 on failure (then errno()). */
export const pidfdOpen = (pid: number): number => Number(libc.syscall(SYS_PIDFD_OPEN, pid, 0, 0));
/** pidfd_getfd(2): a copy of fd `fd` of the process behind `pidfd` (ptrace-attach access needed). */
export const pidfdGetfd = (pidfd: number, fd: number): number => Number(libc.syscall(SYS_PIDFD_GETFD, pidfd, fd, 0));

/**
 * A libbpf ring buffer consumer (ring_buffer__new) on a BPF_MAP_TYPE_RINGBUF fd: `consume()` hands every
 * record written so far to `onRecord` (a copy; called synchronously, on this thread) and returns how many,
 * or a negative errno. `free()` unmaps it; the callback stays referenced until then.
 */
export function ringBuffer(
  mapFd: number,
  onRecord: (data: Buffer) => void,
): { ptr: Ptr; consume: () => number; free: () => void } | null {
  const cb = ffi.Callback('int', [p, p, 'size_t'], (_ctx: Ptr, data: Ptr, size: number) => {
    onRecord(Buffer.from(ref.reinterpret(data as never, Number(size), 0)));
    return 0;
  });
  const rb: Ptr = native.ring_buffer__new(mapFd, cb, ref.NULL, ref.NULL);
  if (ref.isNull(rb)) return null;
  let freed = false;
  return {
    ptr: rb,
    consume: () => (freed ? 0 : Number(native.ring_buffer__consume(rb))),
    free: () => {
      if (freed) return;
      freed = true;
      native.ring_buffer__free(rb);
      void cb; // referenced until the ring is freed: libbpf calls it until then
    },
  };
}

export const lib = native;
export const c = libc;
export const version = `${native.libbpf_major_version()}.${native.libbpf_minor_version()}`;
