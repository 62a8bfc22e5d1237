// retry.ts — a BPF object load that a signal interrupted, tried again. The verifier gives up with EAGAIN
// when a signal is pending (a profiler's SIGPROF every millisecond, a SIGCHLD); libbpf retries each
// program a few times, then fails the whole object, which cannot be loaded twice: the caller opens it
// again (`reset`) and this runs the load again, a bounded number of times.
import { BpfError } from './errors.js';

/** Tries of a whole object load when each one is interrupted. */
export const LOAD_ATTEMPTS = 4;

/** Whether a load failed only because a signal interrupted it. */
export function interrupted(e: unknown): boolean {
  return e instanceof BpfError && e.code === 'EAGAIN';
}

/** `run()`; when it fails with `interrupted`, `reset()` and again, at most `attempts` runs in all. */
export function retryInterrupted<T>(run: () => T, reset: () => void, attempts = LOAD_ATTEMPTS): T {
  for (let i = 1; ; i++) {
    try {
      return run();
    } catch (e) {
      if (!interrupted(e) || i >= attempts) throw e;
      reset();
    }
  }
}
