// dns.ts — the bench's DNS scenario (`--only dns`, issue 12): queries per second and latency of a pod's
// UDP lookups through DNS capture against the same dnsmasq asked directly. A pod of its own (netns and
// cgroup under the lab, its own EbpfMode and IptablesMode, like inbound.ts) with a DNS-only policy: the
// DNS proxy is an unmodified dnsmasq on 127.0.0.1:15053 in the pod's bypass cgroup, answering test.zone
// itself (nothing forwarded anywhere); the policy's nameserver is 10.53.0.2, a veth peer namespace where
// nothing listens on port 53 (a query that escaped capture is refused, never answered, never off the
// machine). direct: the client asks 127.0.0.1:15053; iptables and ebpf: it asks 10.53.0.2:53 and the
// capture takes it to dnsmasq. The client is bench/mrdns (one connected UDP socket per query, as glibc).
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import type { NetnsStatus } from '../modes/iptables/status.js';
import { dnsPolicies, dnsUnavailable } from '../modes/ebpf/dns-status.js';
import { sampleOf, type LoadResult, type Counters } from './checks.js';
import { benchPolicy, podModes } from './pod-modes.js';
import { rotate, msg, say, stop, type Run, type ScenarioDef } from './run.js';
import type { Sample } from './types.js';
import { WARMUP } from './types.js';

export const DNS_MODES = ['direct', 'iptables', 'ebpf'] as const;
type DnsMode = (typeof DNS_MODES)[number];
/** Queries in flight: 1 (latency of one lookup at a time) and 8 (queries per second under load). */
export const DNS_CONC = [1, 8];

const NAMESERVER = '10.53.0.2';
const PROXY_PORT = 15053;
const PROXY = `127.0.0.1:${PROXY_PORT}`;
const NAME = 'bench.test.zone';

let dnsmasqWhy: string | null | undefined;
/** dnsmasq serves every mode: without it, none can run. */
function dnsmasqMissing(): string | undefined {
  if (dnsmasqWhy === undefined) {
    try {
      execFileSync('dnsmasq', ['--version'], { stdio: 'ignore' });
      dnsmasqWhy = null;
    } catch (e) {
      dnsmasqWhy = `dnsmasq cannot run here: ${msg(e)}`;
    }
  }
  return dnsmasqWhy ?? undefined;
}

/** Why a DNS sample must not count (empty: valid). `captured`: queries the mode in force took. Pure. */
export function judgeDns(mode: string, l: LoadResult, c: Counters): string[] {
  const why: string[] = [];
  if (l.errors > 0)
    why.push(`${l.errors} query error(s): ${l.err_connect} refused, ${l.err_reset} timed out, ${l.err_other} other`);
  if (l.requests === 0) why.push('no query answered');
  const took = c.captured ?? 0;
  if (mode !== 'direct' && took !== l.conns) why.push(`${mode} captured ${took} of the ${l.conns} queries sent`);
  if (mode === 'direct' && took > 0) why.push(`${took} queries captured in a direct run`);
  if ((c.err_full ?? 0) > 0) why.push(`err_full ${c.err_full}`);
  return why;
}

export const dns: ScenarioDef = {
  modes: DNS_MODES,
  steps: (modes) => modes * DNS_CONC.length,
  missing: () => dnsmasqMissing(),
  async run(r, modes) {
    r.use('direct'); // the outbound scenarios' programs and rules are off while it runs
    await runDns(r, modes as DnsMode[]);
  },
};

async function runDns(r: Run, wanted: DnsMode[]): Promise<void> {
  const { lab } = r;
  const mrdns = join(dirname(r.o.mrload), 'mrdns');
  const pod = lab.cgroup('dnspod');
  const appCg = lab.cgroup('dnspod/app');
  const proxyCg = lab.cgroup('dnspod/proxy');
  const ns = lab.netns('dns');
  const upNs = lab.netns('dnsup');
  const ip = (...a: string[]) => execFileSync('ip', a, { stdio: 'pipe' });
  ip('-n', ns, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', upNs);
  ip('-n', ns, 'addr', 'add', '10.53.0.1/24', 'dev', 'eth0');
  ip('-n', upNs, 'addr', 'add', `${NAMESERVER}/24`, 'dev', 'eth0');
  ip('-n', ns, 'link', 'set', 'eth0', 'up');
  ip('-n', upNs, 'link', 'set', 'eth0', 'up');
  // One socket per query: many source ports. mrdns takes them in turn over 1024–65000, and UDP
  // conntrack entries here expire after 1 s (set once the rules are in), so that no query finds an
  // earlier one's entry on the same 4-tuple and every query of the iptables mode passes (and counts on)
  // its nat rule.

  const modes = podModes(lab, pod, r.o.object, 'dns');
  const { ebpf, ipt } = modes;
  const policy = benchPolicy(
    `apiVersion: meshredir/v1
kind: RedirectPolicy
metadata: { name: bench-dns }
spec:
  cgroup: ${pod}
  netns: /run/netns/${ns}
  proxy: { bypass: { cgroups: [${proxyCg}] } }
  dns: { proxy: "${PROXY}", nameservers: [${NAMESERVER}], tcp: false }
`,
    'bench-dns',
  );

  let inForce = '';
  // Where mrdns's source ports go on: each run continues where the last one stopped, so that a run
  // does not meet the previous run's conntrack entries either.
  const ports = { next: 1024 };
  const off = () => {
    inForce = '';
    modes.off();
  };
  const use = (mode: DnsMode) => {
    if (inForce === mode) return;
    off();
    if (mode === 'direct') {
      inForce = mode;
      return;
    }
    const res =
      mode === 'ebpf' ? ebpf.apply(ebpf.plan({ policies: [policy] })) : ipt.apply(ipt.plan({ policies: [policy] }));
    const bad = [
      ...res.policies.filter((p) => p.state !== 'applied').map((p) => p.reason ?? p.state),
      ...res.notes.filter((m) => m.level === 'error').map((m) => m.message),
    ];
    if (mode === 'ebpf') {
      const un = Object.entries(dnsUnavailable(ebpf.pins));
      if (un.length) bad.push(`DNS hooks unavailable: ${un.map(([n, w]) => `${n} (${w})`).join('; ')}`);
    } else {
      try {
        // after the rules: conntrack's sysctls exist once the nat table is in use
        execFileSync('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.netfilter.nf_conntrack_udp_timeout=1'], {
          stdio: 'pipe',
        });
      } catch (e) {
        bad.push(`cannot shorten the UDP conntrack timeout: ${msg(e)}`);
      }
    }
    if (bad.length) throw new Error(`${mode}: not applied: ${bad.join('; ')}`);
    inForce = mode;
  };
  const counters = (mode: DnsMode): Counters => {
    if (mode === 'ebpf') {
      const p = dnsPolicies(ebpf.pins).find((x) => x.policy === 'bench-dns');
      return { captured: p?.captured ?? 0, err_full: p?.counters.err_full ?? 0 };
    }
    if (mode === 'iptables') {
      const st = ipt.status().json.iptables as NetnsStatus[];
      return {
        captured: st.reduce((a, e) => a + Object.values(e.dnsCaptured ?? {}).reduce((x, y) => x + y, 0), 0),
      };
    }
    return {};
  };

  const pidFile = lab.tmpFile('dns-dnsmasq.pid', '');
  const server = lab.start(
    proxyCg,
    'dnsmasq',
    [
      '--keep-in-foreground',
      '--no-resolv',
      '--no-hosts',
      '--no-poll',
      '--conf-file=/dev/null',
      `--pid-file=${pidFile}`,
      '--user=root',
      '--bind-interfaces',
      '--listen-address=127.0.0.1',
      `--port=${PROXY_PORT}`,
      '--address=/test.zone/198.51.100.2',
      '--log-facility=-',
    ],
    undefined,
    ns,
  );
  try {
    await lab.listening(PROXY_PORT, server, ns); // dnsmasq listens on TCP too, once its UDP socket is up
    // ---- which modes exist here: tried for real, never faked ----
    const why = new Map<DnsMode, string>();
    for (const m of DNS_MODES.filter((m) => m !== 'direct')) {
      // (modes the run found unavailable are not in `wanted`: bench.ts recorded them missing)
      if (wanted.includes(m))
        try {
          use(m);
        } catch (e) {
          why.set(m, `cannot capture DNS here: ${msg(e)}`);
        }
    }
    off();
    for (const [mode, reason] of why) r.missing.push({ scenario: 'dns', mode, reason });
    const modes = wanted.filter((m) => !why.has(m));

    for (let round = 1; round <= r.o.rounds; round++) {
      for (const mode of rotate(modes, round)) {
        for (const conc of DNS_CONC) {
          const s = await measure(r, { mode, conc, round }, { mrdns, ns, appCg, server, ports }, use, counters);
          r.tick(
            `DNS over UDP, ${conc} in flight, ${mode}, round ${round}: ${say(s, `${Math.round(s.metrics.rate ?? 0)} queries/s, p50 ${(s.metrics.p50_us ?? 0).toFixed(1)} µs`)}`,
          );
        }
      }
    }
  } finally {
    try {
      off();
    } finally {
      await stop(server);
    }
  }
}

async function measure(
  r: Run,
  s: { mode: DnsMode; conc: number; round: number },
  x: {
    mrdns: string;
    ns: string;
    appCg: string;
    server: ReturnType<Run['lab']['start']>;
    ports: { next: number };
  },
  use: (m: DnsMode) => void,
  counters: (m: DnsMode) => Counters,
): Promise<Sample> {
  const lab = r.lab;
  const sample: Sample = {
    scenario: 'dns',
    mode: s.mode,
    variant: `udp, ${s.conc} in flight`,
    round: s.round,
    metrics: {},
  };
  try {
    use(s.mode);
    const c0 = counters(s.mode);
    const p0 = lab.cpu(x.server.child.pid!);
    const m0 = lab.machine();
    const t0 = performance.now();
    const target = s.mode === 'direct' ? PROXY : `${NAMESERVER}:53`;
    const out = await lab.run(
      x.ns,
      x.appCg,
      x.mrdns,
      [target, NAME, String(s.conc), String(r.o.duration), String(WARMUP), String(x.ports.next)],
      { timeoutMs: 120_000 },
    );
    const wall = (performance.now() - t0) / 1000;
    const m1 = lab.machine();
    const p1 = lab.cpu(x.server.child.pid!);
    const c1 = counters(s.mode);
    let l: LoadResult;
    try {
      l = JSON.parse(out) as LoadResult;
    } catch {
      throw new Error(`mrdns printed no result: ${JSON.stringify(out.slice(0, 300))}`);
    }
    // where its ports stopped (a port in use, e.g. dnsmasq's, is skipped: not conns ports later)
    x.ports.next = (l as LoadResult & { next_port?: number }).next_port ?? x.ports.next;
    const got = sampleOf(l, { before: c0, after: c1 }, { wall, server: [p0, p1], machine: [m0, m1] });
    sample.counters = got.counters;
    sample.metrics = got.metrics;
    const why = judgeDns(s.mode, l, sample.counters);
    if (why.length) sample.invalid = why;
  } catch (e) {
    sample.invalid = [`failed: ${msg(e)}`];
  }
  r.samples.push(sample);
  return sample;
}
