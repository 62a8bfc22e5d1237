// lab.ts — the benchmark's private world: a network namespace (mr-bench-*), a cgroup subtree
// (meshredir-test-bench-*) where the programs attach, processes started inside both, and a teardown
// that removes all of it, also when a run fails or is interrupted.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Sandbox, type Proc } from '../util/sandbox.js';

export type LabProc = Proc;

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

  /** Starts cmd in the lab netns (or `ns`) and cgroup `cg` (joined before entering the netns). */
  start(cg: string, cmd: string, args: string[], uid?: number, ns = this.ns): LabProc {
    return this.spawn(ns, cg, cmd, args, uid === undefined ? {} : { uid });
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
