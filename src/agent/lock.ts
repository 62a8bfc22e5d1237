// lock.ts — one agent per installation: before it pins or applies anything, the agent takes an exclusive
// flock on what its mode writes — the --bpffs directory itself (eBPF; bpffs holds only pins and
// directories, so the directory is the lock: any two agents that would write the same pins contend,
// whatever their other options) or a lock file beside the --iptables-state file (iptables) — and on
// agent.lock in --state-dir (one agent per agent.json). agent.lock's mtime is also the heartbeat: the
// time of the last completed reconcile pass, written without rewriting agent.json.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
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

/** What each lock protects, for messages; the state directory's first (it creates no pin directory). */
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

export class AgentLocks {
  private constructor(
    private readonly t: LockTargets,
    private readonly mode: ModeName,
    private locks: Lock[],
  ) {}

  /**
   * Takes the locks of an agent running `mode`; throws naming the pid that holds one. Creates the state
   * directory and then the bpffs directory (0700; a directory, no pin) if they are missing.
   */
  static take(t: LockTargets, mode: ModeName): AgentLocks {
    ensureStateDir(t.stateDir);
    const taken: Lock[] = [];
    try {
      for (const x of targets(t, [mode])) {
        if (x.dir) {
          ensureBpffs(t.bpffs);
          mkdirSync(t.bpffs, { recursive: true, mode: 0o700 });
        } else mkdirSync(dirname(x.path), { recursive: true, mode: 0o700 });
        try {
          taken.push(Lock.acquire(x.path, { dir: x.dir })!);
        } catch (e) {
          if (!(e instanceof LockHeld)) throw e;
          throw new Error(heldMessage(e, x));
        }
      }
    } catch (e) {
      // A lock file this attempt created (still empty: the pid is written once all are taken) goes again.
      for (const l of taken.reverse()) {
        if (l.empty()) l.unlink();
        l.release();
      }
      throw e;
    }
    taken[0]!.writePid();
    return new AgentLocks(t, mode, taken);
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

/**
 * Whether another agent holds one of `mode`'s locks, as the message AgentLocks.take would give; creates
 * nothing (a path that does not exist is not held). For errors that a running agent explains better
 * than the error itself (its metrics address already bound).
 */
export function heldBy(t: LockTargets, mode: ModeName): string | null {
  for (const x of targets(t, [mode])) {
    try {
      Lock.acquire(x.path, { dir: x.dir, create: false })?.release();
    } catch (e) {
      if (!(e instanceof LockHeld)) throw e;
      return heldMessage(e, x);
    }
  }
  return null;
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
