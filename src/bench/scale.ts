// scale.ts — the bench's scaling scenario (`scale`): redirect-only CRR with 0, 1,000 and 10,000
// excluded destinations in the policy (iptables rules ahead of the redirect; eBPF map entries).
import { D_REDIRECT, SERVER, rotate, say, type ScenarioDef } from './run.js';

const SIZES = [0, 1000, 10000];

export const scale: ScenarioDef = {
  modes: ['iptables', 'ebpf'],
  steps: (modes) => modes * SIZES.length, // × policy sizes
  pinned: true,
  async run(r, modes) {
    const ps = new Map(SIZES.map((n) => [n, r.policy({ proxy: SERVER, exclusions: n })]));
    for (let round = 1; round <= r.o.rounds; round++) {
      for (const n of SIZES) {
        for (const mode of rotate(modes, round)) {
          const x = await r.measure(
            { scenario: 'scale', mode, variant: String(n), round },
            { policy: ps.get(n)! },
            { target: D_REDIRECT, kind: 'crr', conc: 16 },
            { server: r.server },
            (l) => ({
              rate: l.rate,
              p50_us: l.p50_us,
              p99_us: l.p99_us,
            }),
          );
          r.tick(
            `CRR with ${n} exclusions, ${mode}, round ${round}: ${say(x, `${Math.round(x.metrics.rate ?? 0)} conn/s`)}`,
          );
        }
      }
    }
  },
};
