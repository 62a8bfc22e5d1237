// checks.ts — a verify run as a list of steps: each passes with a detail, or fails and ends the run.
import type { VerifyStep } from './mode.js';

/** Thrown by Checks.fail: ends a verify at the broken link (caught by Checks.run). */
class Broken extends Error {}

export class Checks {
  readonly steps: VerifyStep[] = [];

  ok(step: string, detail: string): void {
    this.steps.push({ step, ok: true, detail });
  }

  /** Records the broken link and ends the run. */
  fail(step: string, detail: string): never {
    this.steps.push({ step, ok: false, detail });
    throw new Broken(detail);
  }

  /** Runs the checks; the steps so far, whether they all passed or one failed. */
  static async run(fn: (c: Checks) => void | Promise<void>): Promise<VerifyStep[]> {
    const c = new Checks();
    try {
      await fn(c);
    } catch (e) {
      if (!(e instanceof Broken)) throw e;
    }
    return c.steps;
  }
}
