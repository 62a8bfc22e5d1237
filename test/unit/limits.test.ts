// limits.test.ts — the input limits and the capacity admission: the capacities policy check assumes are
// those bpf/mr_common.h declares, entry limits are reported at the field, a policy's counted demand is
// what toEntries writes, and admission never lets a newcomer or a grown policy push out what is applied.
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { BpfObject } from '../../src/bpf/object.js';
import { join } from 'node:path';
import { parsePolicyText, perNode } from '../../src/policy/load.js';
import { LIMITS, MAP_CAPACITY } from '../../src/policy/limits.js';
import { admit, checkCapacity, demand } from '../../src/policy/capacity.js';
import { toEntries, type Resolution } from '../../src/policy/entries.js';
import { MAX_POLICIES } from '../../src/bpf/abi.js';
import type { Policy } from '../../src/policy/schema.js';

const root = join(import.meta.dirname, '..', '..');

const doc = (
  name: string,
  cgroup: string,
  outbound: Record<string, unknown> = {},
  bypass: Record<string, unknown> = {},
) =>
  JSON.stringify({
    apiVersion: 'meshredir/v1',
    kind: 'RedirectPolicy',
    metadata: { name },
    spec: { cgroup, proxy: { outbound: '10.0.0.1:15001', bypass }, outbound },
  });

const policy = (
  name: string,
  cgroup: string,
  outbound: Record<string, unknown> = {},
  bypass: Record<string, unknown> = {},
) => {
  const r = parsePolicyText(doc(name, cgroup, outbound, bypass), `${name}.yaml`);
  expect(r.errors).toEqual([]);
  return r.policies[0]!;
};

const cidrs = (n: number, b = 10) =>
  Array.from({ length: n }, (_, i) => `${b}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);

describe('limits', () => {
  it('MAP_CAPACITY is what the built object declares (and MAX_POLICIES what its BTF says)', () => {
    const object = join(root, 'build', 'meshredir.bpf.o');
    if (!existsSync(object)) throw new Error(`${object} is not built (run make bpf)`);
    const obj = BpfObject.open(object);
    try {
      for (const [name, cap] of Object.entries(MAP_CAPACITY))
        expect(`${name} ${obj.maxEntries(name)}`).toBe(`${name} ${cap}`);
      expect(obj.maxEntries('mr_policies')).toBe(MAX_POLICIES);
    } finally {
      obj.close();
    }
  });

  it('entries per policy are refused at the field, with the limit and why', () => {
    const over = parsePolicyText(doc('big', '/big', { excludeCidrs: cidrs(LIMITS.cidrs + 1) }), 'big.yaml');
    expect(over.errors).toEqual([
      {
        file: 'big.yaml',
        path: 'spec.outbound.excludeCidrs',
        message:
          '65,537 CIDRs in includeCidrs and excludeCidrs together (mr_cidrs holds 262,144 for every policy of the node); at most 65,536 per policy',
      },
    ]);
    expect(parsePolicyText(doc('ok', '/ok', { excludeCidrs: cidrs(LIMITS.cidrs) }), 'ok.yaml').errors).toEqual([]);
    const ports = Array.from({ length: LIMITS.ports + 1 }, (_, i) => 1 + (i % 65535));
    expect(parsePolicyText(doc('p', '/p', { excludePorts: ports }), 'p.yaml').errors[0]).toMatchObject({
      path: 'spec.outbound.excludePorts',
      message: expect.stringMatching(/^16,385 ports .* at most 16,384 per policy$/),
    });
    const uids = Array.from({ length: LIMITS.owners + 1 }, (_, i) => i);
    expect(parsePolicyText(doc('u', '/u', {}, { uids }), 'u.yaml').errors[0]).toMatchObject({
      path: 'spec.proxy.bypass.uids',
      message: '1,025 uids and gids together; at most 1,024 per policy',
    });
  });

  it('at most MAX_POLICIES - 1 policies per node; what is applied goes first', () => {
    const ps = Array.from({ length: LIMITS.policies + 2 }, (_, i) => ({ name: `p${i}`, file: `f${i}.yaml` }) as Policy);
    const r = perNode(ps, new Set(['p4096']));
    expect(r.policies).toHaveLength(LIMITS.policies);
    expect(r.policies.map((p) => p.name)).toContain('p4096');
    expect(r.rejected.map((p) => p.name)).toEqual(['p4094', 'p4095']);
    expect(r.errors[0]!.message).toBe(
      'p4094 is not applied: more than 4095 policies on this node (the eBPF maps hold 4095)',
    );
  });
});

describe('capacity', () => {
  const ids = new Map<string, bigint>();
  const id = (path: string) => {
    if (!ids.has(path)) ids.set(path, BigInt(ids.size + 100));
    return ids.get(path)!;
  };
  const resolve = (p: Policy): Resolution => ({ cgroup: id(p.cgroup), bypass: p.bypass.cgroups.map(id) });

  it("a policy's demand is what toEntries writes for it (duplicates once)", () => {
    const p = policy(
      'd',
      '/d',
      {
        excludePorts: [1, 2, 2, 3],
        includePorts: [4],
        excludeCidrs: ['10.0.0.0/8', '10.0.0.1/8', '192.168.0.0/16'],
        includeCidrs: ['0.0.0.0/0'],
      },
      { cgroups: ['/proxy', '/proxy'], uids: [1337, 1337], gids: [5] },
    );
    const r = resolve(p);
    const e = toEntries([p], new Map([['d', 1]]), new Map([['d', r]]));
    const unique = (xs: unknown[]) =>
      new Set(xs.map((x) => JSON.stringify(x, (_, v) => (typeof v === 'bigint' ? String(v) : v)))).size;
    const d = demand(p, r);
    expect(d.perSlot).toEqual({
      mr_policies: e.mr_policies.length,
      mr_owners: unique(e.mr_owners.map(([k]) => k)),
      mr_proxies: unique(e.mr_proxies.map(([k]) => k)),
      mr_ports: unique(e.mr_ports.map(([k]) => k)),
      mr_cidrs: unique(e.mr_cidrs.map(([k]) => k)),
      mr_slots: e.mr_slots.length,
    });
    expect(d.cgroups.length).toBe(e.mr_cgroups.length);
    // A policy whose cgroup does not exist: its slot only.
    expect(demand(p, { cgroup: null, bypass: [null] })).toEqual({
      perSlot: { mr_policies: 0, mr_owners: 0, mr_proxies: 0, mr_ports: 0, mr_cidrs: 0, mr_slots: 1 },
      cgroups: [],
    });
  });

  const caps = { ...MAP_CAPACITY, mr_cidrs: 10 };
  const withCidrs = (name: string, n: number) => policy(name, `/${name}`, { excludeCidrs: cidrs(n) });

  it('newcomers are admitted while they fit; the one that does not is rejected, naming the map', () => {
    const r = checkCapacity([withCidrs('a', 4), withCidrs('b', 4), withCidrs('c', 4), withCidrs('d', 2)], caps, 100);
    expect(r.admitted.map((p) => p.name)).toEqual(['a', 'b', 'd']);
    expect(r.rejected.map((x) => x.message)).toEqual([
      'c.yaml: policy c: does not fit in the eBPF maps: mr_cidrs would hold 12 entries, more than its 10 (this policy needs 4, the policies admitted before it 8); not applied',
    ]);
  });

  it('what is applied is never pushed out by a newcomer', () => {
    const a = withCidrs('a', 5);
    const b = withCidrs('b', 6);
    const r = admit(
      [
        { policy: a, incumbent: false },
        { policy: b, incumbent: true, previous: b },
      ],
      resolve,
      caps,
      100,
    );
    expect(r.admitted.map((p) => p.name)).toEqual(['b']);
    expect(r.rejected.map((x) => x.policy.name)).toEqual(['a']);
  });

  it('a policy that grew past the room keeps its previous version (failed); the others stay', () => {
    const a0 = withCidrs('a', 3);
    const a1 = withCidrs('a', 7);
    const b = withCidrs('b', 5);
    const r = admit(
      [
        { policy: a1, incumbent: true, previous: a0 },
        { policy: b, incumbent: true, previous: b },
      ],
      resolve,
      caps,
      100,
    );
    expect(r.admitted).toEqual([a0, b]);
    expect(r.failed.map((x) => x.message)).toEqual([
      'a.yaml: policy a: its new version does not fit in the eBPF maps: mr_cidrs would hold 12 entries, more than its 10 (this policy needs 7, the policies admitted before it 5); the version applied before stays',
    ]);
    // With room, the new version goes in.
    expect(admit([{ policy: a1, incumbent: true, previous: a0 }], resolve, caps, 100).admitted).toEqual([a1]);
  });

  it('slots: no more policies than the maps hold; shared cgroup ids are counted once', () => {
    const ps = ['a', 'b', 'c'].map((n) => policy(n, `/${n}`, {}, { cgroups: ['/proxy'] }));
    const r = checkCapacity(ps, { ...MAP_CAPACITY, mr_cgroups: 4 }, 2);
    expect(r.admitted.map((p) => p.name)).toEqual(['a', 'b']);
    expect(r.rejected[0]!.message).toBe(
      'c.yaml: policy c: does not fit in the eBPF maps: no free policy slot: the maps hold 2 policies; not applied',
    );
    // a, b, c and /proxy are 4 ids: they fit in 4 (the proxy's id is shared).
    expect(checkCapacity(ps, { ...MAP_CAPACITY, mr_cgroups: 4 }, 10).admitted).toHaveLength(3);
    expect(checkCapacity(ps, { ...MAP_CAPACITY, mr_cgroups: 3 }, 10).rejected[0]!.message).toMatch(
      /mr_cgroups would hold 4 entries, more than its 3/,
    );
  });
});
