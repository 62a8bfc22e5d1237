// dns-verify.ts — `verify --dns` in eBPF mode, with no query sent anywhere: DNS capture's programs are
// attached → the policy's DNS entry → per captured nameserver (a documentation address with `all`), a
// throwaway process in the pod's cgroup and netns connects a UDP socket (and, with tcp, a TCP_REPAIR one)
// to it, which sends nothing: the application's getpeername() names the nameserver, the socket really
// points at the proxy (/proc/<pid>/net), its cookie is in mr_dns_socks with that nameserver, and the entry
// is gone once it is closed (sock_release) → something takes UDP and TCP on the proxy address.
import ipaddr from 'ipaddr.js';
import { cgroupPathById, subtreePids } from '../../util/cgroups.js';
import { cgroupDir, requireCgroup2 } from '../../util/host.js';
import { accepts, listenersOf, udpServersOf } from '../../util/proc-net.js';
import type { Checks } from '../checks.js';
import type { VerifyRequest } from '../mode.js';
import type { Covered } from './part.js';
import type { Pins } from './pins.js';
import { dnsPolicies, dnsUnavailable } from './dns-status.js';
import { podNetns, runChild } from './verify.js';
import { epText, type DnsChildResult, type Ep } from './dns-probe.js';

/** What `all: true` is checked with: documentation addresses (never contacted; the connect sends nothing). */
const ANY_NAMESERVER = { 4: '192.0.2.53', 6: '2001:db8::53' } as const;

function ep(text: string, port: number): Ep {
  const a = ipaddr.parse(text.replace(/^\[|\]$/g, ''));
  return { family: a.kind() === 'ipv4' ? 4 : 6, bytes: a.toByteArray(), port };
}

function parseEp(text: string): Ep {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(text)!;
  return ep(m[1]!, Number(m[2]));
}

export async function dnsVerify(pins: Pins, c: Checks, cov: Covered, req: VerifyRequest): Promise<void> {
  // As the DNS part asks before it writes entries: mr_dns_release, attached on demand (release.ts), must be
  // attached while a policy captures DNS, or captured sockets' entries would outlive them.
  const off = Object.entries(dnsUnavailable(pins, 'write'));
  if (off.length) c.fail('dns links', `DNS capture is not attached: ${off.map(([n, w]) => `${n} (${w})`).join('; ')}`);
  c.ok('dns links', 'mr_dns_release, mr_dns_recv4/6 and mr_dns_send4/6 attached, with getpeername4/6 and connect4/6');

  const st = dnsPolicies(pins).find((p) => p.slot === cov.slot);
  if (!st) c.fail('dns policy', `policy ${cov.policy} has no entry in mr_dns_pol`);
  const proxies = { 4: parseEp(st.proxy), ...(st.proxy6 ? { 6: parseEp(st.proxy6) } : {}) } as Partial<
    Record<4 | 6, Ep>
  >;
  const dests =
    st.nameservers === 'all'
      ? ([4, 6] as const).filter((f) => proxies[f]).map((f) => ep(ANY_NAMESERVER[f], 53))
      : st.nameservers.map((n) => ep(n, 53)).filter((d) => proxies[d.family]);
  c.ok(
    'dns policy',
    `${cov.policy} → ${[st.proxy, st.proxy6].filter(Boolean).join(', ')} for ${st.nameservers === 'all' ? 'every port-53 destination' : st.nameservers.join(', ')}${st.tcp ? ' (UDP and TCP)' : ' (UDP only)'}`,
  );

  const netns = req.netns ?? podNetns(cov.dir);
  const targets = dests.flatMap((dest) => (st.tcp ? ['udp', 'tcp'] : ['udp']).map((proto) => ({ dest, proto })));
  let res: DnsChildResult;
  try {
    res = await runChild<DnsChildResult>({
      kind: 'dns',
      cgroupDir: cov.dir,
      netns,
      bpffs: pins.bpffs,
      targets,
      proxies: Object.values(proxies),
    } as { kind: string });
  } catch (e) {
    c.fail('probe', `the throwaway process failed: ${(e as Error).message}`);
  }
  const where = netns ? `in netns ${netns}` : 'in the current netns (no process in the cgroup; pass --netns)';
  targets.forEach((t, i) => {
    const r = res.results[i]!;
    const dest = epText(t.dest);
    const proxy = epText(proxies[t.dest.family]!);
    const what = `${t.proto.toUpperCase()} connect(${dest}) ${where}`;
    if (r.connect !== 'ok') c.fail('dns capture', `${what} failed: ${r.connect}`);
    if (r.real !== proxy)
      c.fail('dns capture', `${what} points at ${r.real ?? '(not found in /proc/net)'}, not the proxy ${proxy}`);
    if (r.peer !== dest) c.fail('dns getpeername', `after ${what} the application would see ${r.peer}, not ${dest}`);
    if (r.entry !== dest)
      c.fail('dns state', `${what}: mr_dns_socks has ${r.entry ? `the peer ${r.entry}` : 'no entry'} for the socket`);
    if (r.leftAfterClose) c.fail('dns release', `${what}: the socket's entry outlived its close`);
  });
  const list = [...new Set(targets.map((t) => `${t.proto.toUpperCase()} ${epText(t.dest)}`))].join(', ');
  c.ok('dns capture', `${list}: each went to the proxy (the socket's real peer), no packet sent`);
  c.ok('dns getpeername', 'the application sees the nameserver it asked as the peer');
  c.ok('dns state', "each socket's entry in mr_dns_socks named that nameserver, and went when it closed");

  // The proxy takes UDP and TCP in the pod netns (sidecar) or in the netns of its own processes (node proxy).
  const mount = requireCgroup2();
  const proxyNets = cov.bypassIds.flatMap((id) => {
    const path = cgroupPathById(id);
    return path === null ? [] : subtreePids(cgroupDir(path, mount)).map((pid) => `/proc/${pid}/net`);
  });
  Object.values(proxies).forEach((p, i) => {
    const seen = res.listening[i]!;
    const udp = seen.udp || proxyNets.some((n) => accepts(udpServersOf(n), p.bytes, p.port));
    const tcp = !st.tcp || seen.tcp || proxyNets.some((n) => accepts(listenersOf(n), p.bytes, p.port));
    if (!udp || !tcp)
      c.fail(
        'dns proxy',
        `nothing takes ${!udp ? 'UDP' : 'TCP'} on ${epText(p)} (looked in the pod netns and in the netns of ${proxyNets.length} process(es) of the policy's bypass cgroups): queries would be refused`,
      );
  });
  c.ok(
    'dns proxy',
    `something takes UDP${st.tcp ? ' and TCP' : ''} on ${Object.values(proxies).map(epText).join(', ')}`,
  );
}
