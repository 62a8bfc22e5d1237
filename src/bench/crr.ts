// crr.ts — the bench's redirect-only scenario (`crr`): connect, one request/response and close against
// a server next to the app, direct or redirected to it by iptables or eBPF, and with the eBPF programs
// attached but the client outside the cgroups they cover; one client and two.
import { D_REDIRECT, SERVER, UNCOVERED, rotate, say, type ScenarioDef } from './run.js';

export const crr: ScenarioDef = {
  modes: ['direct', 'iptables', 'ebpf', UNCOVERED],
  steps: (modes) => modes * 2, // × (1 client, 2 clients)
  async run(r, modes) {
    const p = r.policy({ proxy: SERVER });
    for (let round = 1; round <= r.o.rounds; round++) {
      for (const mode of rotate(modes, round)) {
        // One client with 16 in flight, and two side by side with 8 each: if two clients get a
        // clearly higher rate, one client was the bottleneck.
        for (const clients of [1, 2]) {
          const x = await r.measure(
            { scenario: 'crr', mode, variant: clients === 1 ? '1B' : '1B, 2 clients', round },
            { policy: p },
            {
              target: mode === 'direct' || mode === UNCOVERED ? SERVER : D_REDIRECT,
              kind: 'crr',
              conc: 16 / clients,
              clients,
              ...(mode === UNCOVERED ? { cg: r.free } : {}),
            },
            { server: r.server },
            (l) => ({ rate: l.rate, p50_us: l.p50_us, p99_us: l.p99_us }),
          );
          r.tick(
            `redirect-only CRR, ${mode}, ${clients} client(s), round ${round}: ${say(x, `${Math.round(x.metrics.rate ?? 0)} conn/s`)}`,
          );
        }
      }
    }
  },
};
