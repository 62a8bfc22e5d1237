// lock.ts — exclusive flock(2) locks: one agent per bpffs directory, iptables state and state directory.
// Who holds one is read from /proc/locks (util/proc-locks.ts).
import {
  closeSync,
  constants as C,
  fstatSync,
  futimesSync,
  ftruncateSync,
  openSync,
  statSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { holder } from '../util/proc-locks.js';
import { c, errno } from './libbpf.js';
import { errnoName } from './errno.js';

const LOCK_EX = 2;
const LOCK_NB = 4;
const EWOULDBLOCK = 11;

/** The lock is held by another process (`pid`: from /proc/locks; null when it cannot be seen). */
export class LockHeld extends Error {
  constructor(
    readonly path: string,
    readonly pid: number | null,
    message: string,
  ) {
    super(message);
  }
}

export class Lock {
  private closed = false;
  private constructor(
    readonly path: string,
    readonly fd: number,
    /** A directory's lock (else a lock file). */
    readonly dir: boolean,
  ) {}

  /**
   * Takes the lock on `path` without waiting: a lock file (created 0600 unless `create` is false) or a
   * directory (`dir`). Returns null when the path does not exist and may not be created; throws LockHeld
   * when another process holds it. A lock file removed and re-created while we took it (another process's
   * cleanup) is taken again, so that two processes never each hold a lock on a different file of one name.
   */
  static acquire(path: string, o: { dir?: boolean; create?: boolean } = {}): Lock | null {
    for (let attempt = 0; attempt < 5; attempt++) {
      let fd: number;
      try {
        fd = o.dir
          ? openSync(path, C.O_RDONLY | C.O_DIRECTORY)
          : openSync(path, C.O_RDWR | (o.create === false ? 0 : C.O_CREAT), 0o600);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'ENOENT' && (o.dir || o.create === false)) return null;
        throw e;
      }
      if (c.flock(fd, LOCK_EX | LOCK_NB) < 0) {
        const e = errno();
        closeSync(fd);
        if (e === EWOULDBLOCK) {
          const pid = holder(path);
          throw new LockHeld(path, pid, `${path} is locked by ${pid === null ? 'another process' : `pid ${pid}`}`);
        }
        throw new Error(`flock ${path}: ${errnoName(e)}`);
      }
      let same = false;
      try {
        const a = statSync(path, { bigint: true });
        const b = fstatSync(fd, { bigint: true });
        same = a.ino === b.ino && a.dev === b.dev;
      } catch {
        same = false;
      }
      if (same) return new Lock(path, fd, Boolean(o.dir));
      closeSync(fd);
    }
    throw new Error(`${path} kept being replaced while it was being locked`);
  }

  /** A lock file's content: the holder's pid (for people; /proc/locks is what counts) and mtime 0: no
   * reconcile pass completed yet (see beat()). */
  writePid(): void {
    ftruncateSync(this.fd, 0);
    writeSync(this.fd, `${process.pid}\n`, 0);
    futimesSync(this.fd, new Date(), new Date(0));
  }

  /** The heartbeat: the lock file's mtime is the time of the last completed pass (no content written). */
  beat(at = new Date()): void {
    if (!this.closed) futimesSync(this.fd, at, at);
  }

  /** Whether the path still names what was locked (not removed, not replaced). */
  current(): boolean {
    try {
      const a = statSync(this.path, { bigint: true });
      const b = fstatSync(this.fd, { bigint: true });
      return a.ino === b.ino && a.dev === b.dev;
    } catch {
      return false;
    }
  }

  /** Whether the lock file is empty (made by this attempt: writePid() not called yet). */
  empty(): boolean {
    return !this.dir && fstatSync(this.fd).size === 0;
  }

  /** Removes the lock file while still holding it (see acquire: the next taker gets a new file). */
  unlink(): void {
    if (this.dir) return;
    try {
      unlinkSync(this.path);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }

  release(): void {
    if (this.closed) return;
    this.closed = true;
    closeSync(this.fd);
  }
}

export { holder };
