// preflight.ts — before the agent touches the kernel: the capabilities and mounts its mode needs, each
// one that is missing named in one sentence (instead of the EPERM deep inside libbpf it would become).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';

/** Capability bit numbers (include/uapi/linux/capability.h). */
export const CAPS = {
  CAP_NET_ADMIN: 12,
  CAP_NET_RAW: 13,
  CAP_SYS_PTRACE: 19,
  CAP_SYS_ADMIN: 21,
  CAP_PERFMON: 38,
  CAP_BPF: 39,
} as const;
export type CapName = keyof typeof CAPS;

/** Why each capability is needed, by what the agent does with it (measured: docs/image.md). */
const WHY: Record<'ebpf' | 'setns' | 'ptrace' | 'netfilter' | 'raw', string> = {
  ebpf:
    'eBPF mode loads and attaches programs with it (the kernel accepts it for CAP_BPF, CAP_PERFMON and ' +
    "CAP_NET_ADMIN, and container runtimes' seccomp profiles allow bpf() only with it) and needs it to " +
    're-adopt pinned programs and maps after a restart (bpf_*_get_fd_by_id)',
  setns: "iptables mode enters each pod's network namespace (setns)",
  ptrace: "iptables mode opens /proc/PID/ns/net of other users' processes to find pods' network namespaces",
  netfilter: 'iptables mode writes nat rules (iptables-restore)',
  raw: 'the iptables legacy backend opens a raw socket',
};

export interface Mount {
  target: string;
  type: string;
  options: string[];
}

/** What the preflight reads from the host; tests pass their own. */
export interface HostView {
  capEff: bigint;
  /** In /proc/mounts order: a later mount on the same target hides an earlier one. */
  mounts: Mount[];
  exists(path: string): boolean;
  /** Started by a container runtime (the `container` variable, podman's /run/.containerenv). */
  inContainer: boolean;
  /** Our network namespace is the node's (that of pid 1 or 2, with hostPID); 'EACCES' if we may not look. */
  hostNetns: boolean | 'EACCES';
}

export interface PreflightInput {
  mode: 'auto' | 'ebpf' | 'iptables';
  bpffs: string;
  iptablesBackend?: 'nft' | 'legacy' | undefined;
}

export interface PreflightResult {
  /** Each one stops the agent: what is missing and what needs it. */
  errors: string[];
  /** Worth knowing, not fatal (auto falls back to iptables; legacy backend unusable). */
  warnings: string[];
}

export function parseCapEff(status: string): bigint {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(status);
  if (!m) throw new Error('no CapEff line in /proc/self/status');
  return BigInt(`0x${m[1]}`);
}

export const hasCap = (eff: bigint, cap: CapName): boolean => ((eff >> BigInt(CAPS[cap])) & 1n) === 1n;

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function parseMounts(text: string): Mount[] {
  return text
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [, target = '', type = '', options = ''] = l.split(' ');
      return { target: unescapeMount(target), type, options: options.split(',') };
    });
}

export function readHost(): HostView {
  // pid 1, else pid 2 (kthreadd), as the iptables mode itself looks (pid 1 may refuse even CAP_SYS_PTRACE).
  let hostNetns: HostView['hostNetns'] = false;
  for (const pid of [1, 2]) {
    try {
      hostNetns = statSync('/proc/self/ns/net').ino === statSync(`/proc/${pid}/ns/net`).ino;
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'EACCES') hostNetns = 'EACCES';
    }
  }
  return {
    capEff: parseCapEff(readFileSync('/proc/self/status', 'utf8')),
    mounts: parseMounts(readFileSync('/proc/mounts', 'utf8')),
    exists: existsSync,
    inContainer: Boolean(process.env.container) || existsSync('/run/.containerenv'),
    hostNetns,
  };
}

/** The mount that `path` is on: the longest target above it, the last one mounted there. */
function mountOf(mounts: Mount[], path: string): Mount | undefined {
  const abs = resolve(path);
  let best: Mount | undefined;
  for (const m of mounts) {
    const under = abs === m.target || abs.startsWith(m.target === '/' ? '/' : `${m.target}/`);
    if (under && (!best || m.target.length >= best.target.length)) best = m;
  }
  return best;
}

/** The cgroup2 mount the agent uses (the first in /proc/mounts, as src/util/host.ts picks it). */
function cgroup2Check(host: HostView, errors: string[], warnings: string[], needed: boolean): void {
  const first = host.mounts.find((m) => m.type === 'cgroup2');
  if (!first) {
    if (needed)
      errors.push(
        "no cgroup2 mount: mount the host's cgroup2 (its /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host) into the container",
      );
    return;
  }
  const top = mountOf(host.mounts, first.target);
  if (top?.type !== 'cgroup2') {
    errors.push(`${first.target} is covered by a ${top?.type ?? 'another'} mount: the cgroup2 there is not reachable`);
    return;
  }
  // The hierarchy's root has no cgroup.type: anything else is a container's view of its own subtree,
  // where policy paths (and the programs' cgroup root) would name the wrong cgroups.
  if (host.exists(`${first.target}/cgroup.type`))
    errors.push(
      `cgroup2 at ${first.target} is not the root of the host's hierarchy (a container's own cgroup view): mount the host's cgroup2 there`,
    );
  else if (top.options.includes('ro'))
    warnings.push(
      `cgroup2 at ${first.target} is read-only: the probe cannot make its throwaway cgroup, so auto will choose iptables`,
    );
}

function bpffsCheck(host: HostView, bpffs: string, errors: string[]): void {
  const m = mountOf(host.mounts, bpffs);
  if (m?.type !== 'bpf') {
    // On a host the agent mounts /sys/fs/bpf itself; in a container that bpffs would be the container's
    // own and die with it, taking the pinned links (and so the redirection) along.
    if (host.inContainer)
      errors.push(
        `no bpffs at ${bpffs}: mount the host's /sys/fs/bpf into the container (pins in a bpffs of the container's own would vanish with it)`,
      );
  } else if (m.options.includes('ro'))
    errors.push(`the bpffs at ${m.target} is mounted read-only: pins need it writable`);
}

const missing = (host: HostView, cap: CapName, why: string) =>
  hasCap(host.capEff, cap) ? [] : [`missing capability ${cap}: ${why}`];

/** What this mode needs from this process and this host, and what is not there. */
export function preflight(input: PreflightInput, host: HostView = readHost()): PreflightResult {
  const errors: string[] = [];
  const warnings: string[] = [];
  const iptables = (): string[] => {
    const out = [...missing(host, 'CAP_NET_ADMIN', WHY.netfilter)];
    // A node agent reaches pods' namespaces from the host's; one inside a pod's netns needs neither.
    if (host.hostNetns === 'EACCES') out.push(...missing(host, 'CAP_SYS_PTRACE', WHY.ptrace));
    else if (host.hostNetns) out.push(...missing(host, 'CAP_SYS_ADMIN', WHY.setns));
    if (input.iptablesBackend === 'legacy') out.push(...missing(host, 'CAP_NET_RAW', WHY.raw));
    else if (!hasCap(host.capEff, 'CAP_NET_RAW'))
      warnings.push(`no CAP_NET_RAW: ${WHY.raw}, so only the nft backend can be used`);
    return out;
  };
  if (input.mode === 'ebpf') {
    errors.push(...missing(host, 'CAP_SYS_ADMIN', WHY.ebpf));
    cgroup2Check(host, errors, [], true);
    bpffsCheck(host, input.bpffs, errors);
  } else if (input.mode === 'iptables') {
    errors.push(...iptables());
    cgroup2Check(host, errors, [], false);
  } else {
    const ebpf = hasCap(host.capEff, 'CAP_SYS_ADMIN');
    const ipt = iptables();
    if (!ebpf && ipt.length) errors.push(`neither mode can run: missing capability CAP_SYS_ADMIN: ${WHY.ebpf}`, ...ipt);
    else if (!ebpf) warnings.push(`missing capability CAP_SYS_ADMIN: ${WHY.ebpf}; auto will choose iptables`);
    else if (ipt.length) warnings.push(...ipt.map((m) => `${m}: auto has no iptables fallback`));
    // With eBPF possible, its mounts must be right: a wrong one would not fail, it would misbehave.
    cgroup2Check(host, errors, warnings, false);
    if (ebpf) bpffsCheck(host, input.bpffs, errors);
  }
  return { errors, warnings };
}

/** The agent's preflight: throws one error listing every problem; returns the warnings. */
export function requirePreflight(input: PreflightInput, host?: HostView): string[] {
  const r = preflight(input, host);
  if (r.errors.length) throw new Error(`cannot run the agent in ${input.mode} mode here:\n  ${r.errors.join('\n  ')}`);
  return r.warnings;
}
