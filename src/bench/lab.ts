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
      execFileSync('ip', ['-n', this.ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.upNs]);
      execFileSync('ip', ['-n', this.ns, 'addr', 'add', '10.250.0.1/24', 'dev', 'eth0']);
      execFileSync('ip', ['-n', this.upNs, 'addr', 'add', '10.250.0.2/24', 'dev', 'eth0']);
      execFileSync('ip', ['-n', this.ns, 'link', 'set', 'eth0', 'up']);
      execFileSync('ip', ['-n', this.upNs, 'link', 'set', 'eth0', 'up']);
      for (const [k, v] of [
        ['net.ipv4.ip_local_port_range', '1024 65000'],
        ['net.ipv4.tcp_tw_reuse', '1'],
      ]) execFileSync('ip', ['netns', 'exec', this.ns, 'sysctl', '-qw', `${k}=${v}`]);
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
    const p = startPlaced({ cgroupDir: join(this.cgMount, cg), netns: ns, ...(uid === undefined ? {} : { uid }) }, cmd, args);
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
