// policy-inbound.test.ts — the inbound part of the policy format: spec.proxy.inbound as a port or a listener
// address (today's port still valid), spec.inbound's fields with their defaults, and field-level errors.
import { describe, expect, it } from 'vitest';
import { parsePolicyText, formatError } from '../../src/policy/load.js';

const doc = (proxy: string, inbound = '') => `
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: pod-b }
spec:
  cgroup: /pods/b
  proxy:
${proxy}
    bypass: { cgroups: [/pods/b/proxy] }
${inbound}`;
const parse = (text: string) => parsePolicyText(text, 'b.yaml');
const errs = (text: string) => parse(text).errors.map(formatError);

describe('spec.proxy.inbound and spec.inbound', () => {
  it("today's port form is still valid, with the defaults of every new field", () => {
    const r = parse(doc('    outbound: 10.200.0.1:15001\n    inbound: 15006', '  inbound: { excludePorts: [22] }'));
    expect(r.errors).toEqual([]);
    const p = r.policies[0]!;
    expect(p.proxy.inbound).toEqual({ port: 15006, text: '15006' });
    expect(p.inbound).toEqual({
      includePorts: [],
      excludePorts: [22],
      bypassSources: [],
      whenNoProxy: 'reject',
      interception: 'redirect',
      tproxy: { mark: 1337, table: 133 },
    });
  });

  it('an exact listener address, IPv4 or IPv6; an inbound-only policy is valid', () => {
    const v4 = parse(doc('    inbound: 127.0.0.1:15006'));
    expect(v4.errors).toEqual([]);
    expect(v4.policies[0]!.proxy.inbound).toMatchObject({
      port: 15006,
      text: '127.0.0.1:15006',
      address: { family: 4, bytes: [127, 0, 0, 1], port: 15006 },
    });
    expect(v4.policies[0]!.proxy.outbound).toBeUndefined();
    const v6 = parse(doc('    inbound: "[::1]:15006"'));
    expect(v6.policies[0]!.proxy.inbound).toMatchObject({ port: 15006, address: { family: 6 }, text: '[::1]:15006' });
  });

  it('every field set, normalised', () => {
    const r = parse(
      doc(
        '    inbound: 15006',
        [
          '  inbound:',
          '    includePorts: [8080, 9090]',
          '    excludePorts: [22]',
          '    bypassSources: ["10.200.0.1/32", "fd00::1:0/112"]',
          '    whenNoProxy: pass',
          '    interception: tproxy',
          '    tproxy: { mark: 0x400, table: 200 }',
        ].join('\n'),
      ),
    );
    expect(r.errors).toEqual([]);
    const i = r.policies[0]!.inbound;
    expect(i).toMatchObject({
      includePorts: [8080, 9090],
      excludePorts: [22],
      whenNoProxy: 'pass',
      interception: 'tproxy',
      tproxy: { mark: 1024, table: 200 },
    });
    expect(i.bypassSources.map((c) => c.text)).toEqual(['10.200.0.1/32', 'fd00::1:0/112']);
  });

  it('field-level errors', () => {
    const cases: [string, string, string][] = [
      ['    inbound: 70000', '', 'spec.proxy.inbound: 70000 is not a port (1-65535)'],
      [
        '    inbound: "15006"',
        '',
        'spec.proxy.inbound: "15006" is not a port number or a listener address such as "127.0.0.1:15006"',
      ],
      [
        '    inbound: 0.0.0.0:15006',
        '',
        'spec.proxy.inbound: "0.0.0.0:15006": for a listener on any address give the port alone (15006)',
      ],
      [
        '    inbound: "[::]:15006"',
        '',
        'spec.proxy.inbound: "[::]:15006": for a listener on any address give the port alone (15006)',
      ],
      ['    inbound: 127.0.0.1:0', '', 'spec.proxy.inbound: "127.0.0.1:0": 0 is not a port (1-65535)'],
      [
        '    inbound: [15006]',
        '',
        'spec.proxy.inbound: must be a port such as 15006 or a listener address such as "127.0.0.1:15006", not an array',
      ],
      [
        '    inbound: 15006',
        '  inbound: { whenNoProxy: drop }',
        'spec.inbound.whenNoProxy: "drop": must be "reject" (refuse the connection) or "pass" (to the app)',
      ],
      [
        '    inbound: 15006',
        '  inbound: { interception: nat }',
        'spec.inbound.interception: "nat": must be "redirect" or "tproxy" (iptables mode)',
      ],
      [
        '    inbound: 15006',
        '  inbound: { includePorts: [80], excludePorts: [443, 80] }',
        'spec.inbound.excludePorts[1]: 80 is also in includePorts',
      ],
      [
        '    inbound: 15006',
        '  inbound: { bypassSources: ["10.0.0.1"] }',
        'spec.inbound.bypassSources[0]: "10.0.0.1" is not a CIDR (address/prefix)',
      ],
      [
        '    inbound: 15006',
        '  inbound: { tproxy: { mark: 0 } }',
        'spec.inbound.tproxy.mark: 0 is not a firewall mark (1-4294967295)',
      ],
      [
        '    inbound: 15006',
        '  inbound: { tproxy: { table: 254 } }',
        "spec.inbound.tproxy.table: 254 is the kernel's default, main or local table",
      ],
      ['    inbound: 15006', '  inbound: { tproxy: { tabel: 5 } }', 'spec.inbound.tproxy: unknown field "tabel"'],
    ];
    for (const [proxy, inbound, want] of cases) expect(errs(doc(proxy, inbound)), want).toEqual([`b.yaml: ${want}`]);
  });
});
