// iptables-rules.test.ts — golden files: policy in → iptables-restore text out, per family.
// UPDATE_GOLDEN=1 rewrites them; review the diff like code.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { parsePolicyText } from '../../src/policy/load.js';
import { renderRestore, jumpRules, unsupported, ignoredFields } from '../../src/modes/iptables/rules.js';

const dir = join(import.meta.dirname, '..', 'golden', 'iptables');
const policy = (name: string) => {
  const r = parsePolicyText(readFileSync(join(dir, `${name}.yaml`), 'utf8'), `${name}.yaml`);
  expect(r.errors).toEqual([]);
  return r.policies[0]!;
};

describe('iptables rules (golden)', () => {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
    const name = file.replace(/\.yaml$/, '');
    for (const family of [4, 6] as const) {
      it(`${name} v${family}`, () => {
        const text = renderRestore(policy(name), { family });
        const golden = join(dir, `${name}.v${family}.rules`);
        if (process.env.UPDATE_GOLDEN === '1' || !existsSync(golden)) writeFileSync(golden, text);
        expect(text).toBe(readFileSync(golden, 'utf8'));
        expect(renderRestore(policy(name), { family })).toBe(text); // deterministic
      });
    }
  }

  it('jumps from the built-in chains are separate, for check-then-add', () => {
    expect(jumpRules(policy('istio'), { family: 4 })).toEqual([
      ['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', '-m', 'comment', '--comment', 'meshredir', '-j', 'MESHREDIR_OUTPUT'],
      ['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', '-m', 'comment', '--comment', 'meshredir', '-j', 'MESHREDIR_INBOUND'],
    ]);
    expect(jumpRules(policy('v6-only'), { family: 4 })).toEqual([]);
  });

  it('says what the mode cannot do, and what it ignores', () => {
    expect(unsupported(policy('istio'))).toEqual([]);
    expect(ignoredFields(policy('istio'))).toEqual([expect.stringMatching(/^spec\.proxy\.bypass\.cgroups: iptables mode bypasses by uid\/gid only/)]);
    const noOwner = parsePolicyText(
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: /a\n  accelerate: true\n  proxy:\n    outbound: 10.200.0.1:15001\n    bypass: { cgroups: [/p] }\n',
      'x.yaml',
    ).policies[0]!;
    const why = unsupported(noOwner);
    expect(why).toHaveLength(3);
    expect(why[0]).toMatch(/^spec\.proxy\.bypass: iptables mode recognises the proxy only by uid\/gid/);
    expect(why[1]).toMatch(/^spec\.proxy\.outbound: 10\.200\.0\.1:15001 — iptables REDIRECT can only send to a proxy listening in the pod's own network namespace/);
    expect(why[2]).toMatch(/^spec\.accelerate/);
  });
});
