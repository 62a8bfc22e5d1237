// hop.ts — the bench's fast-path scenario (`hop`): the app↔proxy hop alone, eBPF redirection with and
// without the sk_msg fast path, request/response and one-direction stream at several message sizes.
import { HOP_ECHO, HOP_SINK, D_REDIRECT, fastNote, rotate, say, stop, type ScenarioDef } from './run.js';

export const hop: ScenarioDef = {
  modes: ['ebpf', 'ebpf+sk_msg'],
  steps: (modes, hopSizes) => modes * hopSizes.length * 2, // × sizes × (rr, stream)
  async run(r, modes) {
    const { lab } = r;
    // The "proxy" is an echo server (request/response) or a sink (stream), both in the policy's proxy
    // cgroup, reached by redirection.
    const echo = lab.start(r.proxyCg, r.o.mrload, ['server', HOP_ECHO]);
    const sink = lab.start(r.proxyCg, r.o.mrload, ['sink', HOP_SINK]);
    await lab.listening(9001, echo);
    await lab.listening(9002, sink);
    const pol = {
      rr: { ebpf: r.policy({ proxy: HOP_ECHO }), 'ebpf+sk_msg': r.policy({ proxy: HOP_ECHO, accelerate: true }) },
      stream: { ebpf: r.policy({ proxy: HOP_SINK }), 'ebpf+sk_msg': r.policy({ proxy: HOP_SINK, accelerate: true }) },
    };
    for (let round = 1; round <= r.o.rounds; round++) {
      for (const size of r.hopSizes) {
        for (const mode of rotate(modes as ('ebpf' | 'ebpf+sk_msg')[], round)) {
          const rr = await r.measure(
            { scenario: 'hop', mode, variant: `rr ${size}B`, round },
            { policy: pol.rr[mode] },
            { target: D_REDIRECT, kind: 'rr', conc: 1, size },
            { server: echo },
            (l) => ({
              rate: l.rate,
              p50_us: l.p50_us,
              p99_us: l.p99_us,
            }),
          );
          r.tick(
            `app→proxy hop, RR ${size} B, ${mode}, round ${round}: ${say(rr, `p50 ${(rr.metrics.p50_us ?? 0).toFixed(1)} µs${fastNote(rr)}`)}`,
          );
          const st = await r.measure(
            { scenario: 'hop', mode, variant: `stream ${size}B`, round },
            { policy: pol.stream[mode] },
            { target: D_REDIRECT, kind: 'stream', conc: 1, size },
            { server: sink },
            (l) => ({
              mbytes_s: l.mbytes_s,
              e2e_mbytes_s: l.e2e_mbytes_s,
              drain_ms: l.drain_ms,
            }),
          );
          r.tick(
            `app→proxy hop, stream ${size} B, ${mode}, round ${round}: ${say(st, `${(st.metrics.mbytes_s ?? 0).toFixed(0)} MB/s${fastNote(st)}`)}`,
          );
        }
      }
    }
    r.use('direct');
    await stop(echo);
    await stop(sink);
  },
};
