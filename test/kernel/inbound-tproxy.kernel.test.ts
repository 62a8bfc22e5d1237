// inbound-tproxy.kernel.test.ts — inbound interception in iptables mode, driven by the real agent: nat
// REDIRECT (today's) and TPROXY (istio's mangle rules with their fwmark routing; source and destination
// preserved), with iptables-nft and iptables-legacy, IPv4 and IPv6, and an unmodified HAProxy as the pod's
// inbound proxy; verify (rules, routing, a transparent listener), status, the dry run, a switch between
// the two, a proxy killed (REDIRECT refuses, TPROXY drops) and restarted, and a cleanup that removes the
// ip rules and routes too.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyDoc, waitFor, sh, ORIGDST_PROXY, type Proc } from './harness.js';

const HIGH = 20000 + Math.floor(Math.random() * 20000);
type Pod = { ns: string; cg: string; v4: string; v6: string; haproxy?: Proc; v6proxy?: Proc; transparent: boolean };

kernelDescribe('inbound interception in iptables mode (REDIRECT and TPROXY), by the agent', () => {
  let env: Env;
  let dir: string;
  let state: string;
  let agent: Proc;
  let podA: string;
  let cgA: string;
  const pods: Record<'r' | 't' | 'l', Pod> = {
    r: { ns: '', cg: '', v4: '10.200.0.12', v6: 'fd00:200::12', transparent: false }, // REDIRECT, nft
    t: { ns: '', cg: '', v4: '10.200.0.13', v6: 'fd00:200::13', transparent: true }, // TPROXY, nft
    l: { ns: '', cg: '', v4: '10.200.0.14', v6: 'fd00:200::14', transparent: true }, // TPROXY, legacy
  };
  const logged = (p: Proc) => p.out.split('\n').filter((l) => l.startsWith('conn '));
  const connect = (host: string, port: number) => env.client(podA, cgA, ['connect', host, String(port)]);
  const policy = (name: 'r' | 't' | 'l', interception: 'redirect' | 'tproxy') =>
    writeFileSync(
      join(dir, `${name}.yaml`),
      policyDoc(`pod-${name}`, {
        cgroup: pods[name].cg,
        proxy: { inbound: 15006 },
        inbound: { interception, excludePorts: [9090] },
      }),
    );
  const status = async () =>
    JSON.parse(await env.cliRun(['status', '--json', '--iptables-state', state, '--bpffs', env.bpffs])) as {
      iptables: {
        policy: string;
        live: string;
        inbound?: string;
        inboundRedirected: Record<string, number>;
        routes?: Record<string, string>;
      }[];
    };
  const until = async <T>(get: () => Promise<T>, ok: (v: T) => boolean, what: string): Promise<T> => {
    for (let i = 0; i < 150; i++) {
      const v = await get();
      if (ok(v)) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`${what}: never happened`);
  };
  const verify = async (pod: Pod) => {
    const p = env.cli(['verify', '--json', '--iptables-state', state, '--bpffs', env.bpffs, '--cgroup', pod.cg]);
    const code = await p.exited;
    return { code, ...(JSON.parse(p.out) as { ok: boolean; steps: { step: string; ok: boolean; detail: string }[] }) };
  };
  /**
   * HAProxy on the wildcard address of port 15006, `transparent` for TPROXY; logs client, frontend and
   * server. Behind REDIRECT it takes IPv4 only: HAProxy asks no IP6T_SO_ORIGINAL_DST, so it would forward
   * a redirected IPv6 connection to its own port (a loop); `origdst-proxy` answers IPv6 there instead.
   */
  async function haproxy(pod: Pod): Promise<Proc> {
    const t = pod.transparent ? ' transparent' : '';
    const cg = env.cgroup(`${pod.cg.split('/').pop()}/proxy`);
    if (!pod.transparent && !pod.v6proxy) {
      pod.v6proxy = env.spawn(pod.ns, cg, ORIGDST_PROXY, ['--listen6', '[::]:15006', '--mode', 'report']);
      await waitFor(() => sh('ip', ['netns', 'exec', pod.ns, 'ss', '-Hltn6', 'sport = :15006']).trim() !== '', 'v6');
    }
    return env.loggingHaproxy(
      pod.ns,
      cg,
      [
        'frontend fe',
        `  bind 0.0.0.0:15006${t}`,
        ...(pod.transparent ? [`  bind :::15006 v6only${t}`] : []),
        '  default_backend be',
        'backend be',
        '  server o 0.0.0.0:0', // the original destination: getsockname (TPROXY) or SO_ORIGINAL_DST (REDIRECT)
      ],
      { port: 15006, fields: '%ci %cp %fi %fp %si %sp', family: 4 },
    );
  }
  const mangle = (pod: Pod, backend: string, family: 4 | 6) =>
    sh('ip', ['netns', 'exec', pod.ns, `ip${family === 6 ? '6' : ''}tables-${backend}-save`, '-t', 'mangle'])
      .split('\n')
      .filter((l) => l.includes('MESHREDIR'));
  const fwmarkRule = (pod: Pod, family: 4 | 6) =>
    sh('ip', ['-n', pod.ns, `-${family}`, 'rule', 'show']).includes('fwmark 0x539 lookup 133');

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-tproxy-'));
    state = join(dir, 'state', 'iptables.json');
    const node = env.netns('node');
    podA = env.netns('a');
    env.bridge(node, 'br0', ['10.200.0.1/24', 'fd00:200::1/64']);
    env.plug(node, 'br0', podA, ['10.200.0.11/24', 'fd00:200::11/64']);
    cgA = env.cgroup('pod-a');
    for (const [name, pod] of Object.entries(pods)) {
      pod.ns = env.netns(name);
      pod.cg = env.cgroup(`pod-${name}`);
      env.plug(node, 'br0', pod.ns, [`${pod.v4}/24`, `${pod.v6}/64`]);
      const appCg = env.cgroup(`pod-${name}/app`);
      for (const [host, port] of [
        [pod.v4, 8080],
        [pod.v4, HIGH],
        [pod.v4, 9090],
        [pod.v6, 8080],
      ] as const) {
        const p = env.spawn(pod.ns, appCg, process.execPath, [
          join(env.toolsDir, 'server.mjs'),
          host,
          String(port),
          `app-${port}`,
        ]);
        await waitFor(() => p.out.includes('ready'), `app ${host}:${port}`, p);
      }
      pod.haproxy = await haproxy(pod);
    }
    // A foreign legacy rule: the agent keeps pod l on the backend that already holds rules there.
    sh('ip', [
      'netns',
      'exec',
      pods.l.ns,
      'iptables-legacy',
      '-A',
      'INPUT',
      '-p',
      'tcp',
      '--dport',
      '1',
      '-j',
      'ACCEPT',
    ]);
    policy('r', 'redirect');
    policy('t', 'tproxy');
    policy('l', 'tproxy');
    agent = await env.agent(dir, ['--mode', 'iptables', '--iptables-state', state, '--interval', '1']);
    await until(status, (s) => s.iptables.length === 3 && s.iptables.every((n) => n.live === 'in sync'), 'applied');
  });

  afterAll(async () => {
    if (agent) await env.stop(agent);
    await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('the rules are where each interception puts them: nat for REDIRECT, mangle + fwmark routing for TPROXY', () => {
    const nat = sh('ip', ['netns', 'exec', pods.r.ns, 'iptables-nft-save', '-t', 'nat']);
    expect(nat).toMatch(/-A MESHREDIR_IN_REDIRECT -p tcp .*-j REDIRECT --to-ports 15006/);
    expect(mangle(pods.r, 'nft', 4)).toEqual([]);
    for (const [pod, backend] of [
      [pods.t, 'nft'],
      [pods.l, 'legacy'],
    ] as const) {
      expect(mangle(pod, backend, 4).join('\n')).toMatch(
        /-A MESHREDIR_TPROXY ! -d 127\.0\.0\.1\/32 -p tcp .*-j TPROXY --on-port 15006 --on-ip 0\.0\.0\.0 --tproxy-mark 0x539\/0xffffffff/,
      );
      expect(mangle(pod, backend, 6).join('\n')).toMatch(/-j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/);
      expect(fwmarkRule(pod, 4) && fwmarkRule(pod, 6)).toBe(true);
      expect(sh('ip', ['-n', pod.ns, '-4', 'route', 'show', 'table', '133'])).toMatch(/^local default dev lo/m);
      // No nat: an inbound-only TPROXY policy has nothing there.
      expect(sh('ip', ['netns', 'exec', pod.ns, `iptables-${backend}-save`, '-t', 'nat'])).not.toContain('MESHREDIR');
    }
    expect(sh('ip', ['netns', 'exec', pods.l.ns, 'iptables-nft-save'])).not.toContain('MESHREDIR');
    expect(sh('ip', ['netns', 'exec', pods.l.ns, 'iptables-legacy-save'])).toMatch(
      /-A INPUT -p tcp .*--dport 1 -j ACCEPT/,
    );
  });

  for (const name of ['r', 't', 'l'] as const) {
    it(`pod-${name}: 8080, a random high port and IPv6 reach HAProxy with the client's own address and the pod's address and port; the app answers; the excluded port goes direct`, async () => {
      const pod = pods[name];
      const h = pod.haproxy!;
      const n = logged(h).length;
      for (const [host, port] of [
        [pod.v4, 8080],
        [pod.v4, HIGH],
        [pod.v6, 8080],
      ] as const) {
        const r = await connect(host, port);
        expect(r.ok, JSON.stringify(r)).toBe(true);
        const client = host.includes(':') ? 'fd00:200::11' : '10.200.0.11';
        if (name === 'r' && host.includes(':')) {
          // REDIRECT, IPv6: the original destination from IP6T_SO_ORIGINAL_DST, the client's own address.
          expect(r.data).toBe(`ORIGDST ${host} ${port} PEER ${client} ${r.local!.port}`);
          continue;
        }
        expect(r.data).toMatch(new RegExp(`^app-${port} ${host} \\d+$`)); // the app saw HAProxy (pod → pod over lo)
        // The client's own address, and pod:port: TPROXY's accepted socket has it as its local address
        // (no NAT); behind REDIRECT HAProxy's frontend address is SO_ORIGINAL_DST's answer (conntrack),
        // which it prefers to getsockname() (pod:15006).
        await waitFor(
          () => logged(h).includes(`conn ${client} ${r.local!.port} ${host} ${port} ${host} ${port}`),
          `log ${host}:${port}: ${logged(h).slice(-3).join(' | ')}`,
        );
      }
      const direct = await connect(pod.v4, 9090);
      expect(direct.data).toMatch(/^app-9090 10\.200\.0\.11 \d+$/);
      expect(logged(h).length - n).toBe(name === 'r' ? 2 : 3); // one per client connection: no loop
    });
  }

  it('status counts each pod per interception; verify checks rules, routing and a transparent listener', async () => {
    const s = await status();
    const by = (p: string) => s.iptables.find((n) => n.policy === p)!;
    expect(by('pod-r')).toMatchObject({ inbound: 'redirect', live: 'in sync' });
    expect(by('pod-t')).toMatchObject({
      inbound: 'tproxy',
      live: 'in sync',
      routes: { ipv4: 'present', ipv6: 'present' },
    });
    expect(by('pod-t').inboundRedirected.ipv4).toBeGreaterThan(0);
    expect(by('pod-r').inboundRedirected.ipv6).toBeGreaterThan(0);
    const t = await verify(pods.t);
    expect(t.steps.map((x) => x.step)).toEqual([
      'cgroup',
      'policy',
      'netns',
      'inbound rules',
      'inbound routing',
      'inbound proxy',
    ]);
    expect(t.ok, JSON.stringify(t.steps)).toBe(true);
    expect(t.steps.at(-1)!.detail).toMatch(/transparent listener\(s\) on port 15006/);
    const r = await verify(pods.r);
    expect(r.steps.map((x) => x.step)).toEqual(['cgroup', 'policy', 'netns', 'inbound rules', 'inbound proxy']);
    expect(r.ok, JSON.stringify(r.steps)).toBe(true);
  });

  it('--dry-run prints the mangle rules and the routing commands of TPROXY', async () => {
    const p = env.cli([
      'agent',
      '--dry-run',
      '--mode',
      'iptables',
      '--policies',
      dir,
      '--iptables-state',
      join(dir, 'fresh.json'), // as on a host that has none of it yet
      '--state-dir',
      env.stateDir,
    ]);
    await p.exited;
    expect(p.out).toMatch(/\*mangle\n:MESHREDIR_INBOUND/);
    expect(p.out).toContain(
      'ip -4 rule add fwmark 0x539 lookup 133; ip -4 route replace local 0.0.0.0/0 dev lo table 133',
    );
  });

  it('switching pod-r to TPROXY under a non-transparent HAProxy: verify names it, connections are dropped; back to REDIRECT', async () => {
    policy('r', 'tproxy');
    await until(status, (s) => s.iptables.find((n) => n.policy === 'pod-r')?.inbound === 'tproxy', 'pod-r tproxy');
    expect(sh('ip', ['netns', 'exec', pods.r.ns, 'iptables-nft-save', '-t', 'nat'])).not.toContain('MESHREDIR');
    const v = await verify(pods.r);
    expect(v.code).toBe(1);
    expect(v.steps.at(-1)).toMatchObject({
      step: 'inbound proxy',
      ok: false,
      detail: expect.stringMatching(/is not transparent .*TPROXY drops every connection/),
    });
    expect(await connect(pods.r.v4, 8080)).toMatchObject({ ok: false, error: 'timeout' });
    policy('r', 'redirect');
    await until(status, (s) => s.iptables.find((n) => n.policy === 'pod-r')?.inbound === 'redirect', 'pod-r redirect');
    expect(mangle(pods.r, 'nft', 4)).toEqual([]);
    expect(fwmarkRule(pods.r, 4) || fwmarkRule(pods.r, 6)).toBe(false); // the routing went with the rules
    expect((await connect(pods.r.v4, 8080)).data).toMatch(/^app-8080 10\.200\.0\.12 \d+$/);
  });

  it('proxy killed: REDIRECT refuses, TPROXY drops (times out); restarted: intercepted again, no reconcile needed', async () => {
    for (const name of ['r', 't'] as const) {
      const pod = pods[name];
      await env.stop(pod.haproxy!, 'SIGKILL');
      // HAProxy's IPv4 listener gone (pod-r's IPv6 one is origdst-proxy's, which stays).
      await waitFor(() => sh('ip', ['netns', 'exec', pod.ns, 'ss', '-Hltn4', 'sport = :15006']).trim() === '', 'gone');
      const r = await connect(pod.v4, 8080);
      expect(r).toMatchObject({ ok: false, error: name === 'r' ? 'ECONNREFUSED' : 'timeout' });
      pod.haproxy = await haproxy(pod);
      expect((await connect(pod.v4, 8080)).data).toMatch(new RegExp(`^app-8080 ${pod.v4} \\d+$`));
    }
  });

  it('cleanup removes every chain of every table and the ip rules and routes; foreign rules stay', async () => {
    await env.stop(agent);
    await env.cliRun(['cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
    expect(existsSync(state)).toBe(false);
    for (const [pod, backend] of [
      [pods.r, 'nft'],
      [pods.t, 'nft'],
      [pods.l, 'legacy'],
    ] as const) {
      for (const f of [4, 6] as const) {
        expect(sh('ip', ['netns', 'exec', pod.ns, `ip${f === 6 ? '6' : ''}tables-${backend}-save`])).not.toContain(
          'MESHREDIR',
        );
        expect(fwmarkRule(pod, f)).toBe(false);
      }
      expect(sh('ip', ['-n', pod.ns, '-4', 'route', 'show', 'table', 'all'])).not.toMatch(/table 133/);
    }
    expect(sh('ip', ['netns', 'exec', pods.l.ns, 'iptables-legacy-save'])).toMatch(/--dport 1 -j ACCEPT/);
  });
});
