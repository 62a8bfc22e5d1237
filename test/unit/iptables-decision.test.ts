// iptables-decision.test.ts — property: for random policies and connections, what the generated
// nat rules do (evaluated rule by rule) is what the decision order of docs/policy.md (the eBPF mode's
// semantics) says. And the check can fail: two earlier bugs, re-created, are caught.
import { describe, expect, it } from 'vitest';
import { renderRestore, families } from '../../src/modes/iptables/rules.js';
import { parseNat, evaluate, type Conn } from '../../src/modes/iptables/evaluate.js';
import type { Policy } from '../../src/policy/schema.js';
import { decide, genConns, genPolicy, rng, addrText } from './decision-model.js';

type Render = (p: Policy, family: 4 | 6) => string;

const parsed = new WeakMap<Policy, Map<string, ReturnType<typeof parseNat>>>();
const iptablesVerdict = (render: Render, p: Policy, c: Conn): 'redirect' | 'pass' => {
  if (!families(p).includes(c.family)) return 'pass'; // no rules of that family at all
  const cache = parsed.get(p) ?? new Map<string, ReturnType<typeof parseNat>>();
  parsed.set(p, cache);
  const text = render(p, c.family);
  if (!cache.has(text)) cache.set(text, parseNat(text, c.family));
  const v = evaluate(cache.get(text)!, c);
  if (v.verdict === 'redirect') {
    const proxy = c.family === 4 ? p.proxy.outbound! : p.proxy.outbound6!;
    expect(v.port).toBe(proxy.port);
  }
  if (v.verdict === 'dnat') throw new Error(`DNAT in the outbound rules: ${v.to}`);
  return v.verdict;
};

/** Counterexamples over `policies` random policies × `per` connections, from `seed`. */
function mismatches(render: Render, seed: number, policies: number, per: number): string[] {
  const r = rng(seed);
  const bad: string[] = [];
  for (let i = 0; i < policies; i++) {
    const { policy, anchors } = genPolicy(r);
    for (const c of genConns(r, policy, anchors, per)) {
      const want = decide(policy, c);
      const got = iptablesVerdict(render, policy, c);
      if ((want === 'redirect') !== (got === 'redirect')) {
        bad.push(
          `seed ${seed} policy #${i} ${JSON.stringify({ outbound: policy.outbound, proxy: [policy.proxy.outbound?.text, policy.proxy.outbound6?.text], bypass: policy.bypass }, (k, v: unknown) => (k === 'bytes' ? undefined : v))}: connect(${addrText(c.dst)}:${c.dport}) uid ${c.uid} gid ${c.gid} cgroup ${c.cgroup} mark ${c.mark}${c.outLo ? ' via lo' : ''}: model ${want}, rules ${got}`,
        );
      }
    }
  }
  return bad;
}

const real: Render = (p, family) => renderRestore(p, { family });

describe('iptables rules vs the decision model (property)', () => {
  const seed = Number(process.env.SEED ?? 20240601);

  it('agree on 400 random policies × 60 connections each', { timeout: 60_000 }, () => {
    const bad = mismatches(real, seed, 400, 60);
    expect(bad.slice(0, 5), `${bad.length} mismatches`).toEqual([]);
  });

  it('catch the old CIDR order (every exclude before every include)', { timeout: 60_000 }, () => {
    const excludesFirst: Render = (p, family) => {
      const lines = real(p, family).split('\n');
      const isCidr = (l: string) =>
        /^-A MESHREDIR_(OUTPUT|DEST) -d (?!127\.0\.0\.0\/8 |::1\/128 |127\.0\.0\.1\/32 )\S+ -m comment/.test(l);
      const ex = lines.filter((l) => isCidr(l) && l.endsWith('-j RETURN'));
      const first = lines.findIndex((l) => isCidr(l));
      if (first < 0) return lines.join('\n');
      const rest = lines.filter((l) => !ex.includes(l));
      rest.splice(rest.findIndex((l) => isCidr(l)) === -1 ? first : rest.findIndex((l) => isCidr(l)), 0, ...ex);
      return rest.join('\n');
    };
    expect(mismatches(excludesFirst, seed, 400, 60).length).toBeGreaterThan(0);
  });

  it('catch the old loopback rule (everything an app sends over lo returned)', { timeout: 60_000 }, () => {
    const oldLo: Render = (p, family) =>
      real(p, family)
        .split('\n')
        .flatMap((l) =>
          /^-A MESHREDIR_OUTPUT .*--uid-owner (\d+) .*-j RETURN$/.test(l)
            ? [
                l
                  .replace(/^-A MESHREDIR_OUTPUT /, '-A MESHREDIR_OUTPUT -o lo ')
                  .replace('--uid-owner', '! --uid-owner'),
                l,
              ]
            : [l],
        )
        .join('\n');
    expect(mismatches(oldLo, seed, 400, 60).length).toBeGreaterThan(0);
  });

  it(
    'catch a cgroup bypass dropped, a mask ignored, and a bypass placed after the CIDR decision',
    { timeout: 60_000 },
    () => {
      const without =
        (re: RegExp): Render =>
        (p, family) =>
          real(p, family)
            .split('\n')
            .filter((l) => !re.test(l))
            .join('\n');
      expect(mismatches(without(/-m cgroup --path .*-j RETURN$/), seed, 400, 60).length).toBeGreaterThan(0);
      const noMask: Render = (p, family) => real(p, family).replace(/--mark (0x[0-9a-f]+)\/0x[0-9a-f]+/g, '--mark $1');
      expect(mismatches(noMask, seed, 400, 60).length).toBeGreaterThan(0);
      // The mark RETURN after everything else: an include CIDR would redirect a marked proxy connection first.
      const markLast: Render = (p, family) => {
        const lines = real(p, family).split('\n');
        const marks = lines.filter((l) => /^-A MESHREDIR_OUTPUT -m mark .*-j RETURN$/.test(l));
        const rest = lines.filter((l) => !marks.includes(l));
        const at = rest.findIndex(
          (l) =>
            /^-A MESHREDIR_(OUTPUT|DEST) -d .*-j MESHREDIR_REDIRECT$/.test(l) ||
            /^-A MESHREDIR_OUTPUT -m comment .*-j MESHREDIR_REDIRECT$/.test(l),
        );
        rest.splice(at < 0 ? rest.length - 1 : at + 1, 0, ...marks);
        return rest.join('\n');
      };
      expect(mismatches(markLast, seed, 400, 60).length).toBeGreaterThan(0);
    },
  );

  it('a loopback proxy address other than 127.0.0.1/::1 and a too-long comment cannot happen', async () => {
    const { parsePolicyText } = await import('../../src/policy/load.js');
    const { unsupported } = await import('../../src/modes/iptables/rules.js');
    const p = parsePolicyText(
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: /a\n  proxy:\n    outbound: 127.0.0.2:15001\n    outbound6: "[::1]:15001"\n    bypass: { uids: [1337] }\n',
      'x.yaml',
    ).policies[0]!;
    expect(unsupported(p)).toEqual([
      expect.stringMatching(
        /^spec\.proxy\.outbound: 127\.0\.0\.2:15001 — iptables REDIRECT in the nat OUTPUT chain always rewrites to 127\.0\.0\.1 \(port 15001\)/,
      ),
    ]);
    const long = parsePolicyText(
      `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ${'a'.repeat(253)} }\nspec:\n  cgroup: /a\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n`,
      'x.yaml',
    ).policies[0]!;
    for (const m of renderRestore(long, { family: 4 }).matchAll(/--comment "([^"]*)"/g))
      expect(m[1]!.length).toBeLessThanOrEqual(255);
  });
});
