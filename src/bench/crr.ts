// crr.ts — the bench's redirect-only scenario (`crr`): connect, one request/response and close against
// a server next to the app, direct or redirected to it by iptables or eBPF, eBPF with a `meshredir trace`
// reading every decision, with the eBPF programs attached but the client outside the cgroups they cover,
// and with the client covered but dialling a destination the policy lets pass; one client and two.
import { BYPASSED, baseMode } from './types.js';
import { D_REDIRECT, SERVER, TRACED, UNCOVERED, msg, rotate, say, type ScenarioDef } from './run.js';
import { startTracer, type BenchTracer } from './tracer.js';

const BYPASS_PROXY = '127.0.0.1:15001'; // nothing listens: nothing is redirected there

export const crr: ScenarioDef = {
  modes: ['direct', 'iptables', 'ebpf', TRACED, UNCOVERED, BYPASSED],
  steps: (modes) => modes * 2, // × (1 client, 2 clients)
  aa: true,
  pinned: true,
  async run(r, modes) {
    const p = r.policy({ proxy: SERVER });
    // The bypassed client dials the server at 127.0.0.1, which this policy's proxy is not: the loopback
    // bypass, a covered pod's usual connection that is not redirected (not the earlier proxy-address one).
    const pBypass = r.policy({ proxy: BYPASS_PROXY });
    for (let round = 1; round <= r.o.rounds; round++) {
      for (const mode of rotate(modes, round)) {
        const as = baseMode(mode);
        // One client with 16 in flight, and two side by side with 8 each: if two clients get a
        // clearly higher rate, one client was the bottleneck.
        for (const clients of [1, 2]) {
          const s = { scenario: 'crr', mode, variant: clients === 1 ? '1B' : '1B, 2 clients', round };
          // The traced mode: the programs in force first (the trace reads their pins), then the reader.
          let tracer: BenchTracer | undefined;
          let failed: string | undefined;
          if (as === TRACED) {
            try {
              r.use(as, p);
              tracer = await startTracer(r.o.cli, r.lab.bpffs);
            } catch (e) {
              failed = `trace did not start: ${msg(e)}`;
            }
          }
          const x = await r.measure(
            s,
            { policy: as === BYPASSED ? pBypass : p },
            {
              target: as === 'direct' || as === UNCOVERED || as === BYPASSED ? SERVER : D_REDIRECT,
              kind: 'crr',
              conc: 16 / clients,
              clients,
              ...(as === UNCOVERED ? { cg: r.free } : {}),
            },
            { server: r.server, ...(tracer ? { trace: tracer } : {}) },
            (l) => ({ rate: l.rate, p50_us: l.p50_us, p99_us: l.p99_us }),
          );
          if (as === TRACED) {
            try {
              if (tracer) {
                const t = await tracer.stop();
                // Events printed and lost (ring full) per connection the load made, warm-up included.
                x.metrics.trace_events = t.events;
                x.metrics.trace_lost = t.lost;
                if (t.events === 0) failed ??= 'the trace printed no event: the programs did not write';
              }
            } catch (e) {
              failed ??= `trace: ${msg(e)}`;
            }
            if (failed) x.invalid = [...(x.invalid ?? []), failed];
          }
          r.tick(
            `redirect-only CRR, ${mode}, ${clients} client(s), round ${round}: ${say(x, `${Math.round(x.metrics.rate ?? 0)} conn/s${x.metrics.trace_events === undefined ? '' : `, ${x.metrics.trace_events} events traced, ${x.metrics.trace_lost} lost`}`)}`,
          );
        }
      }
    }
  },
};
