// proc.ts — starting a process inside a cgroup and a network namespace (tests, bench, demo-like
// tools), with its output captured and its end awaited after its output is complete.
import { spawn, type ChildProcess } from 'node:child_process';

export interface Proc {
  child: ChildProcess;
  out: string;
  err: string;
  /** Resolves with the exit code once the process has exited and its output is fully read. */
  exited: Promise<number | null>;
}

export interface Placement {
  /** Absolute cgroup directory to join, or null. */
  cgroupDir: string | null;
  /** Network namespace name (ip netns), or null for the caller's. */
  netns: string | null;
  /** Drop to this uid (and gid) right before exec, after joining. */
  uid?: number;
  stdin?: boolean;
  env?: Record<string, string>;
}

/** argv that joins the cgroup first (`ip netns exec` remounts /sys, hiding the cgroup2 mount), then
 * the netns, then drops privileges, then execs cmd. */
export function placedArgv(pl: Placement, cmd: string, args: string[]): string[] {
  const run =
    pl.uid === undefined
      ? [cmd, ...args]
      : ['setpriv', `--reuid=${pl.uid}`, `--regid=${pl.uid}`, '--clear-groups', cmd, ...args];
  const inNs = pl.netns ? ['ip', 'netns', 'exec', pl.netns, ...run] : run;
  return pl.cgroupDir ? ['sh', '-c', 'echo $$ > "$0/cgroup.procs" && exec "$@"', pl.cgroupDir, ...inNs] : inNs;
}

export function startPlaced(pl: Placement, cmd: string, args: string[]): Proc {
  const argv = placedArgv(pl, cmd, args);
  const child = spawn(argv[0]!, argv.slice(1), {
    stdio: [pl.stdin ? 'pipe' : 'ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...pl.env },
  });
  const p: Proc = { child, out: '', err: '', exited: new Promise((r) => child.on('close', (code) => r(code))) };
  child.stdout!.on('data', (d: Buffer) => (p.out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (p.err += d.toString()));
  return p;
}
