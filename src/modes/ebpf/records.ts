// records.ts — the eBPF mode's record path seen from user space: the per-policy budgets of handshakes in
// flight (their defaults and what status shows of them), and the pod netns a policy's connects must come
// from. Small and separate so that the mode's main file only calls it.
import { statSync } from 'node:fs';
import { DEFAULT_MAX_CONNECTIONS, defaultPendingBudget } from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import type { Policy } from '../../policy/schema.js';

/** The budget every policy gets: --max-pending-per-policy, or the default for the node's limit. */
export function pendingBudget(cfg: { maxConnections?: number; maxPendingPerPolicy?: number }): number {
  return cfg.maxPendingPerPolicy ?? defaultPendingBudget(cfg.maxConnections ?? DEFAULT_MAX_CONNECTIONS);
}

/** spec.netns as the kernel names it: the inode number of the nsfs file (what ns.inum holds), or null
 * when it cannot be read (then the check is off for that policy, and the caller warns). */
export function netnsInode(path: string | undefined): number | null | undefined {
  if (!path) return undefined;
  try {
    const st = statSync(path);
    return Number(st.ino);
  } catch {
    return null;
  }
}

/** Per slot: its handshakes in flight now (mr_pending) and its budget (mr_policies.pending_max). */
export function slotPending(
  pending: BpfMap<unknown, unknown>,
  policies: BpfMap<unknown, unknown>,
  slots: number[],
): Map<number, { now: number; limit: number }> {
  const out = new Map<number, { now: number; limit: number }>();
  for (const slot of slots) {
    const now = (pending.get(slot) as { now: bigint } | undefined)?.now ?? 0n;
    const limit = (policies.get(slot) as { pending_max: number } | undefined)?.pending_max ?? 0;
    out.set(slot, { now: Number(BigInt.asIntN(64, now)), limit });
  }
  return out;
}

/** What a policy cannot do as written, in the eBPF mode's terms (the agent logs each as a warning). */
export function isolationNotes(p: Policy): string[] {
  const out: string[] = [];
  if (p.bypass.cgroups.length === 0)
    out.push(
      `policy ${p.name} names no bypass cgroup: only a socket of the policy's bypass cgroups is given a redirected connection's original destination, so its proxy gets none (list the proxy's cgroup in spec.proxy.bypass.cgroups)`,
    );
  if (p.netns && netnsInode(p.netns) === null)
    out.push(
      `policy ${p.name}: spec.netns ${p.netns} cannot be read; connects of the policy are not checked to come from it`,
    );
  return out;
}
