// proxy.ts — the bench's through-proxy scenario (`proxy`): an app's connections to an upstream server
// through an unmodified HAProxy, direct (no proxy), to the proxy explicitly, or redirected to it by
// iptables, eBPF or eBPF with the sk_msg fast path; connect/request/close rate and request/response latency.
import { execFileSync } from 'node:child_process';
import type { LabProc } from './lab.js';
import { startHaproxy } from './haproxy.js';
import { baseMode } from './types.js';
import { UPSTREAM, fastNote, msg, rotate, say, stop, type ScenarioDef } from './run.js';

let haproxyWhy: string | null | undefined;
/** Why HAProxy cannot run here (undefined: it can); asked once. */
function haproxyMissing(): string | undefined {
  if (haproxyWhy === undefined) {
    try {
      execFileSync('haproxy', ['-v'], { stdio: 'ignore' });
      haproxyWhy = null;
    } catch (e) {
      haproxyWhy = `haproxy cannot run here: ${msg(e)}`;
    }
  }
  return haproxyWhy ?? undefined;
}

export const proxy: ScenarioDef = {
  modes: ['direct', 'explicit', 'iptables', 'ebpf', 'ebpf+sk_msg'],
  steps: (modes) => modes * 2, // × (crr, rr)
  missing: (mode) => (mode === 'direct' ? undefined : haproxyMissing()),
  aa: true,
  async run(r, modes) {
    const { lab } = r;
    const upstream = lab.start(r.srvCg, r.o.mrload, ['server', UPSTREAM], undefined, lab.upNs);
    await lab.listening(9000, upstream, lab.upNs);
    let haproxy: LabProc | undefined;
    if (!haproxyMissing()) {
      // In the policy's proxy (bypass) cgroup and as uid 1337: its own connections are never
      // redirected, by either mode, and the fast path accepts its sockets. Explicit: 15002 to the upstream.
      haproxy = startHaproxy(lab, r.proxyCg, 'haproxy.cfg', UPSTREAM);
      await lab.listening(15002, haproxy);
    }
    const p = r.policy({ proxy: '127.0.0.1:15001' });
    const pa = r.policy({ proxy: '127.0.0.1:15001', accelerate: true });
    for (let round = 1; round <= r.o.rounds; round++) {
      for (const mode of rotate(modes, round)) {
        const as = baseMode(mode);
        const setup = { policyMode: as === 'explicit' ? 'direct' : as, policy: as === 'ebpf+sk_msg' ? pa : p };
        const target = as === 'explicit' ? '127.0.0.1:15002' : UPSTREAM;
        const watch = { server: upstream, haproxy: as === 'direct' ? undefined : haproxy };
        const viaProxy = { viaProxy: as.startsWith('ebpf') };
        const crr = await r.measure(
          { scenario: 'proxy', mode, variant: 'crr', round },
          setup,
          { target, kind: 'crr', conc: 16 },
          watch,
          (l) => ({ rate: l.rate }),
          viaProxy,
        );
        r.tick(
          `through HAProxy, CRR, ${mode}, round ${round}: ${say(crr, `${Math.round(crr.metrics.rate ?? 0)} conn/s${fastNote(crr)}`)}`,
        );
        const rr = await r.measure(
          { scenario: 'proxy', mode, variant: 'rr', round },
          setup,
          { target, kind: 'rr', conc: 1 },
          watch,
          (l) => ({ rate: l.rate, p50_us: l.p50_us, p99_us: l.p99_us }),
          viaProxy,
        );
        r.tick(
          `through HAProxy, RR, ${mode}, round ${round}: ${say(rr, `p50 ${(rr.metrics.p50_us ?? 0).toFixed(1)} µs${fastNote(rr)}`)}`,
        );
      }
    }
    r.use('direct');
    for (const x of [haproxy, upstream]) if (x) await stop(x);
  },
};
