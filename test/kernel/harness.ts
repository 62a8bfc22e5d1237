// harness.ts — kernel-test helpers: a test cgroup root, "pods" (netns + cgroup), veths and a bridge,
// processes run inside both, and a teardown that removes all of it, also when a test fails.
// The node lab that several agent tests share is in lab.ts (`useLab`).
import { Sandbox, type Proc } from '../../src/util/sandbox.js';
import { existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { beforeEach, describe, it } from 'vitest';

export { ROOT, CLI, OBJECT, ORIGDST_PROXY, XFER, TOOLS, CI, cgroup2, cannotRun, sh, leftovers } from './hoststate.js';
import { ROOT, CLI, TOOLS, CI, cgroup2, cannotRun, sh } from './hoststate.js';

/** A describe() that, when the kernel tests cannot run, fails under CI=true and skips elsewhere. */
export function kernelDescribe(name: string, fn: () => void): void {
  const why = cannotRun();
  if (!why) {
    describe(name, () => {
      stopAgentsOfFailedTests();
      fn();
    });
    return;
  }
  if (CI) {
    describe(name, () =>
      it('can run', () => {
        throw new Error(`kernel test cannot run under CI: ${why}`);
      }),
    );
  } else describe.skip(`${name} (skipped: ${why})`, fn);
}

export type { Proc };

/** Agents started by `Env.agent`, in order (any Env of this file's tests). */
const startedAgents: Proc[] = [];

/**
 * A test that fails stops the agents it started and left running (SIGKILL), so that one failure stays
 * one failure: the next tests start their own agents on the same pins and state dir, which a leftover
 * agent would hold. Agents started before the test (a lab's, in beforeAll) and the agents of a test that
 * passed are left alone: later tests may use them.
 */
function stopAgentsOfFailedTests(): void {
  beforeEach(({ onTestFailed }) => {
    const mark = startedAgents.length;
    onTestFailed(async () => {
      for (const p of startedAgents.splice(mark)) {
        if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGKILL');
        await p.exited;
      }
    });
  });
}

export class Env extends Sandbox {
  readonly cgName: string;
  readonly bpffs: string;
  /** The agent's --state-dir (agent.json), never the host's /run/meshredir. */
  readonly stateDir: string;
  readonly toolsDir = TOOLS;
  readonly rootDir = ROOT;
  readonly cliPath = CLI;

  constructor() {
    super(
      (id) => `meshredir-test-${id}`,
      (id) => `mr-${id}`,
    );
    this.cgName = this.cgRoot.slice(1);
    this.bpffs = `/sys/fs/bpf/meshredir-test-${this.id}`;
    this.stateDir = join(tmpdir(), `meshredir-test-${this.id}-state`);
  }

  /** `meshredir cleanup` of this env's install only (never the host's default state files). */
  cleanupArgs(...extra: string[]): string[] {
    return [
      'cleanup',
      '--bpffs',
      this.bpffs,
      '--state-dir',
      this.stateDir,
      '--iptables-state',
      join(this.stateDir, 'iptables.json'),
      ...extra,
    ];
  }

  ip(ns: string, ...args: string[]): string {
    return sh('ip', ['-n', ns, ...args]);
  }

  /** veth between two namespaces, addresses (with prefix) on each end; returns the interface names. */
  veth(nsA: string, ifA: string, addrsA: string[], nsB: string, ifB: string, addrsB: string[]): void {
    sh('ip', ['-n', nsA, 'link', 'add', ifA, 'type', 'veth', 'peer', 'name', ifB, 'netns', nsB]);
    for (const [ns, ifc, addrs] of [
      [nsA, ifA, addrsA],
      [nsB, ifB, addrsB],
    ] as const) {
      for (const a of addrs) this.ip(ns, 'addr', 'add', a, 'dev', ifc, ...(a.includes(':') ? ['nodad'] : []));
      this.ip(ns, 'link', 'set', ifc, 'up');
    }
  }

  /** A bridge in `ns` with the given addresses. */
  bridge(ns: string, name: string, addrs: string[]): void {
    this.ip(ns, 'link', 'add', name, 'type', 'bridge');
    for (const a of addrs) this.ip(ns, 'addr', 'add', a, 'dev', name, ...(a.includes(':') ? ['nodad'] : []));
    this.ip(ns, 'link', 'set', name, 'up');
  }

  /** A namespace plugged into `bridge` (in `nodeNs`) with the given addresses on its eth0. */
  plug(nodeNs: string, bridge: string, ns: string, addrs: string[]): void {
    const port = `v${this.namespaces.indexOf(ns)}-${this.id}`;
    this.veth(nodeNs, port, [], ns, 'eth0', addrs);
    this.ip(nodeNs, 'link', 'set', port, 'master', bridge);
  }

  /** Runs the test client in a pod; parses its JSON line. */
  async client<T = ClientResult>(
    ns: string,
    cg: string | null,
    args: string[],
    opts: { uid?: number; timeoutMs?: number; env?: Record<string, string> } = {},
  ): Promise<T> {
    const out = await this.run(ns, cg, process.execPath, [join(TOOLS, 'client.mjs'), ...args], opts);
    return JSON.parse(out.trim().split('\n').pop()!) as T;
  }

  /**
   * Starts a `client.mjs hold` (from `localPort` if given) without waiting for its answers: `lines()` waits for
   * them; `release()` ends it (SIGKILL after 5 s: a client still waiting on a connection does not read stdin).
   */
  holdLater(
    ns: string,
    cg: string,
    host: string,
    port: number,
    n: number,
    localPort?: number,
  ): { proc: Proc; lines: (timeoutMs?: number) => Promise<string[]>; release: () => Promise<void> } {
    const p = this.spawn(ns, cg, process.execPath, [join(TOOLS, 'client.mjs'), 'hold', host, String(port), String(n)], {
      stdin: true,
      ...(localPort ? { env: { LOCAL_PORT: String(localPort) } } : {}),
    });
    return {
      proc: p,
      lines: async (timeoutMs = 60_000) => {
        await waitFor(() => p.out.includes('\n'), `hold ${n} connections`, p, timeoutMs);
        return (JSON.parse(p.out.trim()) as { lines: string[] }).lines;
      },
      release: async () => {
        p.child.stdin!.end();
        const t = setTimeout(() => p.child.kill('SIGKILL'), 5000);
        await p.exited;
        clearTimeout(t);
      },
    };
  }

  /** Starts a `client.mjs hold` that keeps its connections until release(); resolves with the lines. */
  async hold(
    ns: string,
    cg: string,
    host: string,
    port: number,
    n: number,
  ): Promise<{ lines: string[]; release: () => Promise<void> }> {
    const h = this.holdLater(ns, cg, host, port, n);
    return { lines: await h.lines(30_000), release: h.release };
  }

  /** Starts the upstream test server and waits until it listens. */
  async server(ns: string, host: string, port: number, name: string, hold = false): Promise<Proc> {
    const p = this.spawn(ns, null, process.execPath, [
      join(TOOLS, 'server.mjs'),
      host,
      String(port),
      name,
      ...(hold ? ['hold'] : []),
    ]);
    await waitFor(() => p.out.includes('ready'), `server ${name} on ${host}:${port}`, p);
    return p;
  }

  /** HAProxy in tcp mode forwarding to the original destination (server o 0.0.0.0:0). */
  async haproxy(
    ns: string,
    cg: string,
    bind: string,
    port: number,
    opts: { uid?: number; source?: string } = {},
  ): Promise<Proc> {
    const cfg = this.tmpFile(
      `haproxy-${port}.cfg`,
      [
        'global',
        '  maxconn 8192',
        'defaults',
        '  mode tcp',
        '  timeout connect 5s',
        '  timeout client 30s',
        '  timeout server 30s',
        'frontend fe',
        `  bind ${bind}`,
        '  default_backend be',
        'backend be',
        `  server o 0.0.0.0:0${opts.source ? ` source ${opts.source}` : ''}`,
        '',
      ].join('\n'),
    );
    const p = this.spawn(ns, cg, 'haproxy', ['-db', '-f', cfg], opts.uid === undefined ? {} : { uid: opts.uid });
    await this.waitListening(ns, port, `haproxy on ${bind}`, p);
    return p;
  }

  /**
   * HAProxy in tcp mode logging each connection on stdout as "conn <fields>" (`fields`: HAProxy's log-format
   * variables), with the frontends and backends of `lines`; returns once `port` listens in `waitNs` (its
   * IPv4 side only with `family: 4`, where another process holds the IPv6 one).
   */
  async loggingHaproxy(
    ns: string,
    cg: string,
    lines: string[],
    opts: { port: number; fields?: string; waitNs?: string; family?: 4 },
  ): Promise<Proc> {
    const cfg = this.tmpFile(
      `haproxy-log-${ns}-${opts.port}-${Date.now()}.cfg`,
      [
        'global',
        '  log stdout format raw local0',
        'defaults',
        '  mode tcp',
        '  log global',
        `  log-format "conn ${opts.fields ?? '%ci %cp %fi %fp'}"`,
        '  timeout connect 5s',
        '  timeout client 30s',
        '  timeout server 30s',
        ...lines,
        '',
      ].join('\n'),
    );
    const p = this.spawn(ns, cg, 'haproxy', ['-db', '-f', cfg]);
    const where = opts.waitNs ?? ns;
    if (opts.family === 4)
      await waitFor(
        () => sh('ip', ['netns', 'exec', where, 'ss', '-Hltn4', `sport = :${opts.port}`]).trim() !== '',
        `haproxy in ${where}`,
        p,
      );
    else await this.waitListening(where, opts.port, `haproxy on ${opts.port}`, p);
    return p;
  }

  /** The meshredir CLI, as a child process. */
  cli(args: string[]): Proc {
    const p = this.spawn(null, null, process.execPath, [CLI, ...args]);
    return p;
  }

  async cliRun(args: string[]): Promise<string> {
    return this.run(null, null, process.execPath, [CLI, ...args]);
  }

  /** `meshredir agent` arguments on this env's cgroup root, bpffs and state dir, eBPF mode (`extra` may override). */
  agentArgs(policiesDir: string, extra: string[] = []): string[] {
    return [
      'agent',
      '--policies',
      policiesDir,
      '--cgroup-root',
      this.cgRoot,
      '--bpffs',
      this.bpffs,
      '--state-dir',
      this.stateDir,
      '--mode',
      'ebpf',
      ...extra,
    ];
  }

  /** Starts the agent on this env's cgroup root and bpffs; waits until it is redirect-ready. */
  async agent(policiesDir: string, extra: string[] = []): Promise<Proc> {
    // Any free loopback port (logged): test agents never contend for the default one.
    const p = this.cli(this.agentArgs(policiesDir, ['--metrics-address', '127.0.0.1:0', ...extra]));
    startedAgents.push(p);
    await waitFor(() => p.out.includes('redirect-ready') || p.err.includes('redirect-ready'), 'agent ready', p, 30_000);
    return p;
  }

  async stop(p: Proc, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill(signal);
    return p.exited;
  }

  /** Pins of this env's agent go before its namespaces (its cleanup finds netns by inode). */
  protected override async beforeNamespaces(problems: string[]): Promise<void> {
    if (!existsSync(this.bpffs)) return;
    try {
      sh(process.execPath, [CLI, ...this.cleanupArgs('--force')]);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }

  override async teardown(): Promise<string[]> {
    const problems = await super.teardown();
    rmSync(this.stateDir, { recursive: true, force: true });
    return problems;
  }
}

export interface ClientResult {
  ok: boolean;
  error?: string;
  peer: { address: string; port: number } | null;
  local?: { address: string; port: number };
  data?: string;
}

export async function waitFor(cond: () => boolean, what: string, p?: Proc, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return;
    if (p && (p.child.exitCode !== null || p.child.signalCode !== null))
      throw new Error(
        `${what}: process exited (${p.child.exitCode ?? p.child.signalCode}): ${p.err.trim().slice(-2000)}`,
      );
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what}: not ready after ${timeoutMs} ms${p ? `; stderr: ${p.err.trim().slice(-2000)}` : ''}`);
}

/** Polls an async `cond` every 100 ms until it holds; fails naming `what` after `ms`. */
export async function until(what: string, cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A policy file's text from its name and spec as written (JSON is YAML). */
export function policyDoc(name: string, spec: Record<string, unknown>): string {
  return JSON.stringify({ apiVersion: 'meshredir/v1', kind: 'RedirectPolicy', metadata: { name }, spec }, null, 2);
}

/** A policy file's YAML text. */
export function policyYaml(spec: {
  name: string;
  cgroup: string;
  netns?: string;
  outbound?: string;
  outbound6?: string;
  bypassCgroups?: string[];
  uids?: number[];
  gids?: number[];
  outboundSpec?: Record<string, unknown>;
  accelerate?: boolean;
}): string {
  return policyDoc(spec.name, {
    cgroup: spec.cgroup,
    ...(spec.netns ? { netns: spec.netns } : {}),
    ...(spec.accelerate ? { accelerate: true } : {}),
    proxy: {
      ...(spec.outbound ? { outbound: spec.outbound } : {}),
      ...(spec.outbound6 ? { outbound6: spec.outbound6 } : {}),
      bypass: { cgroups: spec.bypassCgroups ?? [], uids: spec.uids ?? [], gids: spec.gids ?? [] },
    },
    ...(spec.outboundSpec ? { outbound: spec.outboundSpec } : {}),
  });
}
