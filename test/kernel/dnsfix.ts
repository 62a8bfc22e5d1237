// dnsfix.ts — the DNS capture tests' topology and real parts: a nameserver (dnsmasq) in its own netns
// standing in for the cluster DNS, DNS proxies (dnsmasq too, answering the test zone differently, so a
// test can tell who answered), pods with a resolv.conf of their own, and the real clients (getent,
// dig, Node's c-ares resolver, test/tools/dnsq.py). Neither dnsmasq forwards anything off the machine:
// no upstream servers (--no-resolv), only fwd.test forwarded by a proxy to the test nameserver.
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'vitest';
import { Env, waitFor, sh, type Proc } from './harness.js';

export const NS4 = '10.77.0.53';
export const NS6 = 'fd77::53';
/** A second nameserver address on the same dnsmasq (for "two nameservers on one socket"). */
export const NS4B = '10.77.0.54';
export const NODE_PROXY4 = '10.77.0.100';
export const NODE_PROXY6 = 'fd77::100';
export const PROXY_PORT = 15053;
/** What each DNS server answers for test.zone: the nameserver .1, a proxy .2 (sidecar .3). */
export const ANSWER = {
  nameserver: { a: '198.51.100.1', aaaa: '2001:db8::1' },
  proxy: { a: '198.51.100.2', aaaa: '2001:db8::2' },
  sidecar: { a: '198.51.100.3', aaaa: '2001:db8::3' },
  fwd: { a: '198.51.100.9' }, // fwd.test: only the nameserver knows it (proxies forward it there)
} as const;

/** What test/tools/dnsq.py prints. */
export interface Reply {
  id?: number;
  answer?: string | null;
  from?: { address: string; port: number };
  peer?: { address: string; port: number };
  error?: string;
  replies?: Reply[];
}

export interface Pod {
  ns: string;
  cg: string;
  addr4: string;
  addr6: string;
}

export class DnsLab {
  readonly node: string;
  readonly nsNs: string;
  readonly proxyNs: string;
  readonly proxyCg: string;
  readonly pods: Record<'a' | 'b', Pod>;
  private resolvDirs: string[] = [];
  private pidFiles: string[] = [];

  constructor(readonly env: Env) {
    for (const bin of ['dnsmasq', 'dig', '/usr/bin/python3'])
      if (!sh('sh', ['-c', `command -v ${bin} || true`]).trim())
        throw new Error(`${bin} is not installed (run make deps): the DNS tests need it`);
    this.node = env.netns('node');
    env.bridge(this.node, 'br0', ['10.77.0.1/24', 'fd77::1/64']);
    this.nsNs = env.netns('dns');
    env.plug(this.node, 'br0', this.nsNs, [`${NS4}/24`, `${NS4B}/24`, `${NS6}/64`]);
    this.proxyNs = env.netns('px');
    env.plug(this.node, 'br0', this.proxyNs, [`${NODE_PROXY4}/24`, `${NODE_PROXY6}/64`]);
    this.proxyCg = env.cgroup('proxy');
    const pod = (name: 'a' | 'b', n: number): Pod => {
      const ns = env.netns(name);
      const addr4 = `10.77.0.${n}`;
      const addr6 = `fd77::${n}`;
      env.plug(this.node, 'br0', ns, [`${addr4}/24`, `${addr6}/64`]);
      return { ns, cg: env.cgroup(`pod-${name}/app`), addr4, addr6 };
    };
    this.pods = { a: pod('a', 2), b: pod('b', 3) };
  }

  /** The pod netns's /etc/resolv.conf (what `ip netns exec` bind-mounts). */
  resolvConf(pod: Pod, nameservers: string[]): void {
    const dir = join('/etc/netns', pod.ns);
    mkdirSync(dir, { recursive: true });
    if (!this.resolvDirs.includes(dir)) this.resolvDirs.push(dir);
    writeFileSync(
      join(dir, 'resolv.conf'),
      `${nameservers.map((n) => `nameserver ${n}`).join('\n')}\noptions timeout:2 attempts:1\n`,
    );
  }

  /** dnsmasq answering test.zone with `answer`, on the given addresses and port. */
  async dnsmasq(
    ns: string,
    cg: string | null,
    listen: string[],
    port: number,
    answer: { a: string; aaaa: string },
    opts: { forwardTo?: string; uid?: number; extra?: string[] } = {},
  ): Promise<Proc> {
    const pidFile = `/tmp/${ns}-${port}.pid`;
    this.pidFiles.push(pidFile);
    const args = [
      '--keep-in-foreground',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--conf-file=/dev/null',
      `--pid-file=${pidFile}`,
      '--bind-interfaces',
      `--listen-address=${listen.join(',')}`,
      `--port=${port}`,
      `--address=/test.zone/${answer.a}`,
      `--address=/test.zone/${answer.aaaa}`,
      '--log-queries',
      '--log-facility=-',
      ...(opts.uid === undefined ? ['--user=root'] : []),
      ...(opts.forwardTo ? [`--server=/fwd.test/${opts.forwardTo}`] : [`--address=/fwd.test/${ANSWER.fwd.a}`]),
      ...(opts.extra ?? []),
    ];
    const p = this.env.spawn(ns, cg, 'dnsmasq', args, opts.uid === undefined ? {} : { uid: opts.uid });
    await waitFor(
      () =>
        sh('ip', ['netns', 'exec', ns, 'ss', '-Hlun', `sport = :${port}`])
          .trim()
          .split('\n')
          .filter(Boolean).length >= listen.length,
      `dnsmasq on ${listen.join(',')}:${port}`,
      p,
    );
    return p;
  }

  /** The nameserver: answers test.zone with .1 and fwd.test itself. */
  nameserver(): Promise<Proc> {
    return this.dnsmasq(this.nsNs, null, [NS4, NS4B, NS6], 53, ANSWER.nameserver);
  }

  /** The node DNS proxy in the proxy cgroup; forwards fwd.test to the nameserver. */
  nodeProxy(): Promise<Proc> {
    return this.dnsmasq(this.proxyNs, this.proxyCg, [NODE_PROXY4, NODE_PROXY6], PROXY_PORT, ANSWER.proxy, {
      forwardTo: NS4,
    });
  }

  /** Clients, as a pod process sees them. */
  async getent(pod: Pod, cg: string | null, db: 'ahostsv4' | 'ahostsv6', name: string): Promise<string[]> {
    const out = await this.env.run(pod.ns, cg, 'getent', [db, name], { timeoutMs: 20_000 }).catch(() => null);
    if (out === null) return ['ERR']; // getent says nothing but its exit code (2: not found)
    return [
      ...new Set(
        out
          .split('\n')
          .filter(Boolean)
          .map((l) => l.split(/\s+/)[0]!),
      ),
    ];
  }

  async dig(pod: Pod, cg: string | null, server: string, name: string, opts: string[] = []): Promise<string> {
    const out = await this.env
      .run(pod.ns, cg, 'dig', [`@${server}`, name, '+short', '+tries=1', '+time=3', ...opts], { timeoutMs: 20_000 })
      .catch((e: Error) => `ERR ${e.message}`);
    return out.trim();
  }

  /** Node's dns.Resolver (c-ares) with one server. */
  async cares(pod: Pod, cg: string | null, server: string, name: string, rr: 'A' | 'AAAA' = 'A'): Promise<string> {
    const js = `const {Resolver}=require('node:dns');const r=new Resolver({timeout:3000,tries:1});r.setServers([${JSON.stringify(server)}]);r.resolve(${JSON.stringify(name)},${JSON.stringify(rr)},(e,a)=>{console.log(e?'ERR '+e.code:a.join(','));});`;
    return (await this.env.run(pod.ns, cg, process.execPath, ['-e', js], { timeoutMs: 20_000 })).trim();
  }

  async dnsq<T = Record<string, unknown>>(
    pod: Pod,
    cg: string | null,
    args: string[],
    timeoutMs = 60_000,
    uid?: number,
  ): Promise<T> {
    const out = await this.env.run(pod.ns, cg, '/usr/bin/python3', [join(this.env.toolsDir, 'dnsq.py'), ...args], {
      timeoutMs,
      ...(uid === undefined ? {} : { uid }),
    });
    return JSON.parse(out.trim().split('\n').pop()!) as T;
  }

  /** glibc (getent): pod A gets `answer` (A through an IPv4 nameserver, AAAA through an IPv6 one), pod B the nameserver's. */
  async expectGlibc(answer: { a: string; aaaa: string }): Promise<void> {
    const { a, b } = this.pods;
    for (const [ns, db, rr] of [
      [NS4, 'ahostsv4', 'a'],
      [NS6, 'ahostsv6', 'aaaa'],
    ] as const) {
      this.resolvConf(a, [ns]);
      this.resolvConf(b, [ns]);
      expect(await this.getent(a, a.cg, db, 'test.zone')).toEqual([answer[rr]]);
      expect(await this.getent(b, b.cg, db, 'test.zone')).toEqual([ANSWER.nameserver[rr]]);
    }
  }

  /**
   * A sidecar DNS proxy on loopback in pod A is in force: glibc, dig over TCP, c-ares and sendto get its answer,
   * the reply from the nameserver asked; it forwards fwd.test to the nameserver.
   */
  async expectSidecar(): Promise<void> {
    const a = this.pods.a;
    this.resolvConf(a, [NS4]);
    expect(await this.getent(a, a.cg, 'ahostsv4', 'test.zone')).toEqual([ANSWER.sidecar.a]);
    expect(await this.dig(a, a.cg, NS6, 'test.zone', ['+tcp'])).toBe(ANSWER.sidecar.a);
    expect(await this.cares(a, a.cg, NS6, 'test.zone')).toBe(ANSWER.sidecar.a);
    const s = await this.dnsq<Reply>(a, a.cg, ['sendto', 'test.zone', NS4]);
    expect(s.replies![0]).toEqual({ id: 100, answer: ANSWER.sidecar.a, from: { address: NS4, port: 53 } });
    expect(await this.dig(a, a.cg, NS4, 'fwd.test')).toBe(ANSWER.fwd.a); // sidecar → nameserver
  }

  /**
   * dnsq.py's sendto, connected UDP and TCP from pod A over IPv4, IPv6 and v4-mapped: each gets `answer`, with
   * the reply from (and the peer) the nameserver asked; pod B's sendto gets the nameserver's answer from it.
   */
  async expectPythonClients(answer: string): Promise<void> {
    const { a, b } = this.pods;
    for (const [ns, extra] of [
      [NS4, []],
      [NS6, []],
      [NS4, ['--v6sock']],
    ] as const) {
      const from = { address: extra.length ? `::ffff:${ns}` : ns, port: 53 };
      const s = await this.dnsq<Reply>(a, a.cg, [...extra, 'sendto', 'test.zone', ns]);
      expect(s.replies).toEqual([{ id: 100, answer, from }]);
      const c = await this.dnsq<Reply>(a, a.cg, [...extra, 'connect', 'test.zone', ns]);
      expect(c).toEqual({ peer: from, id: 7, answer, from });
      const t = await this.dnsq<Reply>(a, a.cg, [...extra, 'tcp', 'test.zone', ns]);
      expect(t).toEqual({ peer: from, id: 9, answer });
      const direct = await this.dnsq<Reply>(b, b.cg, [...extra, 'sendto', 'test.zone', ns]);
      expect(direct.replies).toEqual([{ id: 100, answer: ANSWER.nameserver.a, from }]);
    }
  }

  /**
   * Pod A's DNS proxy is down: what a dead nameserver gives, never an answer from elsewhere — connected UDP
   * and TCP refused, sendto timed out (to the nameservers given for each).
   */
  async expectProxyDown(to: { connect: string; tcp: string; sendto: string }): Promise<void> {
    const a = this.pods.a;
    const c = await this.dnsq<Reply>(a, a.cg, ['--timeout', '2', 'connect', 'test.zone', to.connect]);
    expect(c.error).toMatch(/^ConnectionRefusedError/);
    const t = await this.dnsq<Reply>(a, a.cg, ['--timeout', '2', 'tcp', 'test.zone', to.tcp]);
    expect(t.error).toMatch(/^ConnectionRefusedError/);
    const s = await this.dnsq<Reply>(a, a.cg, ['--timeout', '2', 'sendto', 'test.zone', to.sendto]);
    expect(s.error).toMatch(/^TimeoutError/);
  }

  cleanup(): void {
    for (const d of this.resolvDirs) rmSync(d, { recursive: true, force: true });
    for (const f of this.pidFiles) rmSync(f, { force: true });
  }
}
