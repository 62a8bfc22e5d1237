// errors.ts — the one error class for kernel/libbpf failures: what was being done, the libbpf
// function, and the errno by name.
import { constants } from 'node:os';

const names = new Map<number, string>();
for (const [name, code] of Object.entries(constants.errno)) if (!names.has(code)) names.set(code, name);
const messages: Record<string, string> = {
  EPERM: 'operation not permitted',
  EACCES: 'permission denied',
  ENOENT: 'no such file or directory',
  EEXIST: 'already exists',
  EINVAL: 'invalid argument',
  E2BIG: 'argument list too long',
  ENOSPC: 'no space left (map full)',
  ENOMEM: 'out of memory',
  EBUSY: 'device or resource busy',
  EBADF: 'bad file descriptor',
  ENOTSUP: 'not supported',
  EOPNOTSUPP: 'operation not supported',
  ENOTDIR: 'not a directory',
  ESRCH: 'no such process',
  ENXIO: 'no such device or address',
  EFAULT: 'bad address',
  ENOTEMPTY: 'directory not empty',
};

export function errnoName(code: number): string {
  return names.get(code) ?? `errno ${code}`;
}

export class BpfError extends Error {
  override readonly name = 'BpfError';
  /** Positive errno. */
  readonly errno: number;
  readonly code: string;
  constructor(
    /** What was being done, e.g. "attach mr_connect4 to /pods/a". */
    readonly what: string,
    /** The libbpf (or kernel) function that failed. */
    readonly op: string,
    errno: number,
    /** libbpf's own log lines for this operation (verifier output, …). */
    readonly log: string[] = [],
  ) {
    const e = Math.abs(errno);
    const code = errnoName(e);
    super(`${what}: ${op}: ${code} (${messages[code] ?? 'error'})`);
    this.errno = e;
    this.code = code;
  }
}
