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

/** What each lock protects, for messages. */
function targets(t: LockTargets, modes: readonly ModeName[]): { path: string; what: string; dir: boolean }[] {
  return [
    ...(modes.includes('ebpf') ? [{ path: t.bpffs, what: 'the eBPF pins', dir: true }] : []),
    ...(modes.includes('iptables')
      ? [{ path: iptablesLockPath(t.iptablesState), what: `the iptables state ${t.iptablesState}`, dir: false }]
      : []),
    { path: stateLockPath(t.stateDir), what: `the agent state in ${t.stateDir}`, dir: false },
  ];
}

export class AgentLocks {
  private constructor(
    private readonly locks: Lock[],
    private readonly state: Lock,
  ) {}

  /**
   * Takes the locks of an agent running `mode`; throws naming the pid that holds one. Creates the bpffs
   * directory (0700; a directory, no pin) and the state directory if they are missing.
   */
  static take(t: LockTargets, mode: ModeName): AgentLocks {
    if (mode === 'ebpf') {
      ensureBpffs(t.bpffs);
      mkdirSync(t.bpffs, { recursive: true, mode: 0o700 });
    } else mkdirSync(dirname(t.iptablesState), { recursive: true, mode: 0o700 });
    ensureStateDir(t.stateDir);
    const taken: Lock[] = [];
    try {
      for (const x of targets(t, [mode])) {
        try {
          taken.push(Lock.acquire(x.path, { dir: x.dir })!);
        } catch (e) {
          if (!(e instanceof LockHeld)) throw e;
          throw new Error(
            `another meshredir agent${e.pid === null ? '' : ` (pid ${e.pid})`} holds the lock on ${x.path} (${x.what}): one agent per installation; stop it first`,
          );
        }
      }
    } catch (e) {
      for (const l of taken) l.release();
      throw e;
    }
    const state = taken[taken.length - 1]!;
    state.writePid();
    return new AgentLocks(taken, state);
  }

  /** A reconcile pass completed. */
  beat(): void {
    this.state.beat();
  }

  /** Removes the lock files (after --cleanup-on-exit) while still holding them. */
  removeLockFiles(): void {
    for (const l of this.locks) l.unlink();
  }

  release(): void {
    for (const l of this.locks.reverse()) l.release();
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
