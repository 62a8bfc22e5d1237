// libbpf.ts — the only file that touches the FFI: thin declarations of the libbpf (and the few libc)
// functions meshredir calls, plus libbpf's log routed into a buffer errors can quote.
import { createRequire } from 'node:module';

// The FFI is loaded, and each function defined, on first use: a command that imports the eBPF mode but
// never calls libbpf (`status` with nothing installed) does not pay for it, and the agent pays only for
// the functions it calls (defining all of them up front took ~50 ms of every start).
type Ffi = typeof import('@2060.io/ffi-napi');
type Ref = typeof import('@2060.io/ref-napi');
let ffiModule: Ffi | undefined;
let refModule: Ref | undefined;
function refLib(): Ref {
  if (!refModule) {
    refModule = createRequire(import.meta.url)('@2060.io/ref-napi') as Ref;
    NULL = refModule.NULL;
  }
  return refModule;
}
function ffiLib(): Ffi {
  if (!ffiModule) {
    refLib();
    ffiModule = createRequire(import.meta.url)('@2060.io/ffi-napi') as Ffi;
    onFfiLoaded(ffiModule);
  }
  return ffiModule;
}

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

/** An object whose functions are defined (dlsym + FFI signature) when first read. */
function lazyLibrary<D extends Record<string, readonly [string, readonly string[]]>>(
  file: string | null,
  decl: D,
): Native<D> {
  let dl: InstanceType<Ffi['DynamicLibrary']> | undefined;
  const defined: Record<string, unknown> = {};
  return new Proxy(defined, {
    get(_, name) {
      if (typeof name !== 'string' || !Object.hasOwn(decl, name)) return undefined;
      if (defined[name]) return defined[name];
      const f = ffiLib();
      dl ??= new f.DynamicLibrary(file ?? undefined, f.DynamicLibrary.FLAGS.RTLD_NOW);
      const [ret, args] = decl[name]!;
      const fn = dl.get(name);
      if (refLib().isNull(fn)) throw new Error(`${file ?? 'libc'} has no function ${name}`);
      return (defined[name] = f.ForeignFunction(fn, ret, args as string[]));
    },
  }) as Native<D>;
}
const native = lazyLibrary('libbpf.so.1', libbpfDecl);

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
  pthread_sigmask: ['int', ['int', p, p]],
  // pidfd_open/pidfd_getfd by number: their glibc wrappers only exist since 2.36.
  syscall: ['long', ['long', 'int', 'int', 'uint32']],
} as const;
const libc = lazyLibrary(null, libcDecl);

/**
 * The C NULL pointer, for arguments: ref-napi's NULL buffer once the FFI is loaded (by the first use of
 * `lib`/`c`, which `lib.f(…, NULL)` reads before its arguments), JS null before (which ref-napi also
 * writes as a NULL pointer).
 */
export let NULL: Ptr = null as unknown as Ptr;
export const isNull = (x: Ptr): boolean => refLib().isNull(x);
export const errno = (): number => ffiLib().errno();

/** The address of a buffer's memory, for the pointer fields of bpf_*_info (e.g. map_ids). */
export const addressOf = (b: Buffer): bigint => BigInt(refLib().address(b));

/** Reads `size` bytes that a C pointer points at (BTF records). */
export function readAt(ptr: Ptr, size: number, offset = 0): Buffer {
  return refLib()
    .reinterpret(ptr as never, size + offset, 0)
    .subarray(offset, offset + size);
}

// libbpf's log (verifier output included) is kept so a failing operation can quote it. Its debug
// messages (hundreds per object: sections, relocations, maps) are dropped unless asked for: formatting
// each through the FFI took ~0.1 ms, tens of ms of every load; its warnings (the verifier's log, a
// failed relocation) are kept always.
const LIBBPF_DEBUG = 2;
let keepDebug = false;
/** Keep libbpf's debug messages too (`--debug`). */
export function keepLibbpfDebug(on: boolean): void {
  keepDebug = on;
}
const logLines: string[] = [];
const LOG_KEEP = 400;
// Large enough for a whole verifier log (libbpf prints it as one message; its verdict is at the end).
// Unzeroed: pages are only touched as far as a message reaches.
function onFfiLoaded(ffi: Ffi): void {
  const printBuf = Buffer.allocUnsafeSlow(4 << 20);
  const printer = ffi.Callback('int', ['int', p, p], (level: number, fmt: Ptr, args: Ptr) => {
    if (level === LIBBPF_DEBUG && !keepDebug) return 0;
    const n = libc.vsnprintf(printBuf, printBuf.length, fmt, args);
    const text = printBuf.toString('utf8', 0, Math.max(0, Math.min(n, printBuf.length - 1)));
    for (const line of text.split('\n')) if (line) logLines.push(line);
    if (logLines.length > LOG_KEEP) logLines.splice(0, logLines.length - LOG_KEEP);
    return 0;
  });
  // Before any other libbpf call: the first use of the FFI is what loads it.
  native.libbpf_set_print(printer);
  process.on('exit', () => void printer); // keeps the callback alive for the life of the process
}

/** Marks the log so that `logSince(mark)` returns only what libbpf said after it. */
export function logMark(): number {
  logLines.push('\u0000mark');
  return logLines.length;
}
export function logSince(mark: number): string[] {
  const at = logLines.lastIndexOf('\u0000mark', Math.max(0, mark - 1));
  return logLines.slice(at + 1).filter((l) => l !== '\u0000mark');
}

const SIG_BLOCK = 0;
const SIG_SETMASK = 2;
const SIGPROF = 27; // x86-64 and arm64 alike
/**
 * `fn()` with SIGPROF held on this thread. A sampling profiler (`node --cpu-prof`) signals the thread every
 * interval, and the verifier gives up on a program (EAGAIN) when a signal is pending: under a profiler
 * no program that takes longer than the interval would load. The held samples are taken when it returns.
 */
export function holdingProfilerSignal<T>(fn: () => T): T {
  const set = Buffer.alloc(128); // sigset_t
  set.writeUInt32LE(1 << (SIGPROF - 1), 0);
  const old = Buffer.alloc(128);
  if (libc.pthread_sigmask(SIG_BLOCK, set, old) !== 0) return fn();
  try {
    return fn();
  } finally {
    libc.pthread_sigmask(SIG_SETMASK, old, NULL);
  }
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
  const cb = ffiLib().Callback('int', [p, p, 'size_t'], (_ctx: Ptr, data: Ptr, size: number) => {
    onRecord(Buffer.from(refLib().reinterpret(data as never, Number(size), 0)));
    return 0;
  });
  const rb: Ptr = native.ring_buffer__new(mapFd, cb, NULL, NULL);
  if (isNull(rb)) return null;
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
/** The libbpf version this process runs with, e.g. "1.1". */
export const version = (): string => `${native.libbpf_major_version()}.${native.libbpf_minor_version()}`;
