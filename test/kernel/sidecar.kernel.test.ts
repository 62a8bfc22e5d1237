// sidecar.kernel.test.ts — the proxy inside each pod's netns on 127.0.0.1:15001: two pods whose
// connections have identical loopback tuples each get their own original destination; records are
// freed with their connections; a full table never yields a wrong destination.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, ORIGDST_PROXY, type Proc } from './harness.js';

interface Status {
  maps: { map: string; entries: number; max: number }[];
  policies: { name: string; counters: Record<string, number> }[];
}

kernelDescribe('eBPF redirection, sidecar (proxy in the pod netns on loopback)', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  const pods: { ns: string; cg: string; proxyCg: string }[] = [];

  const status = async (): Promise<Status> => JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const origEntries = async () => (await status()).maps.find((m) => m.map === 'mr_orig')!;

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    for (const name of ['s1', 's2']) {
      const ns = env.netns(name);
      const cg = env.cgroup(`${name}/app`);
      const proxyCg = env.cgroup(`${name}/proxy`);
      const policyCg = `${env.cgRoot}/${name}`;
      const p = env.spawn(ns, proxyCg, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'report']);
      await env.waitListening(ns, 15001, `origdst-proxy in ${name}`, p);
      writeFileSync(join(dir, `${name}.yaml`), policyYaml({ name, cgroup: policyCg, outbound: '127.0.0.1:15001', bypassCgroups: [proxyCg] }));
      pods.push({ ns, cg, proxyCg });
    }
    agent = await env.agent(dir, ['--max-connections', '128']);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('two pods with identical loopback tuples each get their own destination', async () => {
    const [s1, s2] = pods as [(typeof pods)[0], (typeof pods)[0]];
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
    const r = await env.client<{ total: number; ok: number; failed: number; unexpected: number; firstError: string | null }>(
      s1.ns,
      s1.cg,
      ['loop', '10.201.0.7', '80', '10000', 'ORIGDST 10.201.0.7 80 '],
      { timeoutMs: 120_000 },
    );
    expect(r).toMatchObject({ total: 10000, ok: 10000, failed: 0, unexpected: 0 });
    expect((await origEntries()).entries).toBeLessThanOrEqual(2);
  });

  it('long-lived connections do not occupy the table: 300 held through a 128-record table all work', async () => {
    const s2 = pods[1]!;
    const held = await env.hold(s2.ns, s2.cg, '10.201.0.9', 7000, 300);
    try {
      const wrong = held.lines.filter((l) => !/^ORIGDST 10\.201\.0\.9 7000 PEER 127\.0\.0\.1 \d+$/.test(l));
      expect(wrong).toEqual([]);
      // Each record moved onto the proxy's socket at its first read.
      expect((await origEntries()).entries).toBeLessThanOrEqual(2);
    } finally {
      await held.release();
    }
  });

  it('a proxy that stops accepting fills the table: later connections fail at the proxy, none gets a wrong destination', async () => {
    const s2 = pods[1]!;
    const pids = (await env.run(null, null, 'cat', [join(env.cgDir(s2.proxyCg), 'cgroup.procs')])).trim().split('\n').map(Number);
    const before = (await status()).policies.find((p) => p.name === 's2')!.counters;
    for (const pid of pids) process.kill(pid, 'SIGSTOP');
    let held: Awaited<ReturnType<Env['hold']>> | undefined;
    try {
      const holding = env.hold(s2.ns, s2.cg, '10.201.0.11', 7100, 200);
      // The kernel completes the handshakes (backlog 4096) while nothing accepts them.
      const end = Date.now() + 15_000;
      while ((await origEntries()).entries < 128 && Date.now() < end) await new Promise((r) => setTimeout(r, 100));
      expect((await origEntries()).entries).toBe(128);
      await new Promise((r) => setTimeout(r, 500)); // the remaining 72 handshakes complete
      for (const pid of pids) process.kill(pid, 'SIGCONT');
      held = await holding;
    } finally {
      for (const pid of pids) process.kill(pid, 'SIGCONT');
    }
    try {
      const right = held.lines.filter((l) => /^ORIGDST 10\.201\.0\.11 7100 /.test(l));
      const refused = held.lines.filter((l) => l.startsWith('ERR ') || l === 'CLOSED' || l.startsWith('ERROR '));
      expect(right.length + refused.length, held.lines.join('\n')).toBe(200); // nothing else: never a wrong destination
      expect(right.length).toBe(128);
      const after = (await status()).policies.find((p) => p.name === 's2')!.counters;
      expect((after.err_orig ?? 0) - (before.err_orig ?? 0)).toBe(72);
    } finally {
      await held.release();
    }
    const fresh = await env.client(s2.ns, s2.cg, ['connect', '10.201.0.10', '7001']);
    expect(fresh.data).toMatch(/^ORIGDST 10\.201\.0\.10 7001 /);
  });

  it('agent SIGTERM keeps redirection; cleanup is idempotent', async () => {
    expect(await env.stop(agent)).toBe(0);
    await env.cliRun(['cleanup', '--bpffs', env.bpffs]);
    expect(await env.cliRun(['cleanup', '--bpffs', env.bpffs])).toMatch(/nothing to clean/);
  });
});
