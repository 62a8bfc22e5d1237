// lab.ts — the benchmark's private world: a network namespace (mr-bench-*), a cgroup subtree
// (meshredir-test-bench-*) where the programs attach, processes started inside both, and a teardown
// that removes all of it, also when a run fails or is interrupted.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { Sandbox, type Proc } from '../util/sandbox.js';

export type LabProc = Proc;

/** Where the processes of a pinned scenario (crr, scale) run: the load generator (`client2`: a second
 * one beside it) and the server it reaches. */
export type Role = 'client' | 'client2' | 'server';
/** How processes are placed on CPUs: `split` puts the client on CPU 0, and the server and a second
 * client on the last CPU (two clients on one CPU took turns: an A/A spread of ±10%); `same` all on
 * CPU 0; `none` lets the scheduler choose (the method before 2026-12-05, and that of the scenarios
 * where pinning did not tighten A/A: proxy). See docs/benchmarks.md "Method". */
export type Placement = 'split' | 'same' | 'none';
export const PLACEMENTS = ['split', 'same', 'none'] as const;

/** The CPU list (taskset -c) of a role under a placement on a machine of `ncpu` CPUs; undefined: unpinned. */
export function cpuOf(placement: Placement, role: Role, ncpu: number): string | undefined {
  if (placement === 'none' || ncpu < 2) return undefined;
  if (placement === 'same') return '0';
  return role === 'client' ? '0' : String(ncpu - 1);
}

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux architecture in use). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export class Lab extends Sandbox {
  /** The app netns (mr-bench-*) and the upstream netns joined to it over a veth. */
  readonly ns: string;
  readonly upNs: string;
  readonly bpffs = `/sys/fs/bpf/meshredir-bench-${this.id}`;
  readonly stateFile = `/run/meshredir/bench-${this.id}.json`;
  /** How the bench's processes are placed on CPUs (set by the run before it starts any). */
  placement: Placement = 'none';

  constructor() {
    super(
      (id) => `meshredir-test-bench-${id}`,
      (id) => `mr-bench-${id}`,
    );
    try {
      this.ns = this.netns();
      // An upstream namespace over a veth: 10.250.0.1 here, 10.250.0.2 there. Destinations leave by
      // the veth (not lo, which istio's rules exempt), and one that were not redirected (10.250.0.99)
      // reaches a namespace where nothing answers: never off the machine.
      this.upNs = this.netns('up');
      const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });
      ip('-n', this.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.upNs);
      ip('-n', this.ns, 'addr', 'add', '10.250.0.1/24', 'dev', 'eth0');
      ip('-n', this.upNs, 'addr', 'add', '10.250.0.2/24', 'dev', 'eth0');
      ip('-n', this.ns, 'link', 'set', 'eth0', 'up');
      ip('-n', this.upNs, 'link', 'set', 'eth0', 'up');
      for (const [k, v] of [
        ['net.ipv4.ip_local_port_range', '1024 65000'],
        ['net.ipv4.tcp_tw_reuse', '1'],
      ])
        ip('netns', 'exec', this.ns, 'sysctl', '-qw', `${k}=${v}`);
    } catch (e) {
      void this.teardown();
      throw e;
    }
  }

  get netnsPath(): string {
    return `/run/netns/${this.ns}`;
  }

  /** Starts cmd in the lab netns (or `ns`) and cgroup `cg` (joined before entering the netns), on the
   * CPUs of `role` under the placement (none: where the scheduler puts it). */
  start(cg: string, cmd: string, args: string[], uid?: number, ns = this.ns, role?: Role): LabProc {
    const [c, a] = this.pinned(role, cmd, args);
    return this.spawn(ns, cg, c, a, uid === undefined ? {} : { uid });
  }

  /** cmd and args run through `taskset -c` on the role's CPUs (the affinity is inherited by the exec'd
   * program and its threads), or unchanged when the role is unpinned. */
  pinned(role: Role | undefined, cmd: string, args: string[]): [string, string[]] {
    const cpu = role && cpuOf(this.placement, role, cpus().length);
    return cpu === undefined ? [cmd, args] : ['taskset', ['-c', cpu, cmd, ...args]];
  }

  /** How often the scheduler moved a process to another CPU so far, and the CPU it last ran on. */
  sched(pid: number): { migrations: number; cpu: number } {
    const m = /se\.nr_migrations\s*:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/sched`, 'utf8'));
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { migrations: m ? Number(m[1]) : 0, cpu: Number(f[36]) };
  }

  /** Waits for a listener on `port` in the lab netns (or `ns`). */
  listening(port: number, p?: LabProc, ns = this.ns): Promise<void> {
    return this.waitListening(ns, port, `listener on ${port}`, p, 10_000);
  }

  /** CPU time a process has used so far, in seconds (user and system). */
  cpu(pid: number): { user: number; sys: number } {
    // Fields after the command name (which may hold spaces): state is [0], utime [11], stime [12].
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return { user: Number(f[11]) / CLK_TCK, sys: Number(f[12]) / CLK_TCK };
  }

  /** The whole machine's CPU time so far, in seconds summed over CPUs: all of it, and idle. */
  machine(): { total: number; idle: number } {
    const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
    const v = line.trim().split(/\s+/).slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
    return { total: v.reduce((a, b) => a + b, 0) / CLK_TCK, idle: (v[3]! + v[4]!) / CLK_TCK };
  }

  /** Busy CPU time so far, in seconds, summed over the CPUs the bench's processes may run on (CPU 0
   * under `same`, CPU 0 and the last under `split`, all unpinned): with the time its processes used,
   * what else ran there. */
  busyWhereWeRun(): number {
    const lines = readFileSync('/proc/stat', 'utf8').split('\n');
    const last = `cpu${cpus().length - 1}`;
    const ours = this.placement === 'same' ? ['cpu0'] : this.placement === 'split' ? ['cpu0', last] : null;
    let busy = 0;
    for (const line of lines) {
      const f = line.trim().split(/\s+/);
      if (!/^cpu\d+$/.test(f[0]!) || (ours && !ours.includes(f[0]!))) continue;
      const v = f.slice(1, 9).map(Number); // user nice system idle iowait irq softirq steal
      busy += v.reduce((a, b) => a + b, 0) - v[3]! - v[4]!;
    }
    return busy / CLK_TCK;
  }

  /** The backends whose nat table in the lab netns holds a MESHREDIR rule or chain. */
  natRulesOfOurs(): string[] {
    const out: string[] = [];
    for (const b of ['nft', 'legacy']) {
      try {
        const text = execFileSync('ip', ['netns', 'exec', this.ns, `iptables-${b}-save`, '-t', 'nat'], {
          encoding: 'utf8',
          stdio: ['ignore', 'pipe', 'ignore'],
        });
        if (text.includes('MESHREDIR')) out.push(b);
      } catch {
        // that backend is not installed: it holds nothing
      }
    }
    return out;
  }

  rss(pid: number): number {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  }
}
