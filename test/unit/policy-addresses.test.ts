// policy-addresses.test.ts — address rules of the policy format that protect against a wrong
// destination: v4-mapped CIDRs (never matched: mapped destinations are decided as IPv4) and loopback
// redirection towards a proxy in another network namespace.
import { describe, expect, it } from 'vitest';
import { parsePolicyText, formatError } from '../../src/policy/load.js';

const doc = (proxy: string, outbound: string) => `
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: p }
spec:
  cgroup: /pods/a
  proxy: { ${proxy} }
  outbound: { ${outbound} }
`;
const errs = (text: string) => parsePolicyText(text, 'a.yaml').errors.map(formatError);

describe('policy addresses', () => {
  it('rejects IPv4-mapped IPv6 CIDRs, saying how to write them', () => {
    expect(errs(doc('outbound: 127.0.0.1:15001', 'excludeCidrs: ["::ffff:10.0.0.0/104"]'))).toEqual([
      'a.yaml: spec.outbound.excludeCidrs[0]: "::ffff:10.0.0.0/104": IPv4-mapped destinations are decided as IPv4; write 10.0.0.0/8',
    ]);
    // A wider IPv6 prefix that merely contains the mapped range is an ordinary IPv6 CIDR.
    expect(errs(doc('outbound: 127.0.0.1:15001', 'excludeCidrs: ["::/64"]'))).toEqual([]);
  });

  it('redirectLoopback needs loopback proxies: elsewhere, the pod loopback means another host', () => {
    expect(errs(doc('outbound: 127.0.0.1:15001, outbound6: "[::1]:15001"', 'redirectLoopback: true'))).toEqual([]);
    expect(errs(doc('outbound: 10.0.0.1:15001', 'redirectLoopback: true'))).toEqual([
      "a.yaml: spec.outbound.redirectLoopback: needs loopback proxies: spec.proxy.outbound 10.0.0.1:15001 is in another network namespace, where the pod's loopback destinations mean another host",
    ]);
    expect(errs(doc('outbound: 127.0.0.1:15001, outbound6: "[fd00::1]:15001"', 'redirectLoopback: true'))).toHaveLength(
      1,
    );
    expect(errs(doc('outbound: 10.0.0.1:15001', 'redirectLoopback: false'))).toEqual([]);
  });
});
