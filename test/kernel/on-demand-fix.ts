// on-demand-fix.ts — what the kernel tests of the programs attached only while needed share
// (ktls-guard.kernel.test.ts, dns-release.kernel.test.ts): the programs the kernel runs at the test root,
// whether a link is pinned, and an agent whose attach of one is refused.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sh, waitFor, type Env, type Proc } from './harness.js';

/** The programs the kernel runs at the test root (bpftool), whatever the pins say. */
export const atRoot = (env: Env): string[] =>
  sh('bpftool', ['cgroup', 'show', env.cgRootDir])
    .split('\n')
    .map((l) => / (mr_\w+)\s*$/.exec(l)?.[1])
    .filter((x): x is string => Boolean(x));

/** Whether the link of this program is pinned. */
export const linkPinned = (env: Env, program: string): boolean => existsSync(join(env.bpffs, 'links', program));

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** An agent (as env.agent, --interval 1) that the kernel refuses to attach `program` for (MESHREDIR_FAULT
 * fail-attach, at every try), ready; the caller stops it. */
export async function refusingAgent(env: Env, dir: string, program: string): Promise<Proc> {
  const args = env.agentArgs(dir, ['--metrics-address', '127.0.0.1:0', '--interval', '1']);
  const p = env.spawn(null, null, process.execPath, [env.cliPath, ...args], {
    env: { MESHREDIR_FAULT: `fail-attach:${program}` },
  });
  try {
    await waitFor(() => p.out.includes('redirect-ready') || p.err.includes('redirect-ready'), 'agent ready', p, 30_000);
  } catch (e) {
    await env.stop(p);
    throw e;
  }
  return p;
}

/** The agent's outcome of each policy, as `status --json` says it from the agent's state file. */
export async function outcomes(env: Env): Promise<{ policy: string; state: string; reason?: string }[]> {
  const s = JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir])) as {
    agent: { outcomes: { policy: string; state: string; reason?: string }[] };
  };
  return s.agent.outcomes;
}
