// preflight.test.ts — the agent's preflight names each missing capability and mount per mode, from a
// host view made here (CapEff bits, /proc/mounts text), and lets through what each mode does without.
import { describe, expect, it } from 'vitest';
import {
  CAPS,
  hasCap,
  parseCapEff,
  parseMounts,
  preflight,
  requirePreflight,
  type CapName,
  type HostView,
} from '../../src/probe/preflight.js';

const capEff = (...caps: CapName[]) => caps.reduce((a, c) => a | (1n << BigInt(CAPS[c])), 0n);
const ALL = capEff('CAP_NET_ADMIN', 'CAP_NET_RAW', 'CAP_SYS_PTRACE', 'CAP_SYS_ADMIN', 'CAP_PERFMON', 'CAP_BPF');
const without = (...caps: CapName[]) => caps.reduce((a, c) => a & ~(1n << BigInt(CAPS[c])), ALL);

const MOUNTS = [
  'sysfs /sys sysfs ro,nosuid,nodev,noexec,relatime 0 0',
  'tmpfs /sys/fs/cgroup tmpfs rw,nosuid,nodev,noexec,relatime,mode=755 0 0',
  'cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0',
  'bpf /sys/fs/bpf bpf rw,relatime 0 0',
].join('\n');

function host(over: Partial<HostView> & { files?: string[]; mountText?: string } = {}): HostView {
  const files = new Set(over.files ?? []);
  return {
    capEff: ALL,
    mounts: parseMounts(over.mountText ?? MOUNTS),
    exists: (p) => files.has(p),
    inContainer: true,
    hostNetns: true,
    ...over,
  };
}
const run = (mode: 'auto' | 'ebpf' | 'iptables', h: HostView, extra: { iptablesBackend?: 'nft' | 'legacy' } = {}) =>
  preflight({ mode, bpffs: '/sys/fs/bpf/meshredir', ...extra }, h);

describe('capabilities', () => {
  it('reads CapEff from /proc/self/status', () => {
    const eff = parseCapEff('Name:\tnode\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\nCapBnd:\t0\n');
    expect(eff).toBe(0x1ffffffffffn);
    expect(hasCap(eff, 'CAP_BPF')).toBe(true);
    expect(hasCap(parseCapEff('CapEff:\t0000000000200000'), 'CAP_SYS_ADMIN')).toBe(true);
    expect(hasCap(parseCapEff('CapEff:\t0000000000200000'), 'CAP_NET_ADMIN')).toBe(false);
    expect(() => parseCapEff('Name: x')).toThrow(/CapEff/);
  });

  it('everything present: no errors in any mode', () => {
    for (const m of ['auto', 'ebpf', 'iptables'] as const) expect(run(m, host())).toEqual({ errors: [], warnings: [] });
  });

  it('ebpf: CAP_SYS_ADMIN is the one it needs, named with why', () => {
    const r = run('ebpf', host({ capEff: without('CAP_SYS_ADMIN') }));
    expect(r.errors).toHaveLength(1);
    expect(r.errors[0]).toMatch(/^missing capability CAP_SYS_ADMIN: eBPF mode loads and attaches programs/);
    // CAP_SYS_ADMIN stands in for these three (bpf_capable, perfmon_capable, bpf_net_capable).
    expect(run('ebpf', host({ capEff: capEff('CAP_SYS_ADMIN') })).errors).toEqual([]);
  });

  it('iptables as a node agent: CAP_NET_ADMIN, CAP_SYS_ADMIN (setns), each named alone', () => {
    for (const cap of ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN'] as const) {
      const r = run('iptables', host({ capEff: without(cap) }));
      expect(r.errors).toEqual([expect.stringMatching(new RegExp(`^missing capability ${cap}: iptables mode`))]);
    }
    expect(run('iptables', host({ capEff: without('CAP_NET_ADMIN', 'CAP_SYS_ADMIN') })).errors).toHaveLength(2);
  });

  it('iptables: /proc/1/ns/net unreadable means CAP_SYS_PTRACE is missing', () => {
    const r = run('iptables', host({ capEff: without('CAP_SYS_PTRACE'), hostNetns: 'EACCES' }));
    expect(r.errors).toEqual([expect.stringMatching(/^missing capability CAP_SYS_PTRACE: .*\/proc\/PID\/ns\/net/)]);
  });

  it("iptables inside a pod's netns (like istio-init) needs only CAP_NET_ADMIN", () => {
    expect(run('iptables', host({ capEff: capEff('CAP_NET_ADMIN', 'CAP_NET_RAW'), hostNetns: false })).errors).toEqual(
      [],
    );
  });

  it('CAP_NET_RAW: a warning with nft available, an error with --iptables-backend legacy', () => {
    const h = host({ capEff: without('CAP_NET_RAW') });
    expect(run('iptables', h).errors).toEqual([]);
    expect(run('iptables', h).warnings).toEqual([expect.stringMatching(/^no CAP_NET_RAW: .*only the nft backend/)]);
    expect(run('iptables', h, { iptablesBackend: 'legacy' }).errors).toEqual([
      expect.stringMatching(/^missing capability CAP_NET_RAW: the iptables legacy backend/),
    ]);
  });

  it('auto: without CAP_SYS_ADMIN it warns and falls back; without either mode it fails naming both', () => {
    const inPod = host({ capEff: without('CAP_SYS_ADMIN', 'CAP_BPF', 'CAP_PERFMON'), hostNetns: false });
    expect(run('auto', inPod).errors).toEqual([]);
    expect(run('auto', inPod).warnings).toEqual([expect.stringMatching(/CAP_SYS_ADMIN.*auto will choose iptables$/)]);
    const r = run('auto', host({ capEff: capEff('CAP_PERFMON', 'CAP_BPF') }));
    expect(r.errors[0]).toMatch(/^neither mode can run: missing capability CAP_SYS_ADMIN/);
    expect(r.errors.slice(1)).toEqual([
      expect.stringMatching(/^missing capability CAP_NET_ADMIN/),
      expect.stringMatching(/^missing capability CAP_SYS_ADMIN: iptables mode enters/),
    ]);
  });
});

describe('mounts', () => {
  it('no bpffs in a container: an error naming the path; on a host the agent mounts one itself', () => {
    const noBpf = MOUNTS.split('\n').slice(0, 3).join('\n');
    expect(run('ebpf', host({ mountText: noBpf })).errors).toEqual([
      expect.stringMatching(/^no bpffs at \/sys\/fs\/bpf\/meshredir: mount the host's \/sys\/fs\/bpf/),
    ]);
    expect(run('auto', host({ mountText: noBpf })).errors).toHaveLength(1);
    expect(run('ebpf', host({ mountText: noBpf, inContainer: false })).errors).toEqual([]);
    // iptables mode has no pins.
    expect(run('iptables', host({ mountText: noBpf })).errors).toEqual([]);
  });

  it('a bpffs mounted read-only, or one hidden by a later mount, is refused', () => {
    expect(run('ebpf', host({ mountText: MOUNTS.replace('bpf rw,', 'bpf ro,') })).errors).toEqual([
      'the bpffs at /sys/fs/bpf is mounted read-only: pins need it writable',
    ]);
    const hidden = `${MOUNTS}\ntmpfs /sys/fs/bpf tmpfs rw 0 0`;
    expect(run('ebpf', host({ mountText: hidden })).errors).toEqual([expect.stringMatching(/^no bpffs at/)]);
    // --bpffs in a bpffs mounted below another mount point still counts.
    const nested = `${MOUNTS}\nbpf /run/bpf/x bpf rw 0 0`;
    expect(preflight({ mode: 'ebpf', bpffs: '/run/bpf/x/meshredir' }, host({ mountText: nested })).errors).toEqual([]);
  });

  it("no cgroup2: an error in ebpf mode; a container's own cgroup view (cgroup.type at its root) in every mode", () => {
    const noCg = MOUNTS.split('\n')
      .filter((l) => !l.startsWith('cgroup2'))
      .join('\n');
    expect(run('ebpf', host({ mountText: noCg })).errors).toEqual([
      expect.stringMatching(/^no cgroup2 mount: mount the host's cgroup2/),
    ]);
    expect(run('auto', host({ mountText: noCg })).errors).toEqual([]);
    const nsView = host({ files: ['/sys/fs/cgroup/unified/cgroup.type'] });
    for (const m of ['auto', 'ebpf', 'iptables'] as const)
      expect(run(m, nsView).errors).toEqual([
        expect.stringMatching(/^cgroup2 at \/sys\/fs\/cgroup\/unified is not the root of the host's hierarchy/),
      ]);
  });

  it('a read-only cgroup2 is a warning (auto cannot probe), a covered one an error', () => {
    const ro = host({ mountText: MOUNTS.replace('cgroup2 rw,', 'cgroup2 ro,') });
    expect(run('auto', ro)).toEqual({ errors: [], warnings: [expect.stringMatching(/read-only: the probe cannot/)] });
    const covered = host({ mountText: `${MOUNTS}\ntmpfs /sys/fs/cgroup/unified tmpfs rw 0 0` });
    expect(run('ebpf', covered).errors).toEqual([expect.stringMatching(/is covered by a tmpfs mount/)]);
  });

  it("a host cgroup2 mounted over the runtime's own view at the same path is the one used", () => {
    const over = host({
      mountText: `${MOUNTS.replace('cgroup2 rw,', 'cgroup2 ro,')}\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0`,
    });
    expect(run('ebpf', over)).toEqual({ errors: [], warnings: [] });
  });
});

describe('requirePreflight', () => {
  it('throws one error listing every problem, returns the warnings otherwise', () => {
    expect(() =>
      requirePreflight(
        { mode: 'ebpf', bpffs: '/sys/fs/bpf/x' },
        host({ capEff: 0n, mountText: MOUNTS.split('\n').slice(0, 3).join('\n') }),
      ),
    ).toThrow(
      /^cannot run the agent in ebpf mode here:\n {2}missing capability CAP_SYS_ADMIN: .*\n {2}no bpffs at \/sys\/fs\/bpf\/x/,
    );
    expect(requirePreflight({ mode: 'iptables', bpffs: '/x' }, host({ capEff: without('CAP_NET_RAW') }))).toHaveLength(
      1,
    );
  });
});
