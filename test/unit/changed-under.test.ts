// changed-under.test.ts — which errors of a reconcile the eBPF mode calls "changed under it" (the agent
// then reconciles again at once, which pins a deleted pin again), and which stay failures.
import { describe, expect, it } from 'vitest';
import { BpfError } from '../../src/bpf/errors.js';
import { EbpfMode } from '../../src/modes/ebpf/index.js';

const mode = new EbpfMode({ bpffs: '/nonexistent/meshredir-unit', attach: { cgroupRoot: '/nonexistent' } } as never);

describe('EbpfMode.changedUnder', () => {
  it('a pinned object that vanished (bpf_obj_get ENOENT) is a change under the reconcile', () => {
    const e = new BpfError('open pinned map /sys/fs/bpf/meshredir/maps/mr_orig', 'bpf_obj_get', -2);
    expect(mode.changedUnder(e)).toBe('open pinned map /sys/fs/bpf/meshredir/maps/mr_orig: it vanished');
  });
  it('anything else stays a failure', () => {
    expect(mode.changedUnder(new BpfError('open pinned map x', 'bpf_obj_get', -1))).toBeNull(); // EPERM
    expect(mode.changedUnder(new BpfError('load', 'bpf_object__load', -2))).toBeNull();
    expect(mode.changedUnder(new Error('ENOENT'))).toBeNull();
    expect(mode.changedUnder('boom')).toBeNull();
  });
});
