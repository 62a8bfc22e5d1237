// state.ts — the agent's state file (agent.json in --state-dir): which mode it runs and why, the probe
// summary, the last applied content of every policy file and the last read of the Kubernetes source (so a
// restart keeps what worked), what became of each policy, and the outcome of the last reconcile. Read by
// `status`, removed by `cleanup`.
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { writeJsonAtomic } from '../util/json-file.js';
import { kubeSnapshot } from '../sources/kubernetes/snapshot.js';
import { holder } from '../util/proc-locks.js';

import { DEFAULT_STATE_DIR } from '../modes/defaults.js';

export { DEFAULT_STATE_DIR };
export const STATE_FILE = 'agent.json';
/** The running agent's lock (lock.ts); its mtime is the time of the last completed reconcile pass. */
export const LOCK_FILE = 'agent.lock';
export const stateLockPath = (dir: string): string => join(dir, LOCK_FILE);

const reconcileRecord = z.strictObject({
  at: z.string(),
  reason: z.string(),
  ok: z.boolean(),
  mode: z.enum(['ebpf', 'iptables']),
  writes: z.number(),
  deletes: z.number(),
  policies: z.number(),
  errors: z.array(z.string()),
  warnings: z.array(z.string()),
  /** The policies not in force after it (waiting, rejected, failed), with their file and why. */
  outcomes: z
    .array(
      z.strictObject({
        policy: z.string(),
        file: z.string(),
        state: z.enum(['applied', 'waiting', 'rejected', 'failed']),
        reason: z.string().optional(),
      }),
    )
    .optional(),
});
export type ReconcileRecord = z.infer<typeof reconcileRecord>;

/** What the last reconcile did with one policy, and where the policy came from. */
const outcomeRecord = z.strictObject({
  policy: z.string(),
  origin: z.enum(['file', 'kubernetes']),
  /** The policy file, or the pod ("pod <namespace>/<name> (uid <uid>)"). */
  from: z.string(),
  state: z.enum(['applied', 'waiting', 'rejected', 'failed']),
  reason: z.string().optional(),
});
export type OutcomeRecord = z.infer<typeof outcomeRecord>;

const agentState = z.strictObject({
  version: z.literal(1),
  mode: z.strictObject({
    requested: z.enum(['auto', 'ebpf', 'iptables']),
    chosen: z.enum(['ebpf', 'iptables']),
    reason: z.string(),
    at: z.string(),
  }),
  /** The probe's verdict per feature (auto mode only). */
  probe: z
    .strictObject({
      kernel: z.string(),
      libbpf: z.string(),
      features: z.record(z.string(), z.boolean()),
      why: z.record(z.string(), z.string()),
    })
    .optional(),
  agent: z.strictObject({
    pid: z.number(),
    policies: z.string(),
    cgroupRoot: z.string(),
    bpffs: z.string(),
    iptablesState: z.string().optional(),
    startedAt: z.string(),
    /** Seconds between periodic passes (status judges the heartbeat by it). */
    interval: z.number().optional(),
  }),
  /** Per policy file (absolute path): the text that was applied and which of its policies were. */
  applied: z.record(z.string(), z.strictObject({ text: z.string(), policies: z.array(z.string()) })),
  lastReconcile: reconcileRecord.optional(),
  /** Every policy of the last reconcile (file or pod) and what became of it. */
  outcomes: z.array(outcomeRecord).optional(),
  /** With --kubernetes: whether the first list of pods has come, and the source's last read (applied by a
   * restarted agent until the API server answers). */
  kubernetes: z.strictObject({ synced: z.boolean(), snapshot: kubeSnapshot.optional() }).optional(),
});
export type AgentState = z.infer<typeof agentState>;

export const statePath = (dir: string): string => join(dir, STATE_FILE);

/** Reads agent.json: null when there is none; an Error (not thrown) when it is unreadable or malformed. */
export function readState(dir: string): AgentState | null | Error {
  const file = statePath(dir);
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    return new Error(`${file}: cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    return new Error(`${file}: not JSON: ${(e as Error).message}`);
  }
  const r = agentState.safeParse(value);
  if (!r.success)
    return new Error(
      `${file}: not a meshredir agent state: ${r.error.issues.map((i) => `${i.path.join('.') || '(document)'}: ${i.message}`).join('; ')}`,
    );
  return r.data;
}

/**
 * Creates the directory 0700. An existing directory keeps its mode (it may be shared, like /run), but
 * one that others can write to is refused: they could replace agent.json. Returns the first directory it
 * created (undefined: none).
 */
export function ensureStateDir(dir: string): string | undefined {
  if (!existsSync(dir)) {
    const made = mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    return made;
  }
  const st = statSync(dir);
  if (!st.isDirectory()) throw new Error(`state directory ${dir} is not a directory`);
  if (st.mode & 0o022)
    throw new Error(
      `state directory ${dir} is writable by others (mode ${(st.mode & 0o777).toString(8)}); use a directory only root can write, such as ${DEFAULT_STATE_DIR}`,
    );
  return undefined;
}

/** Writes agent.json atomically (temporary file, 0600, renamed over the old one). */
export function writeState(dir: string, s: AgentState): void {
  ensureStateDir(dir);
  writeJsonAtomic(statePath(dir), s);
}

/**
 * Removes agent.json (and the directory when nothing else is in it). Idempotent; returns what it
 * removed. With `owner`, only the state of an agent that used that --bpffs or --iptables-state is
 * removed, so cleaning one (test) installation never erases another agent's memory. `lockFile`: the
 * agent's lock file (agent.lock), removed with it — only by whoever holds that lock.
 */
export function removeState(
  dir: string,
  owner?: { bpffs: string; iptablesState: string },
  lockFile?: string,
): { removed: string[]; kept?: string } {
  const file = statePath(dir);
  const removed: string[] = [];
  if (existsSync(file)) {
    const s = readState(dir);
    if (
      owner &&
      s &&
      !(s instanceof Error) &&
      s.agent.bpffs !== owner.bpffs &&
      s.agent.iptablesState !== owner.iptablesState
    ) {
      return {
        removed,
        kept: `${file} belongs to the agent of ${s.agent.bpffs}${s.agent.iptablesState ? ` and ${s.agent.iptablesState}` : ''}; left in place`,
      };
    }
    rmSync(file, { force: true });
    removed.push(file);
  }
  if (lockFile && existsSync(lockFile)) {
    rmSync(lockFile, { force: true });
    removed.push(lockFile);
  }
  try {
    rmdirSync(dir);
    removed.push(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    // EBUSY, EROFS: the directory is a mount point (a container's volume), which stays.
    if (!['ENOENT', 'ENOTEMPTY', 'EEXIST', 'ENOTDIR', 'EBUSY', 'EROFS'].includes(code ?? '')) throw e;
  }
  return { removed };
}

/** The agent's liveness as its lock file shows it: the pid holding it, and when its last pass completed. */
export function heartbeat(dir: string): { pid: number | null; lastPass: Date | null } | null {
  const file = stateLockPath(dir);
  try {
    const st = statSync(file);
    return { pid: holder(file), lastPass: st.mtimeMs > 0 ? st.mtime : null };
  } catch {
    return null;
  }
}

/** A pass overdue by this much (beyond its interval) means the agent is stuck. */
const staleAfter = (interval: number) => 3 * interval + 10;

/** What agent.json and the heartbeat say, for `status`: the mode, the last pass and the last change. */
export function agentSummary(dir: string, now = new Date()) {
  const s = readState(dir);
  if (s === null) return null;
  if (s instanceof Error) return { stateFile: statePath(dir), error: s.message };
  const hb = heartbeat(dir);
  const running = hb?.pid ?? null;
  const interval = s.agent.interval ?? null;
  const last = hb?.lastPass ?? null;
  const since = last ?? new Date(s.agent.startedAt);
  const ago = Math.max(0, Math.round((now.getTime() - since.getTime()) / 1000));
  return {
    stateFile: statePath(dir),
    mode: s.mode.chosen,
    requested: s.mode.requested,
    reason: s.mode.reason,
    decidedAt: s.mode.at,
    ...(s.probe
      ? {
          probe: {
            kernel: s.probe.kernel,
            libbpf: s.probe.libbpf,
            missing: Object.entries(s.probe.features)
              .filter(([, ok]) => !ok)
              .map(([f]) => ({ feature: f, why: s.probe!.why[f] ?? '' })),
          },
        }
      : {}),
    pid: s.agent.pid,
    /** The pid holding the agent's lock now: null when no agent runs on this state directory. */
    running,
    policies: s.agent.policies,
    cgroupRoot: s.agent.cgroupRoot,
    startedAt: s.agent.startedAt,
    interval,
    /** The last completed reconcile pass, whether or not it changed anything (the heartbeat), and its
     * outcome (that of the last recorded reconcile: a pass whose outcome differs is always recorded). */
    lastPass: {
      at: last ? last.toISOString() : null,
      ok: s.lastReconcile?.ok ?? null,
      agoSeconds: last ? ago : null,
      stale: running !== null && interval !== null && ago > staleAfter(interval),
    },
    applied: Object.entries(s.applied).map(([file, a]) => ({ file, policies: a.policies })),
    /** The last reconcile that changed something (or whose outcome changed). */
    lastReconcile: s.lastReconcile ?? null,
    outcomes: s.outcomes ?? [],
    ...(s.kubernetes
      ? {
          kubernetes: {
            synced: s.kubernetes.synced,
            readAt: s.kubernetes.snapshot?.at ?? null,
            pods: s.kubernetes.snapshot?.pods ?? [],
            guard: s.kubernetes.snapshot?.gates.guard ?? [],
          },
        }
      : {}),
  };
}
export type AgentSummary = ReturnType<typeof agentSummary>;
