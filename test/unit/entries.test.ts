// entries.test.ts — policies as map contents, and stable slot assignment.
import { describe, expect, it } from 'vitest';
import { parsePolicyText } from '../../src/policy/load.js';
import { assignSlots, toEntries, cgroupIdConflicts, idConflictMessage } from '../../src/policy/entries.js';
import { outsideRoot } from '../../src/policy/scope.js';
import { MAPS, cidrKey, policyValue, slotMeta, defaultPendingBudget } from '../../src/bpf/abi.js';

const text = `
apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: a }
spec:
  cgroup: /t/a
  proxy:
    outbound: 10.0.0.1:15001
    bypass: { cgroups: [/t/proxy], uids: [1337], gids: [7] }
  outbound:
    includePorts: [80]
    excludeCidrs: ["10.0.0.0/8", "fd00::/16"]
`;

describe('policy → map entries', () => {
  const p = parsePolicyText(text, 'a.yaml').policies[0]!;

  it('keeps slots stable and fills the lowest free one (slot 0 is reserved)', () => {
    expect([...assignSlots(['a', 'b'], new Map()).entries()]).toEqual([
      ['a', 1],
      ['b', 2],
    ]);
    expect([...assignSlots(['c', 'b'], new Map([['b', 2]])).entries()]).toEqual([
      ['b', 2],
      ['c', 1],
    ]);
  });

  it('translates every field', () => {
    const e = toEntries([p], new Map([['a', 3]]), new Map([['a', { cgroup: 100n, bypass: [200n] }]]));
    expect(e.mr_cgroups).toEqual([
      [100n, { kind: 1, slot: 3 }],
      [200n, { kind: 2, slot: 3 }],
    ]);
    const [, pol] = e.mr_policies[0]!;
    expect(pol.flags).toBe(1 | 4 | 128 | 256 | 512); // PROXY4 | INCLUDE_PORTS | OWNERS | PORTS | CIDRS
    expect([...pol.proxy4_addr]).toEqual([10, 0, 0, 1]);
    expect(pol.proxy4_port).toBe(15001);
    expect([pol.pending_max, pol.netns_ino]).toEqual([1024, 0]); // the default budget; no netns given
    expect(e.mr_owners).toEqual([
      [{ slot: 3, kind: 1, id: 1337 }, 1],
      [{ slot: 3, kind: 2, id: 7 }, 1],
    ]);
    expect(e.mr_ports).toEqual([[{ slot: 3, port: 80, pad: 0 }, 1]]);
    expect(e.mr_cidrs.map(([k, v]) => [k.prefixlen, k.family, v])).toEqual([
      [48, 2, 2],
      [56, 10, 2],
    ]);
  });

  it('bypass marks: in the policy value, with their flag; none: no flag, all zero (the programs read nothing)', () => {
    const m = parsePolicyText(text.replace('gids: [7] }', 'gids: [7], marks: ["0x539/0xfff", 0x100] }'), 'a.yaml');
    expect(m.errors).toEqual([]);
    const e = toEntries(m.policies, new Map([['a', 3]]), new Map([['a', { cgroup: 100n, bypass: [200n] }]]));
    const [, pol] = e.mr_policies[0]!;
    expect(pol.flags).toBe(1 | 4 | 64 | 128 | 256 | 512); // PROXY4 | INCLUDE_PORTS | BYPASS_MARKS | OWNERS | PORTS | CIDRS
    const pairs = [0, 1, 2].map((i) => [pol.marks.readUInt32LE(8 * i), pol.marks.readUInt32LE(8 * i + 4)]);
    expect(pairs).toEqual([
      [0x539, 0xfff],
      [0x100, 0xffffffff],
      [0, 0],
    ]);
    const none = toEntries([p], new Map([['a', 3]]), new Map([['a', { cgroup: 100n, bypass: [200n] }]]));
    expect(none.mr_policies[0]![1].flags & 64).toBe(0);
    expect(none.mr_policies[0]![1].marks.equals(Buffer.alloc(64))).toBe(true);
  });

  it("each policy's budget of handshakes in flight, and its pod's netns when known", () => {
    expect([defaultPendingBudget(), defaultPendingBudget(256), defaultPendingBudget(16)]).toEqual([1024, 64, 4]);
    const e = toEntries([p], new Map([['a', 3]]), new Map([['a', { cgroup: 100n, bypass: [], netns: 4026532000 }]]), {
      fastPath: true,
      pendingMax: 64,
    });
    expect(e.mr_policies[0]![1]).toMatchObject({ pending_max: 64, netns_ino: 4026532000 });
    // spec.netns given but not found: no check (0), rather than a policy refusing every connect.
    const gone = toEntries([p], new Map([['a', 3]]), new Map([['a', { cgroup: 100n, bypass: [], netns: null }]]));
    expect(gone.mr_policies[0]![1].netns_ino).toBe(0);
  });

  it('an unresolved cgroup contributes only its slot name', () => {
    const e = toEntries([p], new Map([['a', 1]]), new Map([['a', { cgroup: null, bypass: [null] }]]));
    expect(e.mr_cgroups).toEqual([]);
    expect(e.mr_policies).toEqual([]);
    expect(e.mr_slots).toHaveLength(1);
  });

  it('codecs encode with the C layout (big-endian where the header says so)', () => {
    const k = cidrKey.encode({ prefixlen: 48, slot: 3, family: 2, addr: Buffer.from([10]), pad: Buffer.alloc(3) });
    expect(cidrKey.size).toBe(28);
    expect(k.subarray(0, 10).toString('hex')).toBe('30000000' + '00000003' + '02' + '0a');
    const v = policyValue.encode({
      flags: 1,
      proxy4_addr: Buffer.from([10, 0, 0, 1]),
      proxy6_addr: Buffer.alloc(16),
      proxy4_port: 15001,
      proxy6_port: 0,
      marks: Buffer.alloc(64),
      pending_max: 64,
      netns_ino: 4026531840,
    });
    expect(policyValue.size).toBe(28 + 8 * 8 + 8); // and struct mr_mark marks[8], pending_max, netns_ino
    expect(v.readUInt32LE(92)).toBe(64);
    expect(v.readUInt32LE(96)).toBe(4026531840);
    expect(v.readUInt16BE(24)).toBe(15001);
    expect(MAPS.mr_orig.key.size).toBe(48);
  });

  it('two policies resolving to one cgroup id: the owner in the kernel stays, else both are rejected', () => {
    const q = parsePolicyText(text.replace('name: a', 'name: q').replace('cgroup: /t/a', 'cgroup: /t/alias'), 'q.yaml')
      .policies[0]!;
    const r = parsePolicyText(text.replace('name: a', 'name: r').replace('cgroup: /t/a', 'cgroup: /t/other'), 'r.yaml')
      .policies[0]!;
    const res = new Map([
      ['a', { cgroup: 100n, bypass: [] }],
      ['q', { cgroup: 100n, bypass: [] }],
      ['r', { cgroup: 101n, bypass: [] }],
    ]);
    const none = cgroupIdConflicts([p, q, r], res, new Map());
    expect(none.keep.map((x) => x.name)).toEqual(['r']);
    expect(none.conflicts).toHaveLength(1);
    expect(idConflictMessage(none.conflicts[0]!, q)).toBe(
      'q.yaml: spec.cgroup: /t/alias is cgroup id 100, also claimed by a.yaml (a, /t/a); not applied',
    );
    const owned = cgroupIdConflicts([p, q, r], res, new Map([[100n, 'a']]));
    expect(owned.keep.map((x) => x.name)).toEqual(['a', 'r']);
    expect(idConflictMessage(owned.conflicts[0]!, q)).toBe(
      'q.yaml: spec.cgroup: /t/alias is cgroup id 100, already claimed by a.yaml (a, /t/a), which is applied and stays; q is not applied',
    );
    expect(cgroupIdConflicts([p, r], res, new Map()).conflicts).toEqual([]);
  });

  it('a 253-character name (the schema maximum) is kept whole in mr_slots, so its slot survives a restart', () => {
    const long = `a${'b'.repeat(251)}c`;
    expect(long).toHaveLength(253);
    const q = parsePolicyText(text.replace('name: a', `name: ${long}`), 'q.yaml');
    expect(q.errors).toEqual([]);
    expect(parsePolicyText(text.replace('name: a', `name: ${long}d`), 'q.yaml').errors[0]!.path).toBe('metadata.name');
    const e = toEntries(q.policies, new Map([[long, 7]]), new Map([[long, { cgroup: 1n, bypass: [] }]]));
    // Through the map's bytes and back, as currentSlots() reads it after a restart.
    const raw = slotMeta.encode(e.mr_slots[0]![1]);
    const name = slotMeta.decode(raw).name.toString('utf8').replace(/\0.*$/s, '');
    expect(name).toBe(long);
    expect([...assignSlots([long, 'other'], new Map([[name, 7]])).entries()]).toEqual([
      [long, 7],
      ['other', 1],
    ]);
  });
});

describe('cgroups outside the attach point', () => {
  const at = (cg: string, bypass: string[]) =>
    parsePolicyText(
      text.replace('cgroup: /t/a', `cgroup: ${cg}`).replace('cgroups: [/t/proxy]', `cgroups: [${bypass.join(', ')}]`),
      'a.yaml',
    ).policies[0]!;

  it('names policy and bypass cgroups that are not at or below the root', () => {
    expect(outsideRoot([at('/t/a', ['/t/proxy'])], '/t')).toEqual([]);
    expect(outsideRoot([at('/t', [])], '/t')).toEqual([]);
    expect(outsideRoot([at('/x/a', ['/t/proxy'])], '/')).toEqual([]);
    const r = outsideRoot([at('/tt/a', ['/t/proxy', '/u/proxy'])], '/t');
    expect(r.map((x) => [x.field, x.cgroup])).toEqual([
      ['spec.cgroup', '/tt/a'],
      ['spec.proxy.bypass.cgroups', '/u/proxy'],
    ]);
    expect(r[0]!.message).toBe(
      'a.yaml: policy a: cgroup /tt/a is outside --cgroup-root /t, where the programs are attached: the hooks do not run there, so nothing from it is redirected',
    );
  });
});
