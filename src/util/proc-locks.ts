// proc-locks.ts — who holds a flock(2) lock on a path, from /proc/locks: the kernel's own record, which a
// crashed holder cannot leave behind the way a pid file would. Readable by every user, no FFI needed.
import { readFileSync, statSync } from 'node:fs';

/** The pid holding a flock on `path` (null: none, or not visible), from /proc/locks. */
export function holder(path: string): number | null {
  let st;
  let text;
  try {
    st = statSync(path, { bigint: true });
    text = readFileSync('/proc/locks', 'utf8');
  } catch {
    return null;
  }
  const dev = st.dev;
  const major = ((dev >> 8n) & 0xfffn) | ((dev >> 32n) & ~0xfffn);
  const minor = (dev & 0xffn) | ((dev >> 12n) & ~0xffn);
  for (const line of text.split('\n')) {
    // "1: FLOCK  ADVISORY  WRITE 1234 00:2a:1110422 0 EOF"; waiters have "->" before FLOCK.
    const m = /^\d+:\s+FLOCK\s+\S+\s+WRITE\s+(-?\d+)\s+([0-9a-f]+):([0-9a-f]+):(\d+)\s/.exec(line);
    if (!m) continue;
    if (BigInt(`0x${m[2]}`) === major && BigInt(`0x${m[3]}`) === minor && BigInt(m[4]!) === st.ino) {
      const pid = Number(m[1]);
      return pid > 0 ? pid : null;
    }
  }
  return null;
}

/** Whether some process holds a flock on `path` (per /proc/locks). */
export const locked = (path: string): boolean => holder(path) !== null;
