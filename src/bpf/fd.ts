// fd.ts — kernel objects by file descriptor: open a pin, pin an fd, open a map by id, close; and the
// map-type numbers user space compares against (bpf_map_info.type).
import { lib, c } from '../sys/libbpf.js';
import { BpfError } from './errors.js';

/** enum bpf_map_type values meshredir meets. */
export const MapType = {
  HASH: 1,
  ARRAY: 2,
  PERCPU_HASH: 5,
  PERCPU_ARRAY: 6,
  LRU_HASH: 9,
  LRU_PERCPU_HASH: 10,
  LPM_TRIE: 11,
  SOCKMAP: 15,
  SOCKHASH: 18,
  SK_STORAGE: 24,
  RINGBUF: 27,
} as const;

const TYPE_NAMES = new Map<number, string>(
  Object.entries(MapType).map(([name, n]) => [n, name.toLowerCase()] as [number, string]),
);

/** A map type for messages: "hash", "lpm_trie", or its number. */
export function mapTypeName(t: number): string {
  return TYPE_NAMES.get(t) ?? String(t);
}

/** Opens a pinned object (map, link, program); throws a BpfError naming `what`. */
export function openPinned(path: string, what = `open pin ${path}`): number {
  const fd: number = lib.bpf_obj_get(path);
  if (fd < 0) throw new BpfError(what, 'bpf_obj_get', fd);
  return fd;
}

/** Opens a pinned object, or null when it cannot be opened (missing, not bpffs). */
export function tryOpenPinned(path: string): number | null {
  const fd: number = lib.bpf_obj_get(path);
  return fd < 0 ? null : fd;
}

/** Pins an object by fd. */
export function pinFd(fd: number, path: string, what = `pin at ${path}`): void {
  const r: number = lib.bpf_obj_pin(fd, path);
  if (r < 0) throw new BpfError(what, 'bpf_obj_pin', r);
}

/** An fd on the map with this id, or null when it is gone. */
export function mapFdById(id: number): number | null {
  const fd: number = lib.bpf_map_get_fd_by_id(id);
  return fd < 0 ? null : fd;
}

export function closeFd(fd: number): void {
  if (fd >= 0) c.close(fd);
}

/** Runs fn with an fd, closing it afterwards. */
export function withFd<T>(fd: number, fn: (fd: number) => T): T {
  try {
    return fn(fd);
  } finally {
    closeFd(fd);
  }
}
