// on-demand-fix.ts — what the kernel tests of the programs attached only while needed share
// (ktls-guard.kernel.test.ts, dns-release.kernel.test.ts): the programs the kernel runs at the test root,
// whether a link is pinned, and a poll until a condition holds.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { sh, type Env } from './harness.js';

/** The programs the kernel runs at the test root (bpftool), whatever the pins say. */
export const atRoot = (env: Env): string[] =>
  sh('bpftool', ['cgroup', 'show', env.cgRootDir])
    .split('\n')
    .map((l) => / (mr_\w+)\s*$/.exec(l)?.[1])
    .filter((x): x is string => Boolean(x));

/** Whether the link of this program is pinned. */
export const linkPinned = (env: Env, program: string): boolean => existsSync(join(env.bpffs, 'links', program));

/** Polls `cond` every 100 ms until it holds; fails naming `what` after `ms`. */
export async function until(what: string, cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
