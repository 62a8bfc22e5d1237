// policy.test.ts — the policy format: valid documents, field-level errors, cross-file conflicts,
// (the property test of thousands of malformed documents is policy-fuzz.test.ts).
import { describe, expect, it } from 'vitest';
import { parsePolicyText, checkSet, formatError } from '../../src/policy/load.js';

const valid = `
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: reviews }
spec:
  cgroup: /meshredir-test-x/pod-a
  proxy:
    outbound: 10.200.0.1:15001
    outbound6: "[fd00:200::1]:15001"
    bypass: { cgroups: [/meshredir-test-x/proxy], uids: [1337], gids: [] }
  outbound:
    includePorts: []
    excludePorts: [15090, 15021]
    includeCidrs: ["0.0.0.0/0", "::/0"]
    excludeCidrs: ["10.200.0.0/30"]
`;

const errs = (text: string) => parsePolicyText(text, 'policies/a.yaml').errors.map(formatError);

describe('policy parsing', () => {
  it('accepts the documented example', () => {
    const r = parsePolicyText(valid, 'policies/a.yaml');
    expect(r.errors).toEqual([]);
    const p = r.policies[0]!;
    expect(p.name).toBe('reviews');
    expect(p.proxy.outbound).toMatchObject({
      family: 4,
      bytes: [10, 200, 0, 1],
      port: 15001,
      text: '10.200.0.1:15001',
    });
    expect(p.proxy.outbound6?.text).toBe('[fd00:200::1]:15001');
    expect(p.outbound.excludeCidrs[0]).toMatchObject({ family: 4, prefix: 30, text: '10.200.0.0/30' });
    expect(p.bypass.uids).toEqual([1337]);
  });

  it('says which field is wrong, with the file', () => {
    expect(errs(valid.replace('[15090, 15021]', '[15090, 70000]'))).toEqual([
      'policies/a.yaml: spec.outbound.excludePorts[1]: 70000 is not a port (1-65535)',
    ]);
    expect(errs(valid.replace('10.200.0.1:15001', '10.200.0.1'))).toEqual([
      'policies/a.yaml: spec.proxy.outbound: "10.200.0.1" is not an IPv4 address:port such as "10.0.0.1:15001"',
    ]);
    expect(errs(valid.replace('"10.200.0.0/30"', '"10.200.0.0/33"'))).toEqual([
      'policies/a.yaml: spec.outbound.excludeCidrs[0]: "10.200.0.0/33": /33 is not a prefix length (0-32)',
    ]);
    expect(
      errs(valid.replace('  outbound:\n    includePorts', '  outbund: {}\n  outbound:\n    includePorts')),
    ).toEqual(['policies/a.yaml: spec: unknown field "outbund"']);
    expect(errs(valid.replace('cgroup: /meshredir', 'cgroup: meshredir'))[0]).toMatch(
      /spec\.cgroup: "meshredir-test-x\/pod-a" is not an absolute cgroup path/,
    );
    expect(errs(valid.replace(/spec:[^]*$/, 'spec: "x"\n'))).toEqual([
      'policies/a.yaml: spec: must be an object, not a string',
    ]);
    expect(errs(valid.replace('metadata: { name: reviews }', 'metadata: { name: [a] }'))).toEqual([
      'policies/a.yaml: metadata.name: must be a DNS-label-like name, not an array',
    ]);
    expect(errs(valid.replace('metadata: { name: reviews }', 'metadata: {}'))).toEqual([
      'policies/a.yaml: metadata.name: is required (a DNS-label-like name)',
    ]);
    expect(errs(valid.replace(/^kind: .*$/m, ''))).toEqual(['policies/a.yaml: kind: is required ("RedirectPolicy")']);
    expect(errs(valid.replace(/^kind: .*$/m, 'kind: null'))).toEqual([
      'policies/a.yaml: kind: null: only "RedirectPolicy" is known',
    ]);
    expect(errs(valid.replace('apiVersion: meshredir/v1', 'apiVersion: v2'))[0]).toMatch(
      /^policies\/a\.yaml: apiVersion: "v2": only "meshredir\/v1" is known/,
    );
  });

  it('rejects a policy with nowhere to redirect, and overlapping include/exclude', () => {
    const noProxy = valid.replace('    outbound: 10.200.0.1:15001\n    outbound6: "[fd00:200::1]:15001"\n', '');
    expect(errs(noProxy)).toEqual([
      'policies/a.yaml: spec.proxy: needs outbound (IPv4), outbound6 (IPv6) or inbound (or spec.dns alone): there is nowhere to redirect to and nothing to intercept',
    ]);
    expect(errs(valid.replace('includePorts: []', 'includePorts: [15021]'))).toEqual([
      'policies/a.yaml: spec.outbound.excludePorts[1]: 15021 is also in includePorts',
    ]);
  });

  it('bypass marks: value or value/mask, hex or decimal, a YAML integer too; field-level errors', () => {
    const withMarks = (m: string) => valid.replace('gids: [] }', `gids: [], marks: ${m} }`);
    const r = parsePolicyText(withMarks('["0x539/0xfff", 0x100, "1337", "0XA/0XF", 4294967295]'), 'a.yaml');
    expect(r.errors).toEqual([]);
    expect(r.policies[0]!.bypass.marks).toEqual([
      { value: 0x539, mask: 0xfff, text: '0x539/0xfff' },
      { value: 0x100, mask: 0xffffffff, text: '0x100' },
      { value: 1337, mask: 0xffffffff, text: '0x539' },
      { value: 0xa, mask: 0xf, text: '0xa/0xf' },
      { value: 0xffffffff, mask: 0xffffffff, text: '0xffffffff' },
    ]);
    expect(parsePolicyText(valid, 'a.yaml').policies[0]!.bypass.marks).toEqual([]);
    expect(errs(withMarks('["0x539/0xff"]'))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks[0]: "0x539/0xff": value 0x539 has bits outside the mask 0xff, so it can never match',
    ]);
    expect(errs(withMarks('[1, "0x5/0"]'))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks[1]: "0x5/0": mask 0 matches every socket, so nothing would be redirected',
    ]);
    expect(errs(withMarks('["0/0xff"]'))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks[0]: "0/0xff": value 0 matches every socket that has no mark (the default), so nothing would be redirected',
    ]);
    for (const bad of ['"0x1/2/3"', '"0x100000000"', '-1', '1.5', '"mark"', '""', '"0x"'])
      expect(errs(withMarks(`[${bad}]`))[0]).toMatch(
        /^policies\/a\.yaml: spec\.proxy\.bypass\.marks\[0\]: .* is not a mark \(value or value\/mask, 0 to 0xffffffff, such as "0x539\/0xfff"\)$/,
      );
    expect(errs(withMarks('[true]'))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks[0]: must be a mark such as "0x539/0xfff" (value or value/mask)',
    ]);
    expect(errs(withMarks('["0x539/0xfff", 1337, "0x539/0xFFF"]'))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks[2]: 0x539/0xfff is listed twice',
    ]);
    expect(errs(withMarks(`[${Array.from({ length: 9 }, (_, i) => i + 1).join(', ')}]`))).toEqual([
      'policies/a.yaml: spec.proxy.bypass.marks: at most 8 marks, not 9',
    ]);
  });

  it('normalises CIDRs (host bits cleared) and endpoints', () => {
    const r = parsePolicyText(valid.replace('"10.200.0.0/30"', '"10.200.0.3/30", "fd00::1:2/64"'), 'a.yaml');
    expect(r.policies[0]!.outbound.excludeCidrs.map((c) => c.text)).toEqual(['10.200.0.0/30', 'fd00::/64']);
  });

  it('reads several documents per file; one bad document rejects the file', () => {
    const two = `${valid}\n---\n${valid.replace('name: reviews', 'name: ratings').replace('pod-a', 'pod-b')}`;
    expect(parsePolicyText(two, 'a.yaml').policies.map((p) => p.name)).toEqual(['reviews', 'ratings']);
    const bad = `${valid}\n---\n${valid.replace('name: reviews', 'name: Bad_Name')}`;
    const r = parsePolicyText(bad, 'a.yaml');
    expect(r.policies).toEqual([]);
    expect(r.errors[0]!.path).toBe('document 2: metadata.name');
  });

  it('two policies claiming one cgroup, neither applied: both rejected, each error naming the other file', () => {
    const a = parsePolicyText(valid, 'a.yaml');
    const b = parsePolicyText(valid.replace('name: reviews', 'name: other'), 'b.yaml');
    const set = checkSet([a, b]);
    expect(set.policies).toEqual([]);
    expect(set.errors.map(formatError)).toEqual([
      'a.yaml: spec.cgroup: /meshredir-test-x/pod-a is also claimed by b.yaml (other)',
      'b.yaml: spec.cgroup: /meshredir-test-x/pod-a is also claimed by a.yaml (reviews)',
    ]);
  });

  it('a newcomer claiming the cgroup of an applied policy is rejected alone; the incumbent stays', () => {
    const a = parsePolicyText(valid, 'a.yaml');
    const b = parsePolicyText(valid.replace('name: reviews', 'name: other'), 'b.yaml');
    for (const order of [
      [a, b],
      [b, a],
    ]) {
      const set = checkSet(order, a.policies);
      expect(set.policies.map((p) => `${p.file}:${p.name}`)).toEqual(['a.yaml:reviews']);
      expect(set.rejected.map((p) => p.file)).toEqual(['b.yaml']);
      expect(set.errors.map(formatError)).toEqual([
        'b.yaml: spec.cgroup: /meshredir-test-x/pod-a is already claimed by a.yaml (reviews), which is applied and stays; other from b.yaml is not applied',
      ]);
    }
    // Incumbency is the file's claim: b.yaml once applied with another cgroup does not hold this one.
    const bBefore = parsePolicyText(valid.replace('name: reviews', 'name: other').replace('pod-a', 'pod-z'), 'b.yaml');
    expect(checkSet([a, b], bBefore.policies).policies).toEqual([]);
    // The same for names.
    const n = parsePolicyText(valid.replace('pod-a', 'pod-n'), 'n.yaml');
    const byName = checkSet([a, n], a.policies);
    expect(byName.policies.map((p) => p.file)).toEqual(['a.yaml']);
    expect(byName.errors.map(formatError)).toEqual([
      'n.yaml: metadata.name: reviews is already claimed by a.yaml (reviews), which is applied and stays; reviews from n.yaml is not applied',
    ]);
  });

  it('normalises cgroup paths, so aliases of one cgroup are one claim', () => {
    const at = (cg: string, name: string, file: string) =>
      parsePolicyText(
        valid.replace('cgroup: /meshredir-test-x/pod-a', `cgroup: "${cg}"`).replace('name: reviews', `name: ${name}`),
        file,
      );
    const spellings = [
      '/meshredir-test-x/pod-a',
      '/meshredir-test-x//pod-a',
      '/meshredir-test-x/./pod-a',
      '//meshredir-test-x/pod-a/',
      '/./meshredir-test-x/pod-a//.',
    ];
    const files = spellings.map((cg, i) => at(cg, `p${i}`, `${i}.yaml`));
    for (const f of files) expect(f.errors).toEqual([]);
    expect(new Set(files.map((f) => f.policies[0]!.cgroup))).toEqual(new Set(['/meshredir-test-x/pod-a']));
    const set = checkSet(files);
    expect(set.policies).toEqual([]);
    expect(set.errors).toHaveLength(spellings.length);
    expect(at('/', 'root', 'r.yaml').policies[0]!.cgroup).toBe('/');
    expect(at('//./', 'root', 'r.yaml').policies[0]!.cgroup).toBe('/');
    // Bypass cgroups too, and the "own cgroup as bypass" check sees through the alias.
    expect(
      errs(valid.replace('cgroups: [/meshredir-test-x/proxy]', 'cgroups: ["/meshredir-test-x//pod-a/."]')),
    ).toEqual([
      "policies/a.yaml: spec.proxy.bypass.cgroups: /meshredir-test-x/pod-a is the policy's own cgroup: nothing would be redirected",
    ]);
    expect(errs(valid.replace('cgroup: /meshredir-test-x/pod-a', 'cgroup: /meshredir-test-x/a/../pod-a'))).toEqual([
      'policies/a.yaml: spec.cgroup: must not contain ..',
    ]);
  });
});
