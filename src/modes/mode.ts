// mode.ts — the one interface both redirection modes implement (plan → apply → status → verify →
// cleanup). The agent and the CLI talk only to it; a traffic feature (outbound, inbound, DNS) is a part
// inside each mode, never a branch above it.
import type { Policy } from '../policy/schema.js';
import type { Gates } from '../policy/entries.js';
import type { MetricFamily } from './metrics.js';

export type { Gates };

/**
 * What the sources want in force: their policies, and the cgroups they classify without a policy (the
 * Kubernetes source's guard on the kubepods parents and pass entries of pods that are not enrolled; the
 * union over sources). A mode that has no use for gates says so in a note and ignores them.
 */
export interface DesiredState {
  policies: Policy[];
  gates?: Gates;
}

export type ModeName = 'ebpf' | 'iptables';
export const MODE_NAMES: readonly ModeName[] = ['ebpf', 'iptables'];

/** Where each mode keeps what it installs, and its knobs: one object for every command. */
export interface ModeConfig {
  /** bpffs directory of the eBPF mode's pins. */
  bpffs: string;
  /** iptables: where the per-netns backend choice and the applied rules are remembered. */
  iptablesState: string;
  /** iptables: a forced backend instead of the detected one. */
  iptablesBackend?: 'nft' | 'legacy';
  /** iptables: seconds to wait for the xtables lock. */
  lockWait: number;
  /** What applying needs beyond reading what is installed (the agent has it; status, verify and cleanup
   * do not need it). */
  attach?: AttachConfig;
}

export interface AttachConfig {
  /** The cgroup directory (absolute, under the cgroup2 mount) where the eBPF programs attach. */
  cgroupRoot: string;
  /** meshredir.bpf.o */
  object: string;
  /** eBPF: redirected handshakes that may be in flight before connect() is refused. */
  maxConnections?: number;
  /** eBPF: sockets the sk_msg fast path may hold. */
  maxAccelerated?: number;
  /** eBPF: each policy's budget of handshakes in flight (default: defaultPendingBudget of maxConnections). */
  maxPendingPerPolicy?: number;
  /** eBPF: the trace ring's size in bytes (a power of two, at least a page; default 256 KiB). */
  traceRingBytes?: number;
}

/** Something a mode wants said (the agent logs it; the CLI prints it). */
export interface Note {
  level: 'debug' | 'info' | 'warn' | 'error';
  /** A stable event name for logs ("unresolved", "skipped", …). */
  event: string;
  message: string;
  fields?: Record<string, unknown>;
}

/** What happens to one policy: in force, waiting for something that does not exist yet, refused by the
 * mode (its rules/entries are removed), or failed (what was in place before stays). */
export interface PolicyOutcome {
  policy: string;
  /** Where it came from (a file path, a pod). */
  file: string;
  state: 'applied' | 'waiting' | 'rejected' | 'failed';
  reason?: string;
}

/** The dry run: what apply would write, exactly (iptables-restore input; eBPF map entries). */
export interface DryRun {
  /** For stdout: text (iptables-restore input) or one JSON document (eBPF). */
  text?: string;
  json?: unknown;
  /** For stderr: what would not be applied, and warnings. */
  messages: string[];
  /** False when a policy would not be applied (the exit code is then 1). */
  ok: boolean;
}

/** What apply would do, computed without changing anything (apply reads it; the dry run renders it). */
export interface Plan {
  readonly mode: ModeName;
  /** The policies the plan was made for. */
  readonly input: Policy[];
  /** The gates it was made for (empty lists: none). */
  readonly gates: Gates;
  readonly policies: PolicyOutcome[];
  readonly notes: Note[];
  /** Reads what it needs from the host on demand (the exact restore inputs, real cgroup ids). */
  render(): DryRun;
}

export interface ApplyResult {
  /** Entries/rules written and removed (0 and 0: in sync). */
  writes: number;
  deletes: number;
  /** Whether programs were (re)loaded or attached in this pass. */
  loaded: boolean;
  policies: PolicyOutcome[];
  notes: Note[];
}

/** A section of a human-readable report: a few lines and/or one table. */
export interface Section {
  lines?: string[];
  table?: { head: string[]; rows: (string | number | boolean)[][] };
}

export interface StatusReport {
  mode: ModeName;
  /** The mode's status as one JSON object (merged into `status --json`). */
  json: Record<string, unknown>;
  /** The same for people. */
  text: Section[];
}

export interface VerifyRequest {
  /** A policy path (/pods/a) or a directory under the cgroup2 mount. */
  cgroup: string;
  netns?: string;
  dest?: string;
  /** Check DNS capture's chain (spec.dns) instead of the outbound one. */
  dns?: boolean;
}

export interface VerifyStep {
  step: string;
  ok: boolean;
  detail: string;
}

export interface CleanupReport {
  mode: ModeName;
  /** Everything it removed, one line each. */
  removed: string[];
  /** What it kept on purpose, with why (also a failure: the exit code is 1). */
  kept: string[];
  /** What it could not remove. */
  failed: string[];
  notes: Note[];
  /** The mode-specific details, for --json. */
  json: Record<string, unknown>;
}

/** Whether what the mode installed is in force now (the agent's /readyz), and why (not). */
export interface Readiness {
  ready: boolean;
  reason: string;
}

export interface Mode {
  readonly name: ModeName;
  /** Whether anything of this mode is installed here (pins, a state file that remembers rules). */
  installed(): boolean;
  /** What apply would do for the desired state (reads the host, writes nothing). */
  plan(desired: DesiredState): Plan;
  /** Makes the host match the plan: loads/attaches what is missing, writes only what differs. */
  apply(plan: Plan): ApplyResult;
  /**
   * Loads and attaches what is missing now, before there is a plan (the agent's start: the eBPF verifier
   * runs while the policy parser's worker boots). Its notes come with the next apply, and so does its
   * failure: that apply throws it, as it would have thrown its own.
   */
  preload?(): void;
  status(): StatusReport;
  /** Checks, link by link, that a connection from the cgroup would be redirected; sends no packet. */
  verify(req: VerifyRequest): Promise<VerifyStep[]>;
  /** Removes everything the mode made. Idempotent. */
  cleanup(opts: { force?: boolean }): CleanupReport;
  /**
   * A cheap look between reconciles, which the agent takes every second: a reason to reconcile now, or
   * null. (eBPF inbound: a registered proxy listener closed, a listener appeared, a pod's netns went.)
   */
  pulse?(): string | null;
  /**
   * Whether an error of plan or apply says that what the mode installed changed while they ran (a pin
   * deleted under them, say): why, so that the agent reconciles again at once, which repairs it; or null.
   */
  changedUnder?(e: unknown): string | null;
  /** Its counters and gauges, read now from where they are kept (the agent's /metrics). */
  metrics(): MetricFamily[];
  /** Programs attached (eBPF), rules applied (iptables). */
  readiness(): Readiness;
}
