// lab.ts — the benchmark's private world: a network namespace (mr-bench-*), a cgroup subtree
// (meshredir-test-bench-*) where the programs attach, processes started inside both, and a teardown
// that removes all of it, also when a run fails or is interrupted.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { requireCgroup2 } from '../util/host.js';
import { startPlaced, type Proc } from '../util/proc.js';

export type LabProc = Proc;

/** Clock ticks per second of /proc's CPU times (USER_HZ: 100 on every Linux architecture in use). */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export class Lab {
  readonly id = randomBytes(3).toString('hex');
  readonly ns = `mr-bench-${this.id}`;
  readonly upNs = `mr-bench-${this.id}-up`;
  readonly cgMount = requireCgroup2();
  readonly cgRoot = `/meshredir-test-bench-${this.id}`;
  readonly bpffs = `/sys/fs/bpf/meshredir-bench-${this.id}`;
  readonly stateFile = `/run/meshredir/bench-${this.id}.json`;
  private dirs: string[] = [];
  private procs: LabProc[] = [];

  constructor() {
    execFileSync('ip', ['netns', 'add', this.ns]);
    try {
      execFileSync('ip', ['-n', this.ns, 'link', 'set', 'lo', 'up']);
      // An upstream namespace over a veth: 10.250.0.1 here, 10.250.0.2 there. Destinations leave by
      // the veth (not lo, which istio's rules exempt), and one that were not redirected (10.250.0.99)
      // reaches a namespace where nothing answers: never off the machine.
      execFileSync('ip', ['netns', 'add', this.upNs]);
      execFileSync('ip', ['-n', this.upNs, 'link', 'set', 'lo', 'up']);
      execFileSync('ip', [
        '-n',
        this.ns,
        'link',
        'add',
        'eth0',
        'type',
        'veth',
        'peer',
        'name',
        'eth0',
        'netns',
        this.upNs,
      ]);
      execFileSync('ip', ['-n', this.ns, 'addr', 'add', '10.250.0.1/24', 'dev', 'eth0']);
      execFileSync('ip', ['-n', this.upNs, 'addr', 'add', '10.250.0.2/24', 'dev', 'eth0']);
      execFileSync('ip', ['-n', this.ns, 'link', 'set', 'eth0', 'up']);
      execFileSync('ip', ['-n', this.upNs, 'link', 'set', 'eth0', 'up']);
      for (const [k, v] of [
        ['net.ipv4.ip_local_port_range', '1024 65000'],
        ['net.ipv4.tcp_tw_reuse', '1'],
      ])
        execFileSync('ip', ['netns', 'exec', this.ns, 'sysctl', '-qw', `${k}=${v}`]);
      this.cgroup('');
    } catch (e) {
      for (const n of [this.ns, this.upNs]) {
        try {
          execFileSync('ip', ['netns', 'del', n], { stdio: 'pipe' });
        } catch {
          // not created
        }
      }
      throw e;
    }
  }

  cgroup(rel: string): string {
    const dir = join(this.cgMount, this.cgRoot, rel);
    if (!existsSync(dir)) {
      mkdirSync(dir, { recursive: true });
      this.dirs.push(dir);
    }
    return rel ? `${this.cgRoot}/${rel}` : this.cgRoot;
  }

  get netnsPath(): string {
    return `/run/netns/${this.ns}`;
  }

  /** Starts cmd in the lab netns and cgroup `cg` (joined before entering the netns). */
  spawn(cg: string, cmd: string, args: string[], uid?: number, ns = this.ns): LabProc {
    const p = startPlaced(
      { cgroupDir: join(this.cgMount, cg), netns: ns, ...(uid === undefined ? {} : { uid }) },
      cmd,
      args,
    );
    this.procs.push(p);
    return p;
  }

  async run(cg: string, cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
    const p = this.spawn(cg, cmd, args);
    const t = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs);
    const code = await p.exited;
    clearTimeout(t);
    if (code !== 0) throw new Error(`${cmd} ${args.join(' ')}: exit ${code}: ${p.err.trim().slice(-500)}`);
    return p.out;
  }

  async waitListening(port: number, p?: LabProc, ns = this.ns): Promise<void> {
    for (let i = 0; i < 200; i++) {
      const out = execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      if (out.trim()) return;
      if (p && p.child.exitCode !== null) throw new Error(`listener on ${port} exited: ${p.err}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`nothing listens on ${port}`);
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

  writeTmp(name: string, text: string): string {
    const f = `/tmp/meshredir-bench-${this.id}-${name}`;
    writeFileSync(f, text);
    return f;
  }

  async teardown(): Promise<void> {
    for (const p of this.procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(this.procs.map((p) => p.exited));
    const kill = join(this.cgMount, this.cgRoot, 'cgroup.kill');
    if (existsSync(kill)) writeFileSync(kill, '1');
    for (const n of [this.ns, this.upNs]) {
      try {
        execFileSync('ip', ['netns', 'del', n], { stdio: 'pipe' });
      } catch {
        // already gone
      }
    }
    for (const d of this.dirs.reverse()) {
      for (let i = 0; i < 50 && existsSync(d); i++) {
        try {
          rmdirSync(d);
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
    execFileSync('sh', ['-c', `rm -f /tmp/meshredir-bench-${this.id}-*`]);
  }
}
