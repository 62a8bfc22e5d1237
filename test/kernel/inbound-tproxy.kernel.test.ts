// inbound-tproxy.kernel.test.ts — iptables mode's source-preserving inbound: istio's TPROXY rule set
// (mangle PREROUTING, fwmark routing to a local table) in a pod netns, with iptables-nft and
// iptables-legacy, IPv4 and IPv6, and an unmodified HAProxy (`bind … transparent`) that must see the
// client's own address and the pod's address and port. The rules are the proposal for the mode.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { writeFileSync, rmSync } from 'node:fs';
import { Env, kernelDescribe, waitFor, sh, type Proc } from './harness.js';

/** The TPROXY rules of one pod and family, as `iptables-restore --noflush` input. */
function tproxyRules(o: { family: 4 | 6; port: number; mark: number; excludePorts: number[] }): string {
  const lo = o.family === 4 ? '127.0.0.1/32' : '::1/128';
  const mark = `0x${o.mark.toString(16)}`;
  return [
    '*mangle',
    ':MESHREDIR_INBOUND - [0:0]',
    ':MESHREDIR_DIVERT - [0:0]',
    ':MESHREDIR_TPROXY - [0:0]',
    '-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND',
    // The proxy's own connections to the app (pod address → pod address) arrive on lo.
    '-A MESHREDIR_INBOUND -i lo -p tcp -j RETURN',
    ...o.excludePorts.map((p) => `-A MESHREDIR_INBOUND -p tcp --dport ${p} -j RETURN`),
    // Packets of connections the proxy already accepted: their (transparent) socket takes them.
    '-A MESHREDIR_INBOUND -p tcp -m socket --transparent -j MESHREDIR_DIVERT',
    '-A MESHREDIR_INBOUND -p tcp -j MESHREDIR_TPROXY',
    `-A MESHREDIR_DIVERT -j MARK --set-xmark ${mark}/0xffffffff`,
    '-A MESHREDIR_DIVERT -j ACCEPT',
    `-A MESHREDIR_TPROXY ! -d ${lo} -p tcp -j TPROXY --on-port ${o.port} --tproxy-mark ${mark}/0xffffffff`,
    'COMMIT',
    '',
  ].join('\n');
}

const MARK = 0x539;
const TABLE = 133;
const HIGH = 20000 + Math.floor(Math.random() * 20000);

kernelDescribe('iptables inbound TPROXY (source preserved), both backends', () => {
  let env: Env;
  let podA: string;
  let cgA: string;
  const pods: Record<'nft' | 'legacy', { ns: string; v4: string; v6: string; haproxy?: Proc }> = {
    nft: { ns: '', v4: '10.200.0.12', v6: 'fd00:200::12' },
    legacy: { ns: '', v4: '10.200.0.13', v6: 'fd00:200::13' },
  };
  const cfgs: string[] = [];
  const logged = (p: Proc) => p.out.split('\n').filter((l) => l.startsWith('conn '));

  beforeAll(async () => {
    env = new Env();
    const node = env.netns('node');
    podA = env.netns('a');
    env.bridge(node, 'br0', ['10.200.0.1/24', 'fd00:200::1/64']);
    env.plug(node, 'br0', podA, ['10.200.0.11/24', 'fd00:200::11/64']);
    cgA = env.cgroup('pod-a');
    for (const backend of ['nft', 'legacy'] as const) {
      const pod = pods[backend];
      pod.ns = env.netns(backend);
      env.plug(node, 'br0', pod.ns, [`${pod.v4}/24`, `${pod.v6}/64`]);
      for (const [host, port] of [
        [pod.v4, 8080],
        [pod.v4, HIGH],
        [pod.v4, 9090],
        [pod.v6, 8080],
      ] as const)
        await env.server(pod.ns, host, port, `app-${port}`);
      for (const family of [4, 6] as const) {
        const restore = `ip${family === 6 ? '6' : ''}tables-${backend}-restore`;
        sh('ip', ['netns', 'exec', pod.ns, restore, '--noflush'], {
          input: tproxyRules({ family, port: 15006, mark: MARK, excludePorts: [9090] }),
        });
        sh('ip', ['-n', pod.ns, `-${family}`, 'rule', 'add', 'fwmark', String(MARK), 'lookup', String(TABLE)]);
        sh('ip', [
          '-n',
          pod.ns,
          `-${family}`,
          'route',
          'add',
          'local',
          family === 4 ? '0.0.0.0/0' : '::/0',
          'dev',
          'lo',
          'table',
          String(TABLE),
        ]);
      }
      const cfg = `/tmp/meshredir-test-${env.id}-tproxy-${backend}.cfg`;
      cfgs.push(cfg);
      writeFileSync(
        cfg,
        [
          'global',
          '  log stdout format raw local0',
          'defaults',
          '  mode tcp',
          '  log global',
          '  log-format "conn %ci %cp %fi %fp"',
          '  timeout connect 5s',
          '  timeout client 30s',
          '  timeout server 30s',
          'frontend fe',
          '  bind 0.0.0.0:15006 transparent',
          '  bind :::15006 v6only transparent',
          '  default_backend be',
          'backend be',
          '  server o 0.0.0.0:0',
          '',
        ].join('\n'),
      );
      pod.haproxy = env.spawn(pod.ns, env.cgroup(`${backend}-proxy`), 'haproxy', ['-db', '-f', cfg]);
      await env.waitListening(pod.ns, 15006, `haproxy ${backend}`, pod.haproxy);
    }
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    for (const f of cfgs) rmSync(f, { force: true });
    expect(problems).toEqual([]);
  });

  for (const backend of ['nft', 'legacy'] as const) {
    it(`${backend}: the rules load (TPROXY and -m socket are built in) and are what was applied`, () => {
      const pod = pods[backend];
      const saved = sh('ip', ['netns', 'exec', pod.ns, `iptables-${backend}-save`, '-t', 'mangle']);
      expect(saved).toContain('-j TPROXY --on-port 15006 --on-ip 0.0.0.0 --tproxy-mark 0x539/0xffffffff');
      expect(saved).toContain('-m socket --transparent -j MESHREDIR_DIVERT');
      expect(sh('ip', ['netns', 'exec', pod.ns, `ip6tables-${backend}-save`, '-t', 'mangle'])).toContain(
        '-j TPROXY --on-port 15006 --on-ip :: --tproxy-mark 0x539/0xffffffff',
      );
    });

    it(`${backend}: pod:8080, a random high port and IPv6 reach HAProxy with the client's own address; excluded port direct`, async () => {
      const pod = pods[backend];
      const h = pod.haproxy!;
      for (const [host, port] of [
        [pod.v4, 8080],
        [pod.v4, HIGH],
        [pod.v6, 8080],
      ] as const) {
        const r = await env.client(podA, cgA, ['connect', host, String(port)]);
        expect(r.ok, JSON.stringify(r)).toBe(true);
        expect(r.data).toMatch(new RegExp(`^app-${port} ${host} \\d+$`)); // the app saw HAProxy (pod → pod over lo)
        const client = host.includes(':') ? 'fd00:200::11' : '10.200.0.11';
        await waitFor(
          () => logged(h).includes(`conn ${client} ${r.local!.port} ${host} ${port}`),
          `log ${host}:${port}`,
        );
      }
      const direct = await env.client(podA, cgA, ['connect', pod.v4, '9090']);
      expect(direct.data).toMatch(/^app-9090 10\.200\.0\.11 \d+$/);
      expect(logged(h)).toHaveLength(3); // one per client connection: HAProxy's own were not looped
    });
  }

  it('nft: without the proxy, TPROXY drops (the client times out; no refusal as with sk_lookup reject)', async () => {
    await env.stop(pods.nft.haproxy!, 'SIGKILL');
    await waitFor(
      () => sh('ip', ['netns', 'exec', pods.nft.ns, 'ss', '-Hltn', 'sport = :15006']).trim() === '',
      'gone',
    );
    const r = await env.client(podA, cgA, ['connect', pods.nft.v4, '8080']);
    expect(r).toMatchObject({ ok: false, error: 'timeout' });
  });
});
