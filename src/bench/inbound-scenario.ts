// inbound-scenario.ts — the bench's `inbound` scenario registered like the others: interception of
// connections arriving for a pod (direct, REDIRECT, TPROXY, sk_lookup), measured by inbound.ts with its
// own pod, policy and modes; the outbound scenarios' programs and rules are off while it runs.
import type { ScenarioDef } from './run.js';
import { WARMUP } from './types.js';
import { INBOUND_MODES, inboundSteps, runInbound } from './inbound.js';

export const inbound: ScenarioDef = {
  modes: INBOUND_MODES,
  steps: (modes) => inboundSteps(modes),
  async run(r) {
    r.use('direct');
    await runInbound({
      lab: r.lab,
      rounds: r.o.rounds,
      duration: r.o.duration,
      warmup: WARMUP,
      mrload: r.o.mrload,
      object: r.o.object,
      app: r.app,
      unavailable: r.unavailable,
      samples: r.samples,
      missing: r.missing,
      tick: (what) => r.tick(what),
    });
  },
};
