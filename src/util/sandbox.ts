// sandbox.ts — a private corner of the host for the bench and the kernel tests: a cgroup subtree under the
// cgroup2 mount (never the machine's root cgroup itself), network namespaces, processes started inside
// both, temporary files, and a teardown that removes all of it — also after a failure.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { requireCgroup2 } from './host.js';
import { startPlaced, type Proc } from './proc.js';

export type { Proc };

export interface SpawnOptions {
  uid?: number;
  stdin?: boolean;
  env?: Record<string, string>;
}

export class Sandbox {
  readonly id = randomBytes(3).toString('hex');
  readonly cgMount = requireCgroup2();
  /** The sandbox's cgroup as a policy path ("/meshredir-test-…"). */
  readonly cgRoot: string;
  readonly cgRootDir: string;
  protected readonly namespaces: string[] = [];
  protected readonly procs: Proc[] = [];
  private readonly cgroups: string[] = [];
  private readonly tmpFiles: string[] = [];

  /** `cgName`: the cgroup's name under the mount (meshredir-test-*); `nsPrefix`: of the netns names (mr-*). */
  constructor(
    cgName: (id: string) => string,
    protected readonly nsPrefix: (id: string) => string,
  ) {
    this.cgRoot = `/${cgName(this.id)}`;
    this.cgRootDir = join(this.cgMount, this.cgRoot);
    mkdirSync(this.cgRootDir);
    this.cgroups.push(this.cgRootDir);
  }

  /** Creates a cgroup (and its parents) under the sandbox; returns its policy path. */
  cgroup(rel: string): string {
    let dir = this.cgRootDir;
    for (const part of rel.split('/').filter(Boolean)) {
      dir = join(dir, part);
      if (!existsSync(dir)) {
        mkdirSync(dir);
        this.cgroups.push(dir);
      }
    }
    return rel ? `${this.cgRoot}/${rel.replace(/^\/+/, '')}` : this.cgRoot;
  }

  cgDir(path: string): string {
    return join(this.cgMount, path);
  }

  /** A network namespace named <prefix>-<name> (or <prefix> itself) with lo up. */
  netns(name = ''): string {
    const ns = name ? `${this.nsPrefix(this.id)}-${name}` : this.nsPrefix(this.id);
    execFileSync('ip', ['netns', 'add', ns], { stdio: 'pipe' });
    this.namespaces.push(ns);
    execFileSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { stdio: 'pipe' });
    return ns;
  }

  /** Starts cmd in a netns (or the caller's) and a cgroup (policy path, or none); the cgroup is joined first. */
  spawn(ns: string | null, cg: string | null, cmd: string, args: string[], opts: SpawnOptions = {}): Proc {
    const p = startPlaced({ cgroupDir: cg ? this.cgDir(cg) : null, netns: ns, ...opts }, cmd, args);
    this.procs.push(p);
    return p;
  }

  /** Runs to completion; returns stdout (a non-zero exit is an error with the end of stderr). */
  async run(
    ns: string | null,
    cg: string | null,
    cmd: string,
    args: string[],
    opts: SpawnOptions & { timeoutMs?: number } = {},
  ): Promise<string> {
    const { timeoutMs, ...o } = opts;
    const p = this.spawn(ns, cg, cmd, args, o);
    const timer = setTimeout(() => p.child.kill('SIGKILL'), timeoutMs ?? 60_000);
    const code = await p.exited;
    clearTimeout(timer);
    if (code !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${code}: ${p.err.trim().slice(-2000)}`);
    return p.out;
  }

  /** Waits until something listens on the TCP port in the netns. */
  async waitListening(ns: string, port: number, what: string, p?: Proc, timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    while (Date.now() < end) {
      const out = execFileSync('ip', ['netns', 'exec', ns, 'ss', '-Hltn', `sport = :${port}`], { encoding: 'utf8' });
      if (out.trim()) return;
      if (p && (p.child.exitCode !== null || p.child.signalCode !== null))
        throw new Error(
          `${what}: process exited (${p.child.exitCode ?? p.child.signalCode}): ${p.err.trim().slice(-2000)}`,
        );
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(
      `${what}: nothing listens on ${port} after ${timeoutMs} ms${p ? `; stderr: ${p.err.trim().slice(-2000)}` : ''}`,
    );
  }

  /** A temporary file removed at teardown. */
  tmpFile(name: string, text: string): string {
    const f = join('/tmp', `meshredir-sandbox-${this.id}-${name}`);
    writeFileSync(f, text);
    this.tmpFiles.push(f);
    return f;
  }

  /** Kills what it started, removes its namespaces, cgroups and files; returns what it could not remove. */
  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    for (const p of this.procs) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
    await Promise.all(this.procs.map((p) => p.exited));
    // Anything still in our cgroups was started by us (cgroup.kill kills only the subtree).
    if (existsSync(join(this.cgRootDir, 'cgroup.kill'))) writeFileSync(join(this.cgRootDir, 'cgroup.kill'), '1');
    await this.beforeNamespaces(problems);
    for (const ns of [...this.namespaces].reverse()) {
      try {
        execFileSync('ip', ['netns', 'del', ns], { stdio: 'pipe' });
      } catch {
        // already gone
      }
    }
    for (const dir of [...this.cgroups].reverse()) {
      for (let i = 0; i < 50 && existsSync(dir); i++) {
        try {
          rmdirSync(dir);
        } catch {
          await new Promise((r) => setTimeout(r, 100));
        }
      }
      if (existsSync(dir)) problems.push(`cgroup ${dir} could not be removed`);
    }
    for (const f of this.tmpFiles) rmSync(f, { force: true });
    return problems;
  }

  /** What a subclass removes once the processes are gone and before the namespaces go (pins, say). */
  protected async beforeNamespaces(_problems: string[]): Promise<void> {}
}
