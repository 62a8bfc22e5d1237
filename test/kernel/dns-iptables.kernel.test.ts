// dns-iptables.kernel.test.ts — DNS capture in iptables mode, on the real kernel and both backends
// (nft, legacy): every golden of test/golden/iptables/dns is accepted by `*-restore --test` and loaded
// rule for rule by a real restore; the rules as rendered, applied in a pod netns, send the same real
// clients' queries (glibc, dig UDP/TCP, c-ares, sendto, IPv4/IPv6/v4-mapped) to a sidecar DNS proxy
// (uid 1337, loopback) or a node proxy (DNAT), with replies from the nameserver asked; the proxy's own
// queries are not captured; the conntrack zones keep the proxy's upstream query that reuses the 5-tuple
// of an app's earlier query from being NATed back to the proxy (shown failing without them); a stopped
// proxy gives refusals or timeouts.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Env, kernelDescribe, policyDoc, sh, ROOT, type Proc } from './harness.js';
import { DnsLab, type Reply, ANSWER, NS4, NS6, NODE_PROXY4, NODE_PROXY6, PROXY_PORT } from './dnsfix.js';
import { parsePolicyText } from '../../src/policy/load.js';
import { renderDnsRestore } from '../../src/modes/iptables/dns-rules.js';
import type { Policy } from '../../src/policy/schema.js';

const dir = join(ROOT, 'test', 'golden', 'iptables', 'dns');
const goldens = readdirSync(dir).filter((f) => f.endsWith('.rules'));
const BACKENDS = ['nft', 'legacy'] as const;
const tool = (family: 4 | 6, backend: string) => `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}`;

/** Per table and chain, each rule's comment and target (iptables-save spells matches its own way). */
function byChain(text: string): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  let table = '';
  for (const l of text.split('\n')) {
    if (l.startsWith('*')) table = l.slice(1);
    const m = /^-(?:A|I) (\S+)(?: 1)? /.exec(l);
    if (!m) continue;
    (out[`${table}/${m[1]}`] ??= []).push(
      `${/--comment (\S+)/.exec(l)?.[1]?.replace(/"/g, '')} ${l.slice(l.lastIndexOf('-j '))}`,
    );
  }
  return out;
}

kernelDescribe('DNS capture, iptables mode', () => {
  let env: Env;
  let lab: DnsLab;
  let scratch: string;
  let nameserver: Proc;

  beforeAll(async () => {
    env = new Env();
    scratch = env.netns('golden');
    lab = new DnsLab(env);
    nameserver = await lab.nameserver();
  });
  afterAll(async () => {
    lab?.cleanup();
    const problems = await env?.teardown();
    expect(problems).toEqual([]);
  });

  describe('golden files against the real iptables-restore', () => {
    it('there are golden files for both families', () => {
      expect(goldens.filter((f) => f.endsWith('.v4.rules')).length).toBeGreaterThanOrEqual(5);
      expect(goldens.filter((f) => f.endsWith('.v6.rules')).length).toBeGreaterThanOrEqual(3);
    });
    for (const backend of BACKENDS) {
      for (const file of goldens) {
        const family = file.endsWith('.v6.rules') ? 6 : 4;
        it(`${file}: ${tool(family, backend)}-restore --test accepts it, and a real restore loads every rule`, () => {
          const t = tool(family, backend);
          const text = readFileSync(join(dir, file), 'utf8');
          const x = (args: string[], input = '') => sh('ip', ['netns', 'exec', scratch, ...args], { input });
          x([`${t}-restore`, '--test', '--noflush'], text);
          x([`${t}-restore`], '*nat\nCOMMIT\n*raw\nCOMMIT\n');
          x([`${t}-restore`, '--noflush'], text);
          const saved = x([`${t}-save`, '-t', 'raw']) + x([`${t}-save`, '-t', 'nat']);
          expect(byChain(saved)).toEqual(byChain(text));
          x([`${t}-restore`], '*nat\nCOMMIT\n*raw\nCOMMIT\n');
        });
      }
    }
  });

  const policy = (dns: Record<string, unknown>): Policy => {
    const r = parsePolicyText(
      policyDoc('pod-a', {
        cgroup: '/pod-a',
        proxy: { outbound: '127.0.0.1:15001', bypass: { uids: [1337] } },
        outbound: { includePorts: [9] },
        dns,
      }),
      'pod-a.yaml',
    );
    expect(r.errors).toEqual([]);
    return r.policies[0]!;
  };
  const sidecarDns = { proxy: `127.0.0.1:${PROXY_PORT}`, proxy6: `[::1]:${PROXY_PORT}`, nameservers: [NS4, NS6] };
  const nodeDns = {
    proxy: `${NODE_PROXY4}:${PROXY_PORT}`,
    proxy6: `[${NODE_PROXY6}]:${PROXY_PORT}`,
    nameservers: [NS4, NS6],
  };

  for (const backend of BACKENDS) {
    describe(`data path, ${backend}`, () => {
      const a = () => lab.pods.a;
      const b = () => lab.pods.b;
      const apply = (p: Policy, opts: { zones?: boolean } = {}) => {
        for (const family of [4, 6] as const) {
          let text = renderDnsRestore(p, { family });
          if (opts.zones === false) text = text.replace(/^\*raw$[^]*?^COMMIT$\n/m, '');
          if (text)
            sh('ip', ['netns', 'exec', a().ns, `${tool(family, backend)}-restore`, '--noflush'], { input: text });
        }
      };
      const flush = () => {
        for (const family of [4, 6] as const)
          sh('ip', ['netns', 'exec', a().ns, `${tool(family, backend)}-restore`], {
            input: '*nat\nCOMMIT\n*raw\nCOMMIT\n',
          });
        sh('ip', ['netns', 'exec', a().ns, 'sh', '-c', 'echo f > /proc/net/nf_conntrack 2>/dev/null; true']);
      };

      it('sidecar proxy (uid 1337, loopback, REDIRECT + zones): every client gets its answer from the nameserver asked', async () => {
        const sidecar = await lab.dnsmasq(a().ns, null, ['127.0.0.1', '::1'], PROXY_PORT, ANSWER.sidecar, {
          forwardTo: NS4,
          uid: 1337,
        });
        apply(policy(sidecarDns));
        try {
          lab.resolvConf(a(), [NS4]);
          lab.resolvConf(b(), [NS4]);
          expect(await lab.getent(a(), null, 'ahostsv4', 'test.zone')).toEqual([ANSWER.sidecar.a]);
          expect(await lab.getent(b(), null, 'ahostsv4', 'test.zone')).toEqual([ANSWER.nameserver.a]);
          for (const ns of [NS4, NS6]) {
            expect(await lab.dig(a(), null, ns, 'test.zone')).toBe(ANSWER.sidecar.a);
            expect(await lab.dig(a(), null, ns, 'test.zone', ['+tcp'])).toBe(ANSWER.sidecar.a);
            expect(await lab.cares(a(), null, ns, 'test.zone')).toBe(ANSWER.sidecar.a);
          }
          for (const [ns, extra] of [
            [NS4, []],
            [NS6, []],
            [NS4, ['--v6sock']],
          ] as const) {
            const shown = extra.length ? `::ffff:${ns}` : ns;
            const s = await lab.dnsq<Reply>(a(), null, [...extra, 'sendto', 'test.zone', ns]);
            expect(s.replies).toEqual([{ id: 100, answer: ANSWER.sidecar.a, from: { address: shown, port: 53 } }]);
            const c = await lab.dnsq<Reply>(a(), null, [...extra, 'connect', 'test.zone', ns]);
            expect(c).toMatchObject({ peer: { address: shown, port: 53 }, answer: ANSWER.sidecar.a });
            expect(c.from).toEqual({ address: shown, port: 53 });
            const t = await lab.dnsq<Reply>(a(), null, [...extra, 'tcp', 'test.zone', ns]);
            expect(t).toMatchObject({ peer: { address: shown, port: 53 }, answer: ANSWER.sidecar.a });
          }
          // The proxy's own queries (uid 1337) reach the nameserver: fwd.test is forwarded there.
          expect(await lab.dig(a(), null, NS4, 'fwd.test')).toBe(ANSWER.fwd.a);
          // The zones: the proxy's upstream query from the port an app's captured query used a moment
          // ago reaches the nameserver (without them: the app's conntrack entry NATs it to the proxy).
          const app = await lab.dnsq<Reply>(a(), null, ['--sport', '40053', 'sendto', 'test.zone', NS4]);
          expect(app.replies![0]!.answer).toBe(ANSWER.sidecar.a);
          const up = await lab.dnsq<Reply>(a(), null, ['--sport', '40053', 'sendto', 'test.zone', NS4], 60_000, 1337);
          expect(up.replies![0]!.answer).toBe(ANSWER.nameserver.a);

          flush();
          apply(policy(sidecarDns), { zones: false });
          await lab.dnsq<Reply>(a(), null, ['--sport', '40054', 'sendto', 'test.zone', NS4]);
          const looped = await lab.dnsq<Reply>(
            a(),
            null,
            ['--sport', '40054', 'sendto', 'test.zone', NS4],
            60_000,
            1337,
          );
          expect(looped.replies![0]!.answer).toBe(ANSWER.sidecar.a); // the bug the zones prevent

          flush();
          apply(policy(sidecarDns));
          await env.stop(sidecar);
          const cr = await lab.dnsq<Reply>(a(), null, ['--timeout', '2', 'connect', 'test.zone', NS4]);
          expect(cr.error).toMatch(/^ConnectionRefusedError/);
          const tr = await lab.dnsq<Reply>(a(), null, ['--timeout', '2', 'tcp', 'test.zone', NS4]);
          expect(tr.error).toMatch(/^ConnectionRefusedError/);
          const sr = await lab.dnsq<Reply>(a(), null, ['--timeout', '2', 'sendto', 'test.zone', NS4]);
          expect(sr.error).toMatch(/^TimeoutError/);
        } finally {
          await env.stop(sidecar);
          flush();
        }
        expect(nameserver.err).toMatch(/query\[A\] fwd\.test from 10\.77\.0\.2/);
      });

      it('node proxy (DNAT to another netns): answers from the proxy, replies from the nameserver asked', async () => {
        const px = await lab.nodeProxy();
        apply(policy(nodeDns));
        try {
          lab.resolvConf(a(), [NS6]);
          expect(await lab.getent(a(), null, 'ahostsv6', 'test.zone')).toEqual([ANSWER.proxy.aaaa]);
          expect(await lab.dig(a(), null, NS4, 'test.zone', ['+tcp'])).toBe(ANSWER.proxy.a);
          expect(await lab.cares(a(), null, NS6, 'test.zone')).toBe(ANSWER.proxy.a);
          const s = await lab.dnsq<Reply>(a(), null, ['sendto', 'test.zone', NS4]);
          expect(s.replies).toEqual([{ id: 100, answer: ANSWER.proxy.a, from: { address: NS4, port: 53 } }]);
          await env.stop(px);
          const cr = await lab.dnsq<Reply>(a(), null, ['--timeout', '2', 'connect', 'test.zone', NS6]);
          expect(cr.error).toMatch(/^ConnectionRefusedError/);
          expect(await lab.dig(b(), null, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
        } finally {
          await env.stop(px);
          flush();
        }
      });
    });
  }
});
