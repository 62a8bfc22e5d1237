// iptables-decision.kernel.test.ts — the property of test/unit/iptables-decision.test.ts against the
// kernel instead of the evaluator: random policies become real nat rules in a throwaway netns, every
// destination is a local address there (so nothing can leave the machine), and real connects show
// whether each was redirected (the proxy answers with SO_ORIGINAL_DST) or not (a plain server
// answers, or the port is closed) — compared with the decision order of docs/policy.md. Each connection is
// made from its own cgroup (bypass cgroups, below and beside them), uid/gid and socket mark. Root; netns mr-*,
// cgroups meshredir-test-*.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { join } from 'node:path';
import { Env, kernelDescribe, sh, ORIGDST_PROXY, TOOLS, type Proc } from './harness.js';
import { renderRestore, families } from '../../src/modes/iptables/rules.js';
import type { Conn } from '../../src/modes/iptables/evaluate.js';
import { decide, genConns, genPolicy, rng, addrText, DEFAULT_GEN, type GenOptions } from '../unit/decision-model.js';

const PORTS = [80, 443, 5432, 8080];
/** The generator's cgroups, as this env's (the rules name them, the kernel resolves them). */
const gen = (env: Env): GenOptions => {
  const cg = (rel: string) => env.cgroup(rel);
  return {
    ...DEFAULT_GEN,
    proxyPorts: [15001],
    ports: [...PORTS, 15001],
    cgroups: [cg('dec/proxy'), cg('dec/sidecar')],
    connCgroups: [cg('dec/app'), cg('dec'), cg('dec/proxy'), cg('dec/proxy/worker'), cg('dec/proxy2')],
  };
};

/** An address the test can put on its lo (the generator also makes ::/8-style ones). */
const usable = (c: Conn) =>
  c.family === 4 ? c.dst[0] === 10 || c.dst[0] === 127 : c.dst[0] === 0xfd || addrText(c.dst) === '::1';

kernelDescribe('iptables rules vs the decision model, on the real kernel (property)', () => {
  let env: Env;
  let ns: string;
  let proxy: Proc;
  let GEN: GenOptions;

  beforeAll(async () => {
    env = new Env();
    GEN = gen(env);
    ns = env.netns('dec');
    proxy = env.spawn(ns, null, ORIGDST_PROXY, [
      '--listen',
      '127.0.0.1:15001',
      '--listen6',
      '[::1]:15001',
      '--mode',
      'report',
    ]);
    await env.waitListening(ns, 15001, 'origdst-proxy', proxy);
    for (const port of PORTS) {
      await env.server(ns, '0.0.0.0', port, 'direct');
      await env.server(ns, '::', port, 'direct');
    }
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    expect(problems).toEqual([]);
  });

  it('agree for 50 random policies × 40 connections (seeded)', async () => {
    const seed = Number(process.env.SEED ?? 7);
    const r = rng(seed);
    const bad: string[] = [];
    let checked = 0;
    let redirected = 0;
    const byBypass: Record<string, number> = {};
    for (let i = 0; i < 50; i++) {
      const { policy, anchors } = genPolicy(r, GEN);
      const conns = genConns(r, policy, anchors, 40, GEN).filter(usable);
      const addrs = [
        ...new Set(
          conns
            .filter((c) => !(c.family === 4 ? c.dst[0] === 127 : true) || (c.family === 6 && addrText(c.dst) !== '::1'))
            .map((c) => `${addrText(c.dst)}/${c.family === 4 ? 32 : 128}`),
        ),
      ];
      // Local addresses on lo (scope global, so the flush spares 127.0.0.1 and ::1).
      env.ip(ns, 'addr', 'flush', 'dev', 'lo', 'scope', 'global');
      if (addrs.length)
        sh('ip', ['-n', ns, '-batch', '-'], {
          input: addrs.map((a) => `addr add ${a} dev lo${a.includes(':') ? ' nodad' : ''}`).join('\n') + '\n',
        });
      for (const f of [4, 6] as const) {
        const tool = f === 4 ? 'iptables-nft-restore' : 'ip6tables-nft-restore';
        // The whole nat table of this throwaway netns is the policy's rules (or nothing).
        sh('ip', ['netns', 'exec', ns, tool], {
          input: families(policy).includes(f) ? renderRestore(policy, { family: f }) : '*nat\nCOMMIT\n',
        });
      }
      // One client for all: each socket made in the connection's cgroup, as its uid/gid (the owner match
      // looks at the socket's file credentials), with its mark.
      const out = sh('nsenter', [
        `--net=/run/netns/${ns}`,
        'python3',
        join(TOOLS, 'each.py'),
        JSON.stringify(conns.map((c) => [addrText(c.dst), c.dport, c.uid, c.gid, env.cgDir(c.cgroup!), c.mark])),
      ]);
      const res = JSON.parse(out) as { data?: string; error?: string }[];
      conns.forEach((c, k) => {
        const x = res[k]!;
        const dest = `${addrText(c.dst)} ${c.dport}`;
        const who = `as ${c.uid}:${c.gid} in ${c.cgroup} mark 0x${(c.mark ?? 0).toString(16)}`;
        const toProxy = dest === '127.0.0.1 15001' || dest === '::1 15001';
        let got: 'redirect' | 'pass';
        if (x.data?.startsWith('ORIGDST ')) {
          const orig = x.data.split(' ').slice(1, 3).join(' ');
          if (orig !== dest) {
            bad.push(`policy #${i}: connect(${dest}) ${who}: the proxy read ${orig}`);
            return;
          }
          // Dialling the proxy itself lands there either way; the model says pass.
          got = toProxy ? 'pass' : 'redirect';
        } else if (x.data?.startsWith('direct ') || x.error === 'ECONNREFUSED') got = 'pass';
        // Dialled directly with no nat rules of that family loaded, conntrack has nothing to answer.
        else if (toProxy && x.data === 'ERR ENOENT') got = 'pass';
        else {
          bad.push(`policy #${i}: connect(${dest}) ${who}: unexpected ${JSON.stringify(x)}`);
          return;
        }
        const want = decide(policy, c);
        checked++;
        byBypass[want] = (byBypass[want] ?? 0) + 1;
        if (got === 'redirect') redirected++;
        if ((want === 'redirect') !== (got === 'redirect')) {
          bad.push(
            `seed ${seed} policy #${i} ${JSON.stringify(policy.outbound, (k2, v: unknown) => (k2 === 'bytes' ? undefined : v))} bypass ${JSON.stringify(policy.bypass)}: connect(${dest}) ${who}: model ${want}, kernel ${got}`,
          );
        }
      });
    }
    expect(bad.slice(0, 5), `${bad.length} mismatches`).toEqual([]);
    // The corpus exercised both outcomes in earnest.
    expect(checked).toBeGreaterThan(1200);
    expect(redirected).toBeGreaterThan(100);
    expect(checked - redirected).toBeGreaterThan(100);
    // And every kind of bypass decided some of them (a cgroup bypass or a mark bypass among them).
    for (const kind of ['pass:cgroup', 'pass:mark', 'pass:owner'])
      expect(byBypass[kind] ?? 0, JSON.stringify(byBypass)).toBeGreaterThan(20);
  });
});
