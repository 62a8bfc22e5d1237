// netns.ts — which network namespace a policy acts in (the iptables mode's rules, the eBPF mode's inbound
// sk_lookup link), named by inode (a path is only a way to reach it), opened as an fd so that a pid
// exiting or being reused cannot move us elsewhere, never the host's; and commands run inside it.
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, fstatSync, statSync, readFileSync, readdirSync, readlinkSync } from 'node:fs';
import { join } from 'node:path';
import type { Policy } from '../policy/schema.js';
import { cgroupDir, requireCgroup2 } from '../util/host.js';
import { subtreePids } from '../util/cgroups.js';

/** dev:ino of a namespace file: its identity. */
export function nsId(st: { dev: bigint; ino: bigint }): string {
  return `${st.dev}:${st.ino}`;
}

/** The identity of the namespace a path refers to, or null when the path is gone. */
export function idOf(path: string): string | null {
  try {
    return nsId(statSync(path, { bigint: true }));
  } catch {
    return null;
  }
}

/**
 * The host (init) network namespace, as the set of ids it can be known by: that of pid 1, and that
 * of kthreadd (kernel threads always live in the init netns; pid 1 may be a container's init, or
 * unreadable). Reading neither is an error, never a guess.
 */
export function hostNetnsIds(): Set<string> {
  const ids = new Set<string>();
  const errors: string[] = [];
  try {
    ids.add(nsId(statSync('/proc/1/ns/net', { bigint: true })));
  } catch (e) {
    errors.push(`/proc/1/ns/net: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    const st = readFileSync('/proc/2/status', 'utf8');
    if (/^Name:\s+kthreadd$/m.test(st) && /^PPid:\s+0$/m.test(st))
      ids.add(nsId(statSync('/proc/2/ns/net', { bigint: true })));
    else errors.push("/proc/2 is not kthreadd (a pid namespace without the host's processes?)");
  } catch (e) {
    errors.push(`/proc/2/ns/net: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (ids.size === 0)
    throw new Error(`cannot tell the host network namespace (${errors.join('; ')}); refusing to touch any netns`);
  return ids;
}

/** An open network namespace: commands run in it through /proc/self/fd of the fd passed to them. */
export class NetnsHandle {
  private constructor(
    readonly id: string,
    /** How it was reached (for messages and as a hint for next time). */
    readonly path: string,
    readonly fd: number,
  ) {}

  /** Opens `path` and checks that it is the namespace `expect` (when given) and not the host's. */
  static open(path: string, expect?: string): NetnsHandle {
    const fd = openSync(path, 'r');
    try {
      const id = nsId(fstatSync(fd, { bigint: true }));
      if (expect !== undefined && id !== expect)
        throw new Error(`${path} is now network namespace ${id}, not ${expect}`);
      if (hostNetnsIds().has(id))
        throw new Error(`${path} is the host network namespace; meshredir never puts rules there`);
      return new NetnsHandle(id, path, fd);
    } catch (e) {
      closeSync(fd);
      throw e;
    }
  }

  close(): void {
    closeSync(this.fd);
  }
}

/**
 * Runs a command inside an open netns (nsenter on the fd, so the path cannot be swapped underneath);
 * its stdout. A failure names the command, the netns and the first lines of stderr.
 */
export function runIn(ns: NetnsHandle, argv: string[], timeoutMs = 10_000): string {
  const full = ['nsenter', '--net=/proc/self/fd/3', ...argv];
  const r = spawnSync(full[0]!, full.slice(1), {
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'pipe', ns.fd],
    timeout: timeoutMs,
    // A busy pod's socket table is large (~150 bytes a socket): not the 1 MiB default.
    maxBuffer: 256 * 1024 * 1024,
  });
  if (r.error) throw new Error(`${argv[0]} in netns ${ns.path}: ${r.error.message}`);
  if (r.status !== 0)
    throw new Error(
      `${argv.join(' ')} in netns ${ns.path}: ${(r.stderr ?? '').trim().split('\n').slice(0, 3).join(' / ') || `exited ${r.status ?? r.signal}`}`,
    );
  return r.stdout;
}

export type Resolution = { ok: true; path: string; id: string } | { ok: false; reason: string };

/** What a mode says when a policy's netns is the host's. */
const HOST_REFUSAL = "iptables mode never puts rules there (they would redirect the whole node's TCP)";

/**
 * The pod netns of a policy: spec.netns, else the one netns every process of its cgroup subtree is
 * in. No process, processes in different netns (one that joined the cgroup before its setns, a
 * container being set up), or the host netns (a hostNetwork pod) are refusals with the reason.
 */
export function resolvePolicyNetns(p: Policy, host = hostNetnsIds(), hostRefusal = HOST_REFUSAL): Resolution {
  if (p.netns) {
    const id = idOf(p.netns);
    if (!id) return { ok: false, reason: `spec.netns ${p.netns} does not exist` };
    if (host.has(id))
      return {
        ok: false,
        reason: `spec.netns ${p.netns} is the host network namespace; ${hostRefusal}`,
      };
    return { ok: true, path: p.netns, id };
  }
  const dir = cgroupDir(p.cgroup, requireCgroup2());
  // Lowest pid first: usually the pod's oldest process, so the path stays the same across reconciles.
  const pids = subtreePids(dir).sort((a, b) => a - b);
  if (pids.length === 0)
    return {
      ok: false,
      reason: `no process in cgroup ${p.cgroup} (or below) yet to take the pod network namespace from, and no spec.netns; retried at the next reconcile`,
    };
  const seen = new Map<string, number[]>();
  for (const pid of pids) {
    const id = idOf(`/proc/${pid}/ns/net`);
    if (id === null) continue; // exited meanwhile
    seen.set(id, [...(seen.get(id) ?? []), pid]);
  }
  if (seen.size === 0)
    return {
      ok: false,
      reason: `every process of cgroup ${p.cgroup} exited while it was read; retried at the next reconcile`,
    };
  if (seen.size > 1) {
    const list = [...seen.entries()]
      .map(
        ([id, ps]) =>
          `${host.has(id) ? 'host netns' : `netns ${id}`}: pid ${ps.slice(0, 3).join(', ')}${ps.length > 3 ? ', …' : ''}`,
      )
      .join('; ');
    return {
      ok: false,
      reason: `the processes of cgroup ${p.cgroup} are in ${seen.size} different network namespaces (${list}); waiting until they agree (retried at the next reconcile), or set spec.netns`,
    };
  }
  const [[id, ps]] = [...seen.entries()] as [[string, number[]]];
  if (host.has(id))
    return {
      ok: false,
      reason: `the processes of cgroup ${p.cgroup} are in the host network namespace (a hostNetwork pod, or a process that has not entered its pod netns yet); ${hostRefusal}`,
    };
  return { ok: true, path: `/proc/${ps[0]}/ns/net`, id };
}

/**
 * Finds a path to the network namespace `id` now: the remembered path if it still is that netns,
 * else any process's ns/net, a bind mount of it (/run/netns, or any nsfs mount), or an fd some process
 * holds on it. null means nothing on this host refers to it any more: it no longer exists.
 */
export function findNetns(id: string, hint?: string): string | null {
  if (hint && idOf(hint) === id) return hint;
  const candidates: string[] = [];
  try {
    for (const n of readdirSync('/run/netns')) candidates.push(join('/run/netns', n));
  } catch {
    // no /run/netns
  }
  try {
    for (const l of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
      const f = l.split(' ');
      const dash = f.indexOf('-');
      if (dash > 0 && f[dash + 1] === 'nsfs' && f[4])
        candidates.push(f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8))));
    }
  } catch {
    // no mountinfo
  }
  for (const c of candidates) if (idOf(c) === id) return c;
  const ino = id.split(':')[1];
  let pids: string[] = [];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return null;
  }
  for (const pid of pids) {
    const p = `/proc/${pid}/ns/net`;
    if (idOf(p) === id) return p;
  }
  // Held only by an open fd (a netns kept alive by a process that left it).
  for (const pid of pids) {
    let fds: string[];
    try {
      fds = readdirSync(`/proc/${pid}/fd`);
    } catch {
      continue;
    }
    for (const fd of fds) {
      try {
        if (readlinkSync(`/proc/${pid}/fd/${fd}`) === `net:[${ino}]`) {
          const p = `/proc/${pid}/fd/${fd}`;
          if (idOf(p) === id) return p;
        }
      } catch {
        // closed meanwhile
      }
    }
  }
  return null;
}

/** Every process whose network namespace is `id` now (a scan of /proc; for one-off checks, not loops). */
export function pidsInNetns(id: string): number[] {
  let pids: string[];
  try {
    pids = readdirSync('/proc').filter((n) => /^\d+$/.test(n));
  } catch {
    return [];
  }
  return pids.filter((pid) => idOf(`/proc/${pid}/ns/net`) === id).map(Number);
}
