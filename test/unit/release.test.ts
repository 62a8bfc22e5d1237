// release.test.ts — when DNS capture's sock_release hook (mr_dns_release) is needed, which policies a plan says
// capture DNS, and that it shares the on-demand machinery with the kTLS guard (pure: no kernel). Its attach
// and detach are proved by test/kernel/dns-release.kernel.test.ts.
import { describe, expect, it } from 'vitest';
import { RELEASE, ReleasePart, releaseNeed, type ReleaseFacts } from '../../src/modes/ebpf/release.js';
import { GRACE_MS } from '../../src/modes/ebpf/on-demand.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { DNS_PROGRAMS, ON_DEMAND_PROGRAMS, OPTIONAL_PROGRAMS } from '../../src/bpf/abi.js';
import type { Desired } from '../../src/modes/ebpf/desired.js';
import { dnsUnavailable } from '../../src/modes/ebpf/dns-status.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const none: ReleaseFacts = { capturing: [], openSockets: 0, graceLeftMs: 0 };

describe('releaseNeed', () => {
  it('not needed with no policy capturing, no captured socket open and no grace left', () => {
    expect(releaseNeed(none)).toEqual({
      needed: false,
      why: 'no policy captures DNS and no captured socket is open',
    });
  });

  it('needed while a policy captures DNS, naming it', () => {
    expect(releaseNeed({ ...none, capturing: ['a'] })).toEqual({ needed: true, why: 'policy a captures DNS' });
    expect(releaseNeed({ ...none, capturing: ['a', 'b'], openSockets: 2 }).why).toBe('policies a, b capture DNS');
  });

  it('still needed after the last DNS policy went, while a captured socket keeps its entry or in the grace', () => {
    expect(releaseNeed({ ...none, openSockets: 3 })).toMatchObject({
      needed: true,
      why: expect.stringMatching(/3 captured socket\(s\) are still open/),
    });
    expect(releaseNeed({ ...none, graceLeftMs: 5 })).toMatchObject({
      needed: true,
      why: expect.stringContaining(`less than ${GRACE_MS} ms ago`),
    });
  });
});

describe('the release part', () => {
  const desired = (pols: { name: string; slot: number; dns: boolean }[], waiting: string[] = []) =>
    ({
      slots: new Map(pols.map((p) => [p.name, p.slot])),
      keep: pols.map((p) => ({
        name: p.name,
        dns: p.dns ? { proxy: '127.0.0.1:15053' } : undefined,
        proxy: { outbound: '127.0.0.1:15001' },
      })),
      unresolved: waiting.map((policy) => ({ policy, field: 'spec.cgroup', cgroup: '/x' })),
    }) as unknown as Desired;

  /** Pins whose DNS hooks are all attached but mr_dns_release (on demand), with its program pinned or not. */
  const pinsWith = (releasePinned: boolean) => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-unit-'));
    writeFileSync(join(dir, 'mr_dns_release'), '');
    const attached = ['mr_connect4', 'mr_dns_recv4', 'mr_dns_recv6', 'mr_dns_send4', 'mr_dns_send6'];
    return {
      pins: {
        links: () => attached.map((name) => ({ name, pin: join(dir, name), attached: true })),
        progPin: (n: string) => join(dir, releasePinned ? n : 'absent'),
      } as unknown as Pins,
      done: () => rmSync(dir, { recursive: true }),
    };
  };
  const three = () =>
    desired(
      [
        { name: 'dns', slot: 1, dns: true },
        { name: 'plain', slot: 2, dns: false },
        { name: 'later', slot: 3, dns: true },
      ],
      ['later'],
    );

  it('plans the policies that capture DNS, not one without spec.dns or waiting for its cgroup', () => {
    const { pins, done } = pinsWith(true);
    try {
      expect(dnsUnavailable(pins)).toEqual({}); // ready to attach: DNS capture is available
      const part = new ReleasePart(pins, () => '/nonexistent');
      expect(part.plan(three(), [])).toEqual({ capturing: ['dns'] });
      expect(part.plan(desired([{ name: 'plain', slot: 2, dns: false }]), [])).toEqual({ capturing: [] });
      expect(part.render({ capturing: ['dns'] }).json).toEqual({ program: RELEASE, attach: true, capturing: ['dns'] });
    } finally {
      done();
    }
  });

  it('plans none where DNS capture is unavailable (its program not loaded): DNS capture writes no entry', () => {
    const { pins, done } = pinsWith(false);
    try {
      expect(Object.keys(dnsUnavailable(pins))).toEqual(['mr_dns_release']);
      expect(new ReleasePart(pins, () => '/nonexistent').plan(three(), [])).toEqual({ capturing: [] });
    } finally {
      done();
    }
  });

  it('DNS capture writes mr_dns_pol only while the link is attached, not when it merely could be', () => {
    const { pins, done } = pinsWith(true);
    try {
      expect(dnsUnavailable(pins, 'plan')).toEqual({});
      expect(dnsUnavailable(pins, 'write')).toEqual({ mr_dns_release: expect.stringMatching(/^not attached/) });
    } finally {
      done();
    }
  });

  it('its program is on demand and optional (a kernel may lack sock_release): never attached by a load', () => {
    expect(ON_DEMAND_PROGRAMS).toContain(RELEASE);
    expect(Object.keys(DNS_PROGRAMS)).toContain(RELEASE);
    expect(OPTIONAL_PROGRAMS).toContain(RELEASE);
  });

  it('asks for nothing between reconciles while it is not draining', () => {
    const part = new ReleasePart(new Pins('/nonexistent'), () => '/nonexistent');
    expect(part.pulse()).toBeNull();
  });
});
