// retry.test.ts — an object load interrupted by a signal (EAGAIN) is tried again from a fresh object, a
// bounded number of times; any other failure is thrown at once (src/bpf/retry.ts).
import { describe, expect, it } from 'vitest';
import { constants } from 'node:os';
import { BpfError } from '../../src/bpf/errors.js';
import { LOAD_ATTEMPTS, interrupted, retryInterrupted } from '../../src/bpf/retry.js';

const eagain = () => new BpfError('load BPF object x', 'bpf_object__load', -constants.errno.EAGAIN);
const eperm = () => new BpfError('load BPF object x', 'bpf_object__load', -constants.errno.EPERM);

/** A load that fails `fails` times with `err`, then returns 'loaded'; counts runs and resets. */
function flaky(fails: number, err: () => Error) {
  const n = { runs: 0, resets: 0 };
  const run = () => {
    n.runs++;
    if (n.runs <= fails) throw err();
    return 'loaded';
  };
  return { n, run, reset: () => void n.resets++ };
}

describe('retryInterrupted', () => {
  it('tries again after EAGAIN, resetting before each new try', () => {
    const f = flaky(2, eagain);
    expect(retryInterrupted(f.run, f.reset)).toBe('loaded');
    expect(f.n).toEqual({ runs: 3, resets: 2 });
  });
  it('gives up after LOAD_ATTEMPTS interrupted tries, with the last error', () => {
    const f = flaky(100, eagain);
    expect(() => retryInterrupted(f.run, f.reset)).toThrow(/EAGAIN/);
    expect(f.n).toEqual({ runs: LOAD_ATTEMPTS, resets: LOAD_ATTEMPTS - 1 });
  });
  it('throws any other failure at once', () => {
    const f = flaky(1, eperm);
    expect(() => retryInterrupted(f.run, f.reset)).toThrow(/EPERM/);
    expect(f.n).toEqual({ runs: 1, resets: 0 });
    const g = flaky(1, () => new Error('EAGAIN in a message is not an errno'));
    expect(() => retryInterrupted(g.run, g.reset)).toThrow();
    expect(g.n.runs).toBe(1);
  });
  it('interrupted() is EAGAIN from libbpf only', () => {
    expect(interrupted(eagain())).toBe(true);
    expect(interrupted(eperm())).toBe(false);
    expect(interrupted(new Error('x'))).toBe(false);
  });
});
