// lock.ts — one agent per installation: before it pins or applies anything, the agent takes an exclusive
// flock on what its mode writes — the --bpffs directory itself (eBPF; bpffs holds only pins and
// directories, so the directory is the lock: any two agents that would write the same pins contend,
// whatever their other options) or a lock file beside the --iptables-state file (iptables) — and on
// agent.lock in --state-dir (one agent per agent.json). agent.lock's mtime is also the heartbeat: the
// time of the last completed reconcile pass, written without rewriting agent.json.
import { mkdirSync, rmdirSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import type { ModeName } from '../modes/mode.js';
import { Lock, LockHeld } from '../sys/lock.js';
import { ensureBpffs } from '../util/host.js';
import { ensureStateDir, stateLockPath } from './state.js';

export const iptablesLockPath = (state: string): string => `${state}.lock`;

export interface LockTargets {
  stateDir: string;
  bpffs: string;
  iptablesState: string;
}

/** What each lock protects, for messages; the state directory's first (it creates no pin directory), and
 * the agent takes them in this order. */
function targets(t: LockTargets, modes: readonly ModeName[]): { path: string; what: string; dir: boolean }[] {
  return [
    { path: stateLockPath(t.stateDir), what: `the agent state in ${t.stateDir}`, dir: false },
    ...(modes.includes('ebpf') ? [{ path: t.bpffs, what: 'the eBPF pins', dir: true }] : []),
    ...(modes.includes('iptables')
      ? [{ path: iptablesLockPath(t.iptablesState), what: `the iptables state ${t.iptablesState}`, dir: false }]
      : []),
  ];
}

const heldMessage = (e: LockHeld, x: { path: string; what: string }) =>
  `another meshredir agent${e.pid === null ? '' : ` (pid ${e.pid})`} holds the lock on ${x.path} (${x.what}): one agent per installation; stop it first`;

/** Takes the lock on `x` without waiting; throws naming the pid that holds it. */
function acquire(x: { path: string; what: string; dir: boolean }): Lock {
  try {
    return Lock.acquire(x.path, { dir: x.dir })!;
  } catch (e) {
    if (!(e instanceof LockHeld)) throw e;
    throw new Error(heldMessage(e, x));
  }
}

/**
 * An agent's locks, taken in two steps so that its metrics address can be bound between them: the state
 * directory's first (takeState: it makes no pin directory), then the mode's (takeMode: the bpffs directory
 * or the iptables state's lock file). A start that fails before takeMode completes is undone by abandon(),
 * which leaves nothing behind.
 */
export class AgentLocks {
  private constructor(
    private readonly t: LockTargets,
    private readonly mode: ModeName,
    private locks: Lock[],
    /** The first directory takeState created for the state directory (undefined: it existed). */
    private readonly madeDir: string | undefined,
  ) {}

  /** Takes agent.lock in the state directory (created 0700 if missing); throws naming the pid that holds it. */
  static takeState(t: LockTargets, mode: ModeName): AgentLocks {
    const made = ensureStateDir(t.stateDir);
    const locks = new AgentLocks(t, mode, [], made);
    try {
      locks.locks.push(acquire(targets(t, [mode])[0]!));
    } catch (e) {
      locks.abandon();
      throw e;
    }
    return locks;
  }

  /**
   * Takes the mode's lock after takeState, creating the bpffs directory (0700; a directory, no pin) or the
   * iptables state's directory if missing, and writes the pid into agent.lock; throws naming the pid that
   * holds it (the caller then calls abandon()).
   */
  takeMode(): void {
    for (const x of targets(this.t, [this.mode]).slice(this.locks.length)) {
      if (x.dir) {
        ensureBpffs(this.t.bpffs);
        mkdirSync(this.t.bpffs, { recursive: true, mode: 0o700 });
      } else mkdirSync(dirname(x.path), { recursive: true, mode: 0o700 });
      this.locks.push(acquire(x));
    }
    this.locks[0]!.writePid();
  }

  /**
   * Undoes a start that failed before takeMode completed: releases the locks, removing the lock files this
   * start created (still empty: the pid is written once all are taken) and the state directory it created.
   */
  abandon(): void {
    for (const l of this.locks.reverse()) {
      if (l.empty()) l.unlink();
      l.release();
    }
    this.locks = [];
    // From the state directory up to the first directory takeState made; each only if empty.
    const made = this.madeDir === undefined ? undefined : resolve(this.madeDir);
    for (let d = resolve(this.t.stateDir); made !== undefined; d = dirname(d)) {
      try {
        rmdirSync(d);
      } catch {
        break;
      }
      if (d === made || d === dirname(d)) break;
    }
  }

  /**
   * A reconcile pass completed: the heartbeat. A locked path that is no longer what was locked (the bpffs
   * directory removed by `cleanup --force` and made again by the repair) is locked again, so that a
   * second agent cannot start on it; if another process got there first, that is said.
   */
  beat(): string | null {
    let problem: string | null = null;
    this.locks = this.locks.map((l, i) => {
      if (l.current()) return l;
      const x = targets(this.t, [this.mode])[i]!;
      try {
        const again = Lock.acquire(x.path, { dir: x.dir, create: !x.dir });
        if (!again) return l;
        l.release();
        if (i === 0) again.writePid();
        return again;
      } catch (e) {
        if (!(e instanceof LockHeld)) throw e;
        problem = heldMessage(e, x);
        return l;
      }
    });
    this.locks[0]!.beat();
    return problem;
  }

  /** Removes the lock files (after --cleanup-on-exit) while still holding them. */
  removeLockFiles(): void {
    for (const l of this.locks) l.unlink();
  }

  release(): void {
    for (const l of [...this.locks].reverse()) l.release();
  }
}

/** What `cleanup` found: the locks it took (held while it removes), and those another process holds. */
export interface CleanupLocks {
  taken: Lock[];
  held: { path: string; what: string; pid: number | null }[];
}

/** Takes whichever agent locks exist, without waiting; reports those held (by a running agent). */
export function lockForCleanup(t: LockTargets): CleanupLocks {
  const out: CleanupLocks = { taken: [], held: [] };
  for (const x of targets(t, ['ebpf', 'iptables'])) {
    try {
      const l = Lock.acquire(x.path, { dir: x.dir, create: false });
      if (l) out.taken.push(l);
    } catch (e) {
      if (!(e instanceof LockHeld)) throw e;
      out.held.push({ path: x.path, what: x.what, pid: e.pid });
    }
  }
  return out;
}
