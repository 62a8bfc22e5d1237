// errno.ts — errno numbers by name, and what each means, for messages.
import { constants } from 'node:os';

const names = new Map<number, string>();
for (const [name, code] of Object.entries(constants.errno)) if (!names.has(code)) names.set(code, name);
export const messages: Record<string, string> = {
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
