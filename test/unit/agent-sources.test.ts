// agent-sources.test.ts — the agent's sources side by side (no root): policy files and pod policies merged
// (a file wins a cgroup or a name over a pod, and says why), gates united; the Kubernetes source's last
// read kept in agent.json and restored as policies; the cgroup triggers (inotify on a directory tree
// standing in for the cgroup2 mount) fire for the cgroups policies name, not for their neighbours.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { parsePolicyText } from '../../src/policy/load.js';
import { instantiate, type PolicyTemplate } from '../../src/policy/template.js';
import type { Policy } from '../../src/policy/schema.js';
import { mergeSources } from '../../src/agent/merge.js';
import { CgroupTriggers } from '../../src/agent/cgroup-triggers.js';
import { kubeSnapshot, restoreSnapshot } from '../../src/sources/kubernetes/snapshot.js';

const filePolicy = (name: string, cgroup: string, file = `/etc/meshredir/${name}.yaml`): Policy => {
  const r = parsePolicyText(
    `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ${name} }\nspec:\n  cgroup: ${cgroup}\n  proxy: { outbound: "10.0.0.1:15001" }\n`,
    file,
  );
  expect(r.errors).toEqual([]);
  return r.policies[0]!;
};
const template: PolicyTemplate = {
  name: 'default',
  file: '/etc/meshredir/t.yaml',
  spec: { proxy: { outbound: '10.0.0.1:15001' } },
};
const podPolicy = (name: string, cgroup: string) => {
  const made = instantiate(template, {}, name, cgroup, `pod shop/${name} (uid u)`);
  if (!('policy' in made)) throw new Error(made.errors.join('; '));
  return made;
};

describe('sources merged', () => {
  it('concatenates; a pod claiming the cgroup (or the name) of a policy file loses, with the reason', () => {
    const f = filePolicy('claim', '/kubepods/burstable/podb');
    const a = podPolicy('pod.shop.a', '/kubepods/burstable/poda').policy;
    const b = podPolicy('pod.shop.b', '/kubepods/burstable/podb').policy;
    const n = podPolicy('claim', '/kubepods/burstable/podn').policy;
    const m = mergeSources([
      { policies: [f], errors: [] },
      { policies: [a, b, n], errors: [], gates: { guard: ['/kubepods'], pass: ['/kubepods/podc'] } },
    ]);
    expect(m.policies.map((p) => p.name)).toEqual(['claim', 'pod.shop.a']);
    expect(m.errors.map((e) => e.message)).toEqual([
      expect.stringMatching(
        /^pod shop\/pod\.shop\.b \(uid u\): policy pod\.shop\.b is not applied: its cgroup \/kubepods\/burstable\/podb is claimed by policy claim of \/etc\/meshredir\/claim\.yaml; a policy file wins over a pod/,
      ),
      expect.stringMatching(/policy claim is not applied: its name is also the name of policy claim of /),
    ]);
    expect(m.errors.map((e) => e.source)).toEqual(['kubernetes', 'kubernetes']);
  });

  it('unites the gates of every source, each cgroup once', () => {
    const m = mergeSources([
      { policies: [], errors: [], gates: { guard: ['/a', '/b'], pass: ['/p'] } },
      { policies: [], errors: [{ source: 'x', object: 'o', message: 'kept' }], gates: { guard: ['/b'], pass: [] } },
      { policies: [], errors: [] },
    ]);
    expect(m.gates).toEqual({ guard: ['/a', '/b'], pass: ['/p'] });
    expect(m.errors.map((e) => e.message)).toEqual(['kept']);
  });
});

describe('the Kubernetes read kept in agent.json', () => {
  it('round-trips through JSON and the state schema into the same policies, marked as from kubernetes', () => {
    const a = podPolicy('pod.shop.a', '/kubepods/burstable/poda');
    const snap = kubeSnapshot.parse(
      JSON.parse(
        JSON.stringify({
          at: '2026-01-01T00:00:00.000Z',
          policies: [{ file: a.policy.file, document: a.document }],
          gates: { guard: ['/kubepods'], pass: [] },
          pods: [{ pod: 'shop/a', uid: 'u', decision: 'enrolled', why: 'x', cgroup: null, policy: 'pod.shop.a' }],
        }),
      ),
    );
    const r = restoreSnapshot(snap);
    expect(r.errors).toEqual([]);
    expect(r.gates).toEqual({ guard: ['/kubepods'], pass: [] });
    expect(r.policies).toEqual([a.policy]);
    expect(r.policies[0]!.origin).toBe('kubernetes');
  });

  it('a kept document that no longer validates is an error, not a policy', () => {
    const r = restoreSnapshot({
      at: 'x',
      policies: [{ file: 'pod shop/a (uid u)', document: { apiVersion: 'meshredir/v1', kind: 'RedirectPolicy' } }],
      gates: { guard: [], pass: [] },
      pods: [],
    });
    expect(r.policies).toEqual([]);
    expect(r.errors[0]!.message).toMatch(/no longer validates/);
  });
});

describe('cgroup triggers', () => {
  let mount: string;
  let reasons: string[];
  let t: CgroupTriggers;
  const until = async (what: string, f: () => boolean, ms = 3000) => {
    const end = Date.now() + ms;
    while (!f()) {
      if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms (${JSON.stringify(reasons)})`);
      await new Promise((r) => setTimeout(r, 10));
    }
  };
  beforeEach(() => {
    mount = mkdtempSync(join(tmpdir(), 'meshredir-triggers-'));
    reasons = [];
    t = new CgroupTriggers(mount, (r) => reasons.push(r), pino({ level: 'silent' }));
  });
  afterEach(() => {
    t.close();
    rmSync(mount, { recursive: true, force: true });
  });

  it('a policy cgroup made below a missing parent, removed, made again; neighbours are ignored', async () => {
    const p = filePolicy('a', '/pods/a');
    t.update([p], [{ policy: 'a', file: p.file, state: 'waiting' }]);
    expect(t.watching()).toEqual([mount]); // /pods does not exist: its nearest ancestor
    mkdirSync(join(mount, 'other'));
    mkdirSync(join(mount, 'pods'));
    // Seen as made (the root's watch) or as newly watched (the watch moved down before that event came).
    await until('parent made', () => reasons.some((r) => r === 'cgroup /pods made' || r === 'watching /pods'));
    await until('watch moved down', () => t.watching()[0] === join(mount, 'pods'));
    mkdirSync(join(mount, 'pods', 'b'));
    mkdirSync(join(mount, 'pods', 'a'));
    await until('policy cgroup made', () => reasons.includes('cgroup /pods/a made'));
    rmdirSync(join(mount, 'pods', 'a'));
    await until('policy cgroup removed', () => reasons.includes('cgroup /pods/a removed'));
    expect(reasons.filter((r) => /other|\/pods\/b/.test(r))).toEqual([]);
  });

  it("a waiting policy's cgroup: its cgroup.events changing (first process) triggers; pods are the Kubernetes source's", async () => {
    mkdirSync(join(mount, 'pods', 'a'), { recursive: true });
    const p = filePolicy('a', '/pods/a');
    const k = podPolicy('pod.shop.k', '/kubepods/podk').policy;
    t.update([p, k], [{ policy: 'a', file: p.file, state: 'waiting' }]);
    expect(t.watching().sort()).toEqual([join(mount, 'pods'), join(mount, 'pods', 'a')]);
    writeFileSync(join(mount, 'pods', 'a', 'cgroup.events'), 'populated 1\n');
    await until('populated', () => reasons.some((r) => r.startsWith('cgroup /pods/a changed')));
  });
});
