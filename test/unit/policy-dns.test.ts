// policy-dns.test.ts — spec.dns: defaults, field-level errors, and its eBPF map entries.
import { describe, expect, it } from 'vitest';
import { parsePolicyText, formatError } from '../../src/policy/load.js';
import { toDnsEntries, dnsFlags } from '../../src/policy/dns.js';
import { DnsFlag, AF_INET, AF_INET6 } from '../../src/bpf/abi.js';

const base = `
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: reviews }
spec:
  cgroup: /pods/a
  proxy:
    outbound: 10.200.0.1:15001
    bypass: { cgroups: [/pods/proxy], uids: [1337] }
  dns:
    proxy: 10.200.0.1:15053
    proxy6: "[fd00:200::1]:15053"
    nameservers: [10.96.0.10, "fd00:96::a"]
`;
const errs = (text: string) => parsePolicyText(text, 'policies/a.yaml').errors.map(formatError);
const parse = (text: string) => {
  const r = parsePolicyText(text, 'policies/a.yaml');
  expect(r.errors).toEqual([]);
  return r.policies[0]!;
};

describe('spec.dns', () => {
  it('accepts the documented example, with TCP captured by default', () => {
    const p = parse(base);
    expect(p.dns).toMatchObject({
      proxy: { family: 4, port: 15053, text: '10.200.0.1:15053' },
      proxy6: { family: 6, text: '[fd00:200::1]:15053' },
      all: false,
      tcp: true,
    });
    expect(p.dns!.nameservers.map((n) => n.text)).toEqual(['10.96.0.10', 'fd00:96::a']);
    expect(parse(base.replace(/\n {2}dns:[^]*$/, '\n')).dns).toBeUndefined();
  });

  it('normalises and deduplicates nameservers', () => {
    const p = parse(base.replace('[10.96.0.10, "fd00:96::a"]', '[10.96.0.10, "FD00:96:0::A", 10.96.0.10]'));
    expect(p.dns!.nameservers.map((n) => n.text)).toEqual(['10.96.0.10', 'fd00:96::a']);
  });

  it('says which field is wrong', () => {
    expect(errs(base.replace('proxy: 10.200.0.1:15053', 'proxy: 10.200.0.1'))).toEqual([
      'policies/a.yaml: spec.dns.proxy: "10.200.0.1" is not an IPv4 address:port such as "10.0.0.1:15001"',
    ]);
    expect(errs(base.replace('    proxy: 10.200.0.1:15053\n', ''))).toEqual([
      'policies/a.yaml: spec.dns.proxy: must be a string such as "10.0.0.1:15001"',
    ]);
    expect(errs(base.replace('10.96.0.10,', '10.96.0.300,'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[0]: "10.96.0.300" is not an IP address',
    ]);
    expect(errs(base.replace('10.96.0.10,', '"::ffff:10.96.0.10",'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[0]: "::ffff:10.96.0.10": IPv4-mapped addresses are decided as IPv4; write 10.96.0.10',
    ]);
    expect(errs(base.replace('10.96.0.10,', '0.0.0.0,'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[0]: "0.0.0.0": the unspecified address is not a nameserver',
    ]);
    expect(errs(base.replace('10.96.0.10,', '53,'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[0]: must be an IP address string such as "10.96.0.10"',
    ]);
    expect(errs(base.replace('    nameservers:', '    tcp: "yes"\n    nameservers:'))).toEqual([
      'policies/a.yaml: spec.dns.tcp: must be a boolean, not a string',
    ]);
    expect(errs(base.replace('    nameservers:', '    capture: all\n    nameservers:'))).toEqual([
      'policies/a.yaml: spec.dns: unknown field "capture"',
    ]);
  });

  it('refuses what would capture nothing or cannot be captured', () => {
    expect(errs(base.replace('[10.96.0.10, "fd00:96::a"]', '[]'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers: is empty and all is false: no query would be captured (list the nameservers, or all: true)',
    ]);
    expect(parse(base.replace('[10.96.0.10, "fd00:96::a"]', '[]\n    all: true')).dns!.all).toBe(true);
    expect(errs(base.replace('    proxy6: "[fd00:200::1]:15053"\n', ''))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[1]: fd00:96::a is IPv6 and spec.dns has no proxy6: its queries could not be captured',
    ]);
    expect(errs(base.replace('proxy: 10.200.0.1:15053', 'proxy: 10.96.0.10:53'))).toEqual([
      'policies/a.yaml: spec.dns.nameservers[0]: 10.96.0.10 is the DNS proxy itself (10.96.0.10:53): its queries are never captured',
    ]);
  });

  it('becomes mr_dns_pol and mr_dns_ns entries (only for a cgroup that exists; no list with all)', () => {
    const p = parse(base);
    const slots = new Map([['reviews', 7]]);
    const e = toDnsEntries([p], slots, new Map([['reviews', { cgroup: 42n, bypass: [] }]]));
    expect(e.mr_dns_pol).toEqual([
      [
        7,
        {
          flags: DnsFlag.PROXY4 | DnsFlag.PROXY6 | DnsFlag.TCP,
          proxy4_addr: Buffer.from([10, 200, 0, 1]),
          proxy6_addr: Buffer.from([0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),
          proxy4_port: 15053,
          proxy6_port: 15053,
        },
      ],
    ]);
    expect(e.mr_dns_ns.map(([k]) => [k.slot, k.family, k.addr.toString('hex')])).toEqual([
      [7, AF_INET, '0a60000a000000000000000000000000'],
      [7, AF_INET6, 'fd00009600000000000000000000000a'],
    ]);
    expect(toDnsEntries([p], slots, new Map([['reviews', { cgroup: null, bypass: [] }]]))).toEqual({
      mr_dns_pol: [],
      mr_dns_ns: [],
    });
    const all = parse(base.replace('[10.96.0.10, "fd00:96::a"]', '[10.96.0.10]\n    all: true\n    tcp: false'));
    expect(dnsFlags(all.dns!)).toBe(DnsFlag.PROXY4 | DnsFlag.PROXY6 | DnsFlag.ALL);
    expect(toDnsEntries([all], slots, new Map([['reviews', { cgroup: 42n, bypass: [] }]])).mr_dns_ns).toEqual([]);
  });
});
