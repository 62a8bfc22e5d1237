// startup.ts — how the agent takes its installation before it changes anything: the state directory's lock
// first (it makes no pin directory, and a second agent on this installation is named there), then its
// metrics address, then the mode's lock (the bpffs directory, or the iptables state's lock file). A failure
// at any step undoes the steps before it, so that a busy address or a running agent leaves nothing behind.
import { DEFAULT_IPTABLES_STATE } from '../modes/defaults.js';
import type { ModeName } from '../modes/mode.js';
import type { AgentEndpoint } from './endpoint.js';
import { AgentLocks, type LockTargets } from './lock.js';

/** The paths an agent locks (the iptables state's default when none is given). */
export function lockTargets(stateDir: string, paths: { bpffs: string; iptablesState?: string }): LockTargets {
  return { stateDir, bpffs: paths.bpffs, iptablesState: paths.iptablesState ?? DEFAULT_IPTABLES_STATE };
}

export interface Installation {
  locks: AgentLocks;
  /** Serving /metrics and the probes (none: not asked to). */
  endpoint?: AgentEndpoint;
}

/** Takes the installation for an agent running `mode`; `serve` binds its metrics address (none: not served). */
export async function takeInstallation(
  t: LockTargets,
  mode: ModeName,
  serve?: () => Promise<AgentEndpoint>,
): Promise<Installation> {
  const locks = AgentLocks.takeState(t, mode);
  let endpoint: AgentEndpoint | undefined;
  try {
    endpoint = await serve?.();
    locks.takeMode();
  } catch (e) {
    await endpoint?.close();
    locks.abandon();
    throw e;
  }
  return { locks, ...(endpoint ? { endpoint } : {}) };
}
