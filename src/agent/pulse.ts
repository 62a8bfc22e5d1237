// pulse.ts — between reconciles, takes the mode's pulse (what it watches: a proxy's listener closing or
// coming back) once a second, and asks for a reconcile at once when it reports a change.
import type { Mode } from '../modes/mode.js';
import type { Logger } from '../util/log.js';

/** How often the mode's pulse is taken between reconciles. */
export const PULSE_MS = 1000;

/** Starts taking `mode`'s pulse (none if the mode has none); clearInterval() on the result stops it. */
export function startPulse(mode: Mode, changed: (why: string) => void, log: Logger): NodeJS.Timeout | undefined {
  if (!mode.pulse) return undefined;
  return setInterval(() => {
    let why: string | null = null;
    try {
      why = mode.pulse!();
    } catch (e) {
      log.debug({ event: 'pulse_failed', err: e }, (e as Error).message);
    }
    if (why) changed(why);
  }, PULSE_MS);
}
