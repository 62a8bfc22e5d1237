// iptables-rules.test.ts — golden files: policy in → iptables-restore text out, per family.
// UPDATE_GOLDEN=1 (re)writes them; review the diff like code. Without it a missing golden fails.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parsePolicyText } from '../../src/policy/load.js';
import { renderRestore, jumpLines, unsupported, ignoredFields, families } from '../../src/modes/iptables/rules.js';
import { renderPolicy } from '../../src/modes/iptables/tables.js';

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
        const golden0 = join(dir, `${name}.v${family}.rules`);
        if (!families(policy(name)).includes(family)) {
          // Nothing is applied for a family the policy does not use: no golden either.
          if (process.env.UPDATE_GOLDEN === '1') rmSync(golden0, { force: true });
          expect(existsSync(golden0), `${golden0} is stale: the policy needs no IPv${family} rules`).toBe(false);
          return;
        }
        const text = renderPolicy(policy(name), family);
        const golden = join(dir, `${name}.v${family}.rules`);
        if (process.env.UPDATE_GOLDEN === '1') writeFileSync(golden, text);
        if (!existsSync(golden))
          throw new Error(`${golden} is missing: run with UPDATE_GOLDEN=1 to write it, then review it like code`);
        expect(text).toBe(readFileSync(golden, 'utf8'));
        expect(renderPolicy(policy(name), family)).toBe(text); // deterministic
        // The nat part is what renderRestore alone gives (when the policy has anything there).
        if (text.startsWith('*nat')) expect(text.startsWith(renderRestore(policy(name), { family }))).toBe(true);
      });
    }
  }

  it('jumps from the built-in chains are part of the input, only for what the policy uses', () => {
    expect(jumpLines(policy('istio'), { family: 4 })).toEqual([
      '-A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT',
      '-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND',
    ]);
    expect(jumpLines(policy('v6-only'), { family: 4 })).toEqual([]);
    expect(jumpLines(policy('inbound-v6-outbound'), { family: 4 })).toEqual([
      '-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND',
    ]);
    expect(families(policy('minimal'))).toEqual([4]);
    expect(families(policy('v6-only'))).toEqual([6]);
    expect(families(policy('inbound-v6-outbound'))).toEqual([4, 6]);
  });

  it('TPROXY: mangle only for an inbound-only policy, nat kept for the proxy own calls beside outbound', () => {
    const only = renderPolicy(policy('inbound-tproxy'), 4);
    expect(only).not.toMatch(/\*nat/);
    expect(only).toMatch(
      /^-A MESHREDIR_TPROXY ! -d 127\.0\.0\.1\/32 -p tcp .*-j TPROXY --on-port 15006 --tproxy-mark 0x539\/0xffffffff$/m,
    );
    expect(renderPolicy(policy('inbound-tproxy'), 6)).toMatch(/-s fd00:200::1\/128 -p tcp .*-j RETURN/);
    const both = renderPolicy(policy('inbound-tproxy-outbound'), 4);
    expect(both).toMatch(/^-A MESHREDIR_IN_REDIRECT -p tcp .*-j REDIRECT --to-ports 15006$/m);
    expect(both.split('*mangle')[0]).not.toMatch(/-A PREROUTING/); // no nat PREROUTING jump
    expect(both).toMatch(/--set-xmark 0x1000\/0xffffffff/);
    expect(unsupported(policy('inbound-tproxy'))).toEqual([]); // no outbound: no owner needed
  });

  it('an exact inbound listener address is for the eBPF mode; whenNoProxy pass is reported ignored', () => {
    const p = parsePolicyText(
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: /a\n  proxy:\n    inbound: 127.0.0.1:15006\n  inbound: { whenNoProxy: pass }\n',
      'x.yaml',
    ).policies[0]!;
    expect(unsupported(p)).toEqual([
      expect.stringMatching(
        /^spec\.proxy\.inbound: 127\.0\.0\.1:15006 — in iptables mode the inbound proxy is named by its port alone/,
      ),
    ]);
    expect(ignoredFields(p)).toEqual([expect.stringMatching(/^spec\.inbound\.whenNoProxy: pass needs the eBPF mode/)]);
  });

  it('redirectLoopback: no rule returns loopback destinations or everything an app sends over lo', () => {
    const v4 = renderRestore(policy('redirect-loopback'), { family: 4 });
    expect(v4).not.toMatch(/-d 127\.0\.0\.0\/8 .*-j RETURN/);
    expect(v4).not.toMatch(/-o lo/);
    const off = renderRestore(policy('minimal'), { family: 4 });
    expect(off).toMatch(/-A MESHREDIR_OUTPUT -d 127\.0\.0\.0\/8 .*-j RETURN/);
    expect(off).not.toMatch(/-o lo/);
  });

  it('says what the mode cannot do, and ignores nothing: cgroup and mark bypass are rules too', () => {
    for (const name of ['istio', 'cgroup-only', 'marks']) {
      expect(unsupported(policy(name))).toEqual([]);
      expect(ignoredFields(policy(name))).toEqual([]);
    }
    const parse = (bypass: string, extra = '') =>
      parsePolicyText(
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: /a\n${extra}  proxy:\n    outbound: 10.200.0.1:15001\n    bypass: ${bypass}\n`,
        'x.yaml',
      ).policies[0]!;
    const why = unsupported(parse('{ cgroups: [/p] }', '  accelerate: true\n'));
    expect(why).toHaveLength(2);
    expect(why[0]).toMatch(
      /^spec\.proxy\.outbound: 10\.200\.0\.1:15001 — iptables REDIRECT can only send to a proxy listening in the pod's own network namespace/,
    );
    expect(why[1]).toMatch(/^spec\.accelerate/);
    expect(unsupported(parse('{}'))[0]).toMatch(
      /^spec\.proxy\.bypass: the rules cover the whole pod network namespace, proxy included; without bypass cgroups, marks, uids or gids/,
    );
    expect(unsupported(parse('{ cgroups: ["/pods/a b"] }'))[0]).toMatch(
      /^spec\.proxy\.bypass\.cgroups: "\/pods\/a b" — iptables mode writes a bypass cgroup into a rule/,
    );
    // Kubernetes' systemd cgroup paths are fine.
    const systemd =
      '/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a2b_3c.slice/cri-containerd-0f.scope';
    expect(unsupported(parse(`{ cgroups: [${systemd}] }`)).filter((w) => w.includes('bypass'))).toEqual([]);
  });

  it('renders only the bypass cgroups it is given (those that exist), and every mark', () => {
    const p = policy('marks');
    const none = renderRestore(p, { family: 4, bypassCgroups: [] });
    expect(none).not.toMatch(/-m cgroup/);
    expect(none.match(/-m mark --mark 0x539\/0xfff/g)).toHaveLength(2); // owner→inbound and RETURN
    expect(renderRestore(p, { family: 4 })).toMatch(
      /-m cgroup --path "\/meshredir-test-golden\/pod\/proxy" .*-j RETURN/,
    );
  });
});
