// kubernetes-layout.test.ts — the kubelet's cgroup naming for both drivers and every QoS class, and how
// a pod's cgroup is confirmed against the directories that exist.
import { describe, expect, it } from 'vitest';
import {
  podCgroupCandidates,
  podUidOfCgroup,
  qosParents,
  resolvePodCgroup,
  rootComponents,
  type KubeletLayout,
} from '../../src/sources/kubernetes/cgroup-layout.js';

const uid = '1d5e9c3a-8b2f-4c6d-9e0a-7f3b2c1d4e5f';
const us = uid.replace(/-/g, '_');
const node: KubeletLayout = { prefix: '/', cgroupRoot: '/', drivers: ['systemd', 'cgroupfs'] };

describe('kubelet pod cgroup names', () => {
  it('systemd driver: slices expanded into their parents, "-" of the uid escaped as "_"', () => {
    const c = podCgroupCandidates({ ...node, drivers: ['systemd'] }, uid);
    expect(c.map((x) => [x.qos, x.path])).toEqual([
      ['Guaranteed', `/kubepods.slice/kubepods-pod${us}.slice`],
      ['Burstable', `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us}.slice`],
      ['BestEffort', `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod${us}.slice`],
    ]);
  });

  it('cgroupfs driver: components joined by "/", the uid as it is', () => {
    const c = podCgroupCandidates({ ...node, drivers: ['cgroupfs'] }, uid);
    expect(c.map((x) => [x.qos, x.path])).toEqual([
      ['Guaranteed', `/kubepods/pod${uid}`],
      ['Burstable', `/kubepods/burstable/pod${uid}`],
      ['BestEffort', `/kubepods/besteffort/pod${uid}`],
    ]);
  });

  it('a known QoS class narrows the candidates to one per driver', () => {
    expect(podCgroupCandidates(node, uid, 'Burstable').map((x) => x.path)).toEqual([
      `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us}.slice`,
      `/kubepods/burstable/pod${uid}`,
    ]);
  });

  it('--cgroup-root in either spelling, and a prefix (a test root or a nested node)', () => {
    expect(rootComponents('/kubelet')).toEqual(['kubelet']);
    expect(rootComponents('/kubelet.slice')).toEqual(['kubelet']);
    expect(rootComponents('/a.slice/a-b_c.slice')).toEqual(['a', 'b-c']);
    expect(rootComponents('/')).toEqual([]);
    const kind: KubeletLayout = {
      prefix: '/meshredir-test-1',
      cgroupRoot: '/kubelet',
      drivers: ['systemd', 'cgroupfs'],
    };
    expect(podCgroupCandidates(kind, uid, 'BestEffort').map((x) => x.path)).toEqual([
      `/meshredir-test-1/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod${us}.slice`,
      `/meshredir-test-1/kubelet/kubepods/besteffort/pod${uid}`,
    ]);
  });

  it('the QoS parents (where the guard goes) for both drivers', () => {
    expect(qosParents({ ...node, prefix: '/t' }).map((p) => p.path)).toEqual([
      '/t/kubepods.slice',
      '/t/kubepods.slice/kubepods-burstable.slice',
      '/t/kubepods.slice/kubepods-besteffort.slice',
      '/t/kubepods',
      '/t/kubepods/burstable',
      '/t/kubepods/besteffort',
    ]);
  });

  it('a pod uid back from a cgroup directory name, for both drivers (static pods: 32 hex digits)', () => {
    expect(podUidOfCgroup(`kubepods-burstable-pod${us}.slice`)).toBe(uid);
    expect(podUidOfCgroup(`kubepods-pod${us}.slice`)).toBe(uid);
    expect(podUidOfCgroup(`pod${uid}`)).toBe(uid);
    expect(podUidOfCgroup('pod0123456789abcdef0123456789abcdef')).toBe('0123456789abcdef0123456789abcdef');
    expect(podUidOfCgroup('kubepods-burstable.slice')).toBeNull();
    expect(podUidOfCgroup('burstable')).toBeNull();
    expect(podUidOfCgroup('cri-containerd-0123456789abcdef.scope')).toBeNull();
  });
});

describe('confirmed against existing directories', () => {
  const c = podCgroupCandidates(node, uid, 'Burstable');
  it('the candidate that exists wins, whichever driver', () => {
    const have = new Set([`/kubepods/burstable`, `/kubepods/burstable/pod${uid}`]);
    expect(resolvePodCgroup(c, (p) => have.has(p))).toEqual({
      found: true,
      path: `/kubepods/burstable/pod${uid}`,
      driver: 'cgroupfs',
    });
  });

  it('not created yet: where the kubelet will make it (its QoS parent exists)', () => {
    const have = new Set(['/kubepods.slice/kubepods-burstable.slice']);
    expect(resolvePodCgroup(c, (p) => have.has(p))).toMatchObject({
      found: false,
      parentExists: true,
      expected: `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us}.slice`,
    });
  });

  it('a layout it cannot resolve says every path it tried', () => {
    expect(resolvePodCgroup(c, () => false)).toEqual({
      found: false,
      parentExists: false,
      expected: null,
      tried: [
        `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod${us}.slice`,
        `/kubepods/burstable/pod${uid}`,
      ],
    });
  });
});
