// dns-rules.test.ts — DNS capture's iptables rules: golden files (policy in → iptables-restore text
// out, per family, in test/golden/iptables/dns/), and what the rules must and must not contain.
// UPDATE_GOLDEN=1 (re)writes them; review the diff like code. Without it a missing golden fails.
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, writeFileSync, existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { parsePolicyText } from '../../src/policy/load.js';
import {
  renderDnsRestore,
  dnsFamilies,
  dnsJumpLines,
  needsZones,
  unsupportedDns,
} from '../../src/modes/iptables/dns-rules.js';

const dir = join(import.meta.dirname, '..', 'golden', 'iptables', 'dns');
const policy = (name: string) => {
  const r = parsePolicyText(readFileSync(join(dir, `${name}.yaml`), 'utf8'), `${name}.yaml`);
  expect(r.errors).toEqual([]);
  return r.policies[0]!;
};

describe('iptables DNS rules (golden)', () => {
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml'))) {
    const name = file.replace(/\.yaml$/, '');
    for (const family of [4, 6] as const) {
      it(`${name} v${family}`, () => {
        const golden = join(dir, `${name}.v${family}.rules`);
        const text = renderDnsRestore(policy(name), { family });
        if (!dnsFamilies(policy(name)).includes(family)) {
          expect(text).toBe('');
          if (process.env.UPDATE_GOLDEN === '1') rmSync(golden, { force: true });
          expect(existsSync(golden), `${golden} is stale: the policy captures no IPv${family} DNS`).toBe(false);
          return;
        }
        if (process.env.UPDATE_GOLDEN === '1') writeFileSync(golden, text);
        if (!existsSync(golden))
          throw new Error(`${golden} is missing: run with UPDATE_GOLDEN=1 to write it, then review it like code`);
        expect(text).toBe(readFileSync(golden, 'utf8'));
      });
    }
  }

  it('families: a proxy for the family and something to capture in it', () => {
    expect(dnsFamilies(policy('sidecar'))).toEqual([4, 6]);
    expect(dnsFamilies(policy('capture-all'))).toEqual([4]); // no proxy6
    expect(dnsFamilies(policy('v4-only-ns'))).toEqual([4]); // proxy6, but no IPv6 nameserver
    expect(dnsFamilies(policy('local-stub'))).toEqual([4, 6]);
  });

  it('REDIRECT to 127.0.0.1/::1, DNAT elsewhere; conntrack zones only for a proxy in the pod netns', () => {
    const side = renderDnsRestore(policy('sidecar'), { family: 4 });
    expect(side).toMatch(/-d 10\.96\.0\.10\/32 -p udp --dport 53 .*-j REDIRECT --to-ports 15053/);
    expect(side).toMatch(/^\*raw$/m);
    const node = renderDnsRestore(policy('node-proxy'), { family: 6 });
    expect(node).toMatch(/-j DNAT --to-destination \[fd00:200::1\]:15053/);
    expect(node).not.toMatch(/^\*raw$/m);
    expect(needsZones(policy('node-proxy'), 4)).toBe(false);
    const stub = renderDnsRestore(policy('local-stub'), { family: 4 });
    expect(stub).toMatch(/-d 127\.0\.0\.53\/32 -p udp --dport 53 .*-j RETURN/); // the proxy itself
    expect(stub).toMatch(/-p udp --dport 53 .*-j DNAT --to-destination 127\.0\.0\.53:53/);
  });

  it('owner RETURN comes first; the proxy’s own packets get their zone before the apps’', () => {
    const lines = renderDnsRestore(policy('sidecar'), { family: 4 }).split('\n');
    const nat = lines.slice(lines.indexOf('*nat'));
    const firstRule = nat.find((l) => l.startsWith('-A MESHREDIR_DNS'));
    expect(firstRule).toMatch(/--uid-owner 1337 .*-j RETURN$/);
    const raw = lines
      .slice(0, lines.indexOf('COMMIT'))
      .filter((l) => l.startsWith('-A MESHREDIR_DNS ') && !l.includes('-p icmp'));
    const firstApp = raw.findIndex((l) => !/-m owner/.test(l));
    expect(raw.slice(0, firstApp).every((l) => /-m owner/.test(l))).toBe(true);
    expect(raw.slice(firstApp).some((l) => /-m owner/.test(l))).toBe(false);
    expect(lines.find((l) => l.startsWith('-A MESHREDIR_DNS '))).toMatch(
      /^-A MESHREDIR_DNS -s 127\.0\.0\.1\/32 -p icmp --icmp-type destination-unreachable .*-j CT --zone 2$/,
    ); // a down proxy's port-unreachable, related to the app's query (ECONNREFUSED, not a timeout)
    expect(raw.at(-1)).toMatch(/-p udp --dport 53 .*-j CT --zone 1$/); // every other port-53 query
    const all = renderDnsRestore(policy('capture-all'), { family: 4 }).split('\n');
    expect(all.filter((l) => /^-A MESHREDIR_DNS .*--dport 53 -m comment .*-j CT/.test(l))).toEqual([
      expect.stringMatching(/--zone 2$/), // with all, no port-53 query is left uncaptured
    ]);
  });

  it('tcp: false captures UDP only; the nat jump is inserted ahead of MESHREDIR_OUTPUT', () => {
    expect(renderDnsRestore(policy('udp-only'), { family: 4 })).not.toMatch(/-p tcp/);
    expect(dnsJumpLines(policy('sidecar'), { family: 4 })).toEqual({
      nat: ['-I OUTPUT 1 -m comment --comment meshredir -j MESHREDIR_DNS'],
      raw: [
        '-A OUTPUT -m comment --comment meshredir -j MESHREDIR_DNS',
        '-A PREROUTING -m comment --comment meshredir -j MESHREDIR_DNS_IN',
      ],
    });
  });

  it('a DNS proxy in the pod needs a bypass (cgroup, mark, uid or gid) in this mode; one on a node address does not', () => {
    const text = (proxy: string, bypass: string) =>
      `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: /a\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: ${bypass}\n  dns:\n    proxy: ${proxy}\n    all: true\n`;
    const p = (proxy: string, bypass: string) => parsePolicyText(text(proxy, bypass), 'x.yaml').policies[0]!;
    expect(unsupportedDns(p('127.0.0.1:15053', '{}'))).toEqual([
      expect.stringMatching(/^spec\.dns: the rules cover the whole pod network namespace, DNS proxy included/),
    ]);
    expect(unsupportedDns(p('10.0.0.1:15053', '{}'))).toEqual([]);
    expect(unsupportedDns(p('127.0.0.1:15053', '{ uids: [1337] }'))).toEqual([]);
    expect(unsupportedDns(p('127.0.0.1:15053', '{ cgroups: [/p] }'))).toEqual([]);
    expect(unsupportedDns(p('127.0.0.1:15053', '{ marks: ["0x539"] }'))).toEqual([]);
  });
});
