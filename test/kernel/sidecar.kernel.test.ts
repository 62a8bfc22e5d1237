// sidecar.kernel.test.ts — the proxy inside each pod's netns on 127.0.0.1:15001: two pods whose
// connections have identical loopback tuples each get their own original destination; records are
// freed with their connections; a full table refuses connects (never a connection without a record);
// loopback destinations; every getsockopt other than SO_ORIGINAL_DST answered as the kernel did.
import { expect, it } from 'vitest';
import { join } from 'node:path';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { Env, kernelDescribe, policyYaml, waitFor, sh, ORIGDST_PROXY, type Proc } from './harness.js';
import { useLab } from './lab.js';

interface Status {
  maps: { map: string; entries: number; max: number }[];
  records: { pending: number; limit: number; inTable: number };
  policies: { name: string; counters: Record<string, number> }[];
}

kernelDescribe('eBPF redirection, sidecar (proxy in the pod netns on loopback)', () => {
  let env: Env;
  let agent: Proc;
  const pods: { ns: string; cg: string; proxyCg: string }[] = [];
  const proxies: Proc[] = [];

  const status = async (): Promise<Status> =>
    JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const origEntries = async () => {
    const s = await status();
    const m = s.maps.find((x) => x.map === 'mr_orig')!;
    expect(s.records.pending).toBe(m.entries); // the gauge the connect hook reads is exact
    return m;
  };
  const stopped = async <T>(pids: number[], fn: () => Promise<T>): Promise<T> => {
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    try {
      return await fn();
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
  };
  const proxyPids = (cg: string) =>
    sh('cat', [join(env.cgDir(cg), 'cgroup.procs')])
      .trim()
      .split('\n')
      .map(Number);

  useLab({}, async (lab) => {
    env = lab.env;
    for (const name of ['s1', 's2', 's3']) {
      const ns = env.netns(name);
      const cg = env.cgroup(`${name}/app`);
      const proxyCg = env.cgroup(`${name}/proxy`);
      const policyCg = `${env.cgRoot}/${name}`;
      const p = env.spawn(ns, proxyCg, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'report', '--log']);
      proxies.push(p);
      await env.waitListening(ns, 15001, `origdst-proxy in ${name}`, p);
      // s3 also sends loopback destinations to its proxy.
      const outboundSpec = name === 's3' ? { redirectLoopback: true } : undefined;
      lab.policy(
        name,
        policyYaml({
          name,
          cgroup: policyCg,
          outbound: '127.0.0.1:15001',
          bypassCgroups: [proxyCg],
          ...(outboundSpec ? { outboundSpec } : {}),
        }),
      );
      pods.push({ ns, cg, proxyCg });
      // A local service of the pod on loopback (port 9999), outside every covered cgroup.
      await env.server(ns, '127.0.0.1', 9999, `local-${name}`);
      // One that keeps connections open, so their TCP state is the same for every reader.
      if (name === 's1') await env.server(ns, '127.0.0.1', 9998, 'local-held', true);
    }
    // The node's limit, with no policy's own budget below it: the full-table test reaches the node's.
    agent = await lab.agent(['--max-connections', '128', '--max-pending-per-policy', '128']);
  });

  it('two pods with identical loopback tuples each get their own destination, both records held at once', async () => {
    const [s1, s2] = pods as [(typeof pods)[0], (typeof pods)[0]];
    // A record lives from the SYN until the proxy's kernel completes the handshake. TCP_REPAIR connects
    // run the same hooks without any packet, so their records stay until close: both at once, with the
    // same tuple 127.0.0.1:41100 → 127.0.0.1:15001, told apart only by the netns.
    const repair = (p: (typeof pods)[0], host: string, port: number) =>
      env.spawn(p.ns, p.cg, 'python3', [join(env.toolsDir, 'repair.py'), host, String(port), '41100'], { stdin: true });
    const a = repair(s1, '10.201.0.5', 8080);
    const b = repair(s2, '10.201.0.6', 9090);
    try {
      await waitFor(() => a.out.includes('\n') && b.out.includes('\n'), 'repair-mode connects', a);
      const m = new Pins(env.bpffs).openMap('mr_orig');
      let recs: { netns: bigint; sport: number; dport: number; to: string }[];
      try {
        recs = (m.entries() as [{ netns: bigint; sport: number; dport: number }, { addr: Buffer; port: number }][]).map(
          ([k, v]) => ({
            netns: k.netns,
            sport: k.sport,
            dport: k.dport,
            to: `${[...v.addr.subarray(0, 4)].join('.')}:${v.port}`,
          }),
        );
      } finally {
        m.close();
      }
      expect(recs.map((r) => [r.sport, r.dport])).toEqual([
        [41100, 15001],
        [41100, 15001],
      ]);
      expect(new Set(recs.map((r) => r.netns)).size).toBe(2);
      expect(recs.map((r) => r.to).sort()).toEqual(['10.201.0.5:8080', '10.201.0.6:9090']);
    } finally {
      for (const p of [a, b]) p.child.stdin!.end();
      await Promise.all([a.exited, b.exited]);
    }
    expect((await origEntries()).entries).toBe(0);
    // And the same again, quickly, from fresh processes.
    for (let round = 0; round < 10; round++) {
      const port = String(41000 + round);
      // Nothing routes 10.201.0.0/24 in these namespaces: a failed redirect could not leave them.
      const [a, b] = await Promise.all([
        env.client(s1.ns, s1.cg, ['connect', '10.201.0.5', '8080'], { env: { LOCAL_PORT: port } }),
        env.client(s2.ns, s2.cg, ['connect', '10.201.0.6', '9090'], { env: { LOCAL_PORT: port } }),
      ]);
      // Same tuple on both sides (127.0.0.1:port → 127.0.0.1:15001), different answers.
      expect(a.data).toBe(`ORIGDST 10.201.0.5 8080 PEER 127.0.0.1 ${port}`);
      expect(b.data).toBe(`ORIGDST 10.201.0.6 9090 PEER 127.0.0.1 ${port}`);
      expect(a.peer).toEqual({ address: '10.201.0.5', port: 8080 });
    }
  });

  it('the proxy itself (bypass cgroup) is not redirected, even to the same destination', async () => {
    const s1 = pods[0]!;
    const r = await env.client(s1.ns, s1.proxyCg, ['connect', '10.201.0.5', '8080']);
    expect(r.ok).toBe(false); // went direct: nothing routes there, so it fails instead of looping
    expect(r.error).toMatch(/ENETUNREACH|EHOSTUNREACH/);
  });

  it('10,000 short connections leave no records behind', async () => {
    const s1 = pods[0]!;
    const r = await env.client<{
      total: number;
      ok: number;
      failed: number;
      unexpected: number;
      firstError: string | null;
    }>(s1.ns, s1.cg, ['loop', '10.201.0.7', '80', '10000', 'ORIGDST 10.201.0.7 80 '], { timeoutMs: 120_000 });
    expect(r).toMatchObject({ total: 10000, ok: 10000, failed: 0, unexpected: 0 });
    expect((await origEntries()).entries).toBeLessThanOrEqual(2);
  });

  it('long-lived connections do not occupy the table: 300 held through a 128-record table all work', async () => {
    const s1 = pods[0]!;
    const held = await env.hold(s1.ns, s1.cg, '10.201.0.9', 7000, 300);
    try {
      const wrong = held.lines.filter((l) => !/^ORIGDST 10\.201\.0\.9 7000 PEER 127\.0\.0\.1 \d+$/.test(l));
      expect(wrong).toEqual([]);
      // Each record moved onto the proxy's socket at its first read.
      expect((await origEntries()).entries).toBeLessThanOrEqual(2);
    } finally {
      await held.release();
    }
  });

  it('a connection the application closes before the proxy accepts it still finds its destination', async () => {
    const s1 = pods[0]!;
    const served = () => (proxies[0]!.out.match(/^ORIGDST 10\.201\.0\.12 7200 /gm) ?? []).length;
    const before = served();
    await stopped(proxyPids(s1.proxyCg), async () => {
      // 20 connections that send a line and close at once (a health check, a fire-and-forget push),
      // while the proxy is not accepting. The proxy's kernel completes each handshake, and with it
      // the record moves onto the proxy's socket: nothing waits in the table, whatever the app does.
      await env.run(s1.ns, s1.cg, 'python3', [
        '-c',
        "import socket\nfor i in range(20):\n s=socket.create_connection(('10.201.0.12',7200)); s.sendall(b'x\\n'); s.close()",
      ]);
      expect((await origEntries()).entries).toBe(0);
    });
    // Once it accepts them, every one reads its original destination (not its own address).
    await waitFor(() => served() - before === 20, 'the proxy reading 20 destinations', proxies[0], 10_000);
    expect(proxies[0]!.out).not.toMatch(/^ERR /m);
  });

  it('a full table refuses new connects (fail closed): never a connection the proxy cannot place', async () => {
    const s2 = pods[1]!;
    const before = (await status()).policies.find((p) => p.name === 's2')!.counters;
    // A proxy that answers no SYN (its queue overflowing, packets lost): redirected connects wait in
    // SYN_SENT with their records — 128 of them, the limit. Past it, connect() fails with EPERM: a
    // connection that reached HAProxy without a record would be sent to HAProxy itself.
    const drop = ['INPUT', '-p', 'tcp', '--syn', '--dport', '15001', '-j', 'DROP'];
    const ipt = (op: string) => sh('ip', ['netns', 'exec', s2.ns, 'iptables', op, ...drop]);
    ipt('-I');
    let held: ReturnType<Env['holdLater']> | undefined;
    try {
      held = env.holdLater(s2.ns, s2.cg, '10.201.0.11', 7100, 200);
      const end = Date.now() + 15_000;
      while ((await status()).records.pending < 128 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect((await status()).records.pending).toBe(128);
    } finally {
      ipt('-D');
    }
    try {
      // The SYNs are retransmitted and now answered; every connection that was let through reads its
      // own destination, and only the refused ones failed.
      const lines = await held.lines();
      const right = lines.filter((l) => /^ORIGDST 10\.201\.0\.11 7100 PEER 127\.0\.0\.1 \d+$/.test(l));
      const refused = lines.filter((l) => l === 'ERROR EPERM');
      expect(right.length + refused.length, lines.join('\n')).toBe(200);
      expect([right.length, refused.length]).toEqual([128, 72]);
      const after = (await status()).policies.find((p) => p.name === 's2')!.counters;
      expect((after.err_full ?? 0) - (before.err_full ?? 0)).toBe(72);
      expect((after.err_orig ?? 0) - (before.err_orig ?? 0)).toBe(0);
    } finally {
      await held.release();
    }
    expect((await status()).records.pending).toBe(0);
    const fresh = await env.client(s2.ns, s2.cg, ['connect', '10.201.0.10', '7001']);
    expect(fresh.data).toMatch(/^ORIGDST 10\.201\.0\.10 7001 /);
  });

  it('loopback destinations (127/8, 0.0.0.0) go direct, unless the policy says redirectLoopback', async () => {
    const [s1, , s3] = pods as [(typeof pods)[0], (typeof pods)[0], (typeof pods)[0]];
    const before = (await status()).policies.find((p) => p.name === 's1')!.counters;
    expect((await env.client(s1.ns, s1.cg, ['connect', '127.0.0.1', '9999'])).data).toMatch(
      /^local-s1 127\.0\.0\.1 \d+$/,
    );
    // The kernel turns 0.0.0.0 into a local connection only after the connect hook: still loopback.
    expect((await env.client(s1.ns, s1.cg, ['connect', '0.0.0.0', '9999'])).data).toMatch(
      /^local-s1 127\.0\.0\.1 \d+$/,
    );
    const after = (await status()).policies.find((p) => p.name === 's1')!.counters;
    expect(after.bypass_loopback! - before.bypass_loopback!).toBe(2);
    const r = await env.client(s3.ns, s3.cg, ['connect', '127.0.0.1', '9999']);
    expect(r.data).toMatch(/^ORIGDST 127\.0\.0\.1 9999 PEER 127\.0\.0\.1 \d+$/);
    expect(r.peer).toEqual({ address: '127.0.0.1', port: 9999 });
  });

  it('every other getsockopt is answered as the kernel did: with and without the hook, the same', async () => {
    const s1 = pods[0]!;
    // A filter table of more than a page, read back through IPT_SO_GET_ENTRIES.
    const rules = Array.from(
      { length: 80 },
      (_, i) => `-A mrtest -p tcp --dport ${20000 + i} -m comment --comment meshredir-test-filler -j ACCEPT`,
    );
    sh('ip', ['netns', 'exec', s1.ns, 'iptables-legacy-restore', '--noflush'], {
      input: ['*filter', ':mrtest - [0:0]', ...rules, 'COMMIT', ''].join('\n'),
    });
    const run = async (cg: string | null) =>
      JSON.parse(
        await env.run(s1.ns, cg, 'python3', [join(env.toolsDir, 'sockopts.py'), '127.0.0.1', '9998', 'filter']),
      ) as Record<string, unknown>;
    const hooked = await run(s1.cg); // under the attach point, in a covered cgroup
    const plain = await run(null); // the test runner's own cgroup: no hook at all
    expect(hooked).toEqual(plain);
    expect(hooked.tcp_info).toMatchObject({ state: 1 });
    expect((hooked.ipt_entries as { len: number }).len).toBeGreaterThan(4096);
    expect((hooked.ipt_entries as { errno: string | null }).errno).toBeNull();
  });

  it('agent SIGTERM keeps redirection; cleanup is idempotent', async () => {
    expect(await env.stop(agent)).toBe(0);
    await env.cliRun(env.cleanupArgs());
    expect(await env.cliRun(env.cleanupArgs())).toMatch(/nothing to clean/);
  });
});
