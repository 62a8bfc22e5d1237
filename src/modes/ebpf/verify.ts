// verify.ts — the eBPF self-check for a cgroup: policy → programs attached above it → redirected to the
// proxy → record for the proxy → getpeername → proxy listening. The connect itself is made by a throwaway
// process (verify-child.ts) in the cgroup and its netns, in TCP_REPAIR mode: the real hooks run and no
// packet is sent anywhere. Then the checks of each part that serves the policy (inbound).
import { fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import ipaddr from 'ipaddr.js';
import {
  CgKind,
  PolicyFlag,
  PROGRAMS,
  ON_DEMAND_PROGRAMS,
  OPTIONAL_PROGRAMS,
  AF_INET,
  type ProgramName,
} from '../../bpf/abi.js';
import { cgroupArgDir, cgroupDir, cgroupId, cgroupPathOf, requireCgroup2, within } from '../../util/host.js';
import { cgroupPathById, subtreePids } from '../../util/cgroups.js';
import { accepts, listenersOf } from '../../util/proc-net.js';
import { isLoopback } from '../../policy/addr.js';
import { Checks } from '../checks.js';
import type { VerifyRequest, VerifyStep } from '../mode.js';
import type { Pins } from './pins.js';
import type { ChildRequest, ChildResult } from './verify-child.js';
import type { EbpfPart } from './part.js';

/** The cgroup programs every installation has (DNS capture's are optional: a kernel may lack them). */
const CGROUP_PROGRAMS = (Object.keys(PROGRAMS) as ProgramName[]).filter(
  (n) => PROGRAMS[n].attach !== 'sk_msg' && !OPTIONAL_PROGRAMS.includes(n) && !ON_DEMAND_PROGRAMS.includes(n),
).length;

/** A cgroup whose nearest entry is a gate of the Kubernetes source, not a policy. */
interface Gated {
  gate: 'guard' | 'pass';
  /** The cgroup (policy path) that holds the entry. */
  at: string;
}

interface Coverage {
  gate?: undefined;
  policy: string;
  slot: number;
  proxy4: string | null;
  proxy6: string | null;
  /** The cgroup is a bypass (proxy) cgroup of the policy. */
  bypass: boolean;
  /** The policy's bypass (proxy) cgroups, as ids. */
  bypassIds: bigint[];
}

/** Which policy covers a cgroup, read from the pinned maps (nearest ancestor wins, like the kernel). */
function coverage(pins: Pins, dir: string): Coverage | Gated | null {
  const mount = requireCgroup2();
  const cgs = pins.entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups');
  const byId = new Map(cgs);
  const pols = new Map(
    pins.entries<
      [number, { flags: number; proxy4_addr: Buffer; proxy6_addr: Buffer; proxy4_port: number; proxy6_port: number }][]
    >('mr_policies'),
  );
  for (let d = dir; d.startsWith(mount); d = dirname(d)) {
    const id = cgroupId(d);
    const e = id === null ? undefined : byId.get(id);
    if (e && (e.kind === CgKind.GUARD || e.kind === CgKind.PASS))
      return { gate: e.kind === CgKind.GUARD ? 'guard' : 'pass', at: cgroupPathOf(d, mount) };
    if (e) {
      const p = pols.get(e.slot);
      const ip = (b: Buffer) => ipaddr.fromByteArray([...b]).toString();
      return {
        policy: [...pins.slots().entries()].find(([, s]) => s === e.slot)?.[0] ?? `slot ${e.slot}`,
        slot: e.slot,
        bypass: e.kind === CgKind.BYPASS,
        bypassIds: cgs.filter(([, v]) => v.slot === e.slot && v.kind === CgKind.BYPASS).map(([k]) => k),
        proxy4: p && p.flags & PolicyFlag.PROXY4 ? `${ip(p.proxy4_addr)}:${p.proxy4_port}` : null,
        proxy6: p && p.flags & PolicyFlag.PROXY6 ? `[${ip(p.proxy6_addr)}]:${p.proxy6_port}` : null,
      };
    }
    if (d === mount) break;
  }
  return null;
}

/** A process in the cgroup subtree: its netns is the pod's. */
export function podNetns(dir: string): string | null {
  const pid = subtreePids(dir)[0];
  return pid === undefined ? null : `/proc/${pid}/ns/net`;
}

function endpoint(ep: string): { family: 4 | 6; bytes: number[]; port: number } {
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(ep);
  if (!m) throw new Error(`${ep}: not an address:port`);
  const a = ipaddr.parse(m[1]!);
  return { family: a.kind() === 'ipv4' ? 4 : 6, bytes: a.toByteArray(), port: Number(m[2]) };
}

/** Runs the throwaway process (verify-child.ts) and returns what it saw. */
export function runChild(req: ChildRequest): Promise<ChildResult>;
export function runChild<R>(req: { kind: string }): Promise<R>;
export function runChild(req: object): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = fork(join(dirname(new URL(import.meta.url).pathname), 'verify-child.js'), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      timeout: 20_000,
    });
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    child.once('message', (m: { ok?: unknown; error?: string }) =>
      m.ok ? resolve(m.ok) : reject(new Error(m.error ?? 'no answer')),
    );
    child.once('exit', (code, sig) => reject(new Error(`exited ${code ?? sig}${err ? `: ${err.trim()}` : ''}`)));
    child.send(req);
  });
}

export function ebpfVerify(
  pins: Pins,
  o: VerifyRequest,
  parts: Pick<EbpfPart<unknown>, 'name' | 'covers' | 'verify'>[] = [],
): Promise<VerifyStep[]> {
  return Checks.run(async (c: Checks) => {
    const mount = requireCgroup2();
    const dir = cgroupArgDir(o.cgroup, mount);
    if (!existsSync(dir)) c.fail('cgroup', `${o.cgroup} does not exist (looked for ${dir})`);
    c.ok('cgroup', dir);

    if (!pins.installed())
      c.fail('installed', `no pins under ${pins.bpffs}: the agent has never run here (or was cleaned up)`);
    const cgLinks = pins.links().filter((l) => l.mapId === undefined);
    const broken = cgLinks.filter((l) => !l.attached);
    if (cgLinks.length < CGROUP_PROGRAMS || broken.length) {
      const which = broken.map((l) => l.name).join(', ') || `only ${cgLinks.length} cgroup links pinned`;
      c.fail('attached', `programs not attached: ${which}`);
    }
    const root = cgroupPathById(BigInt(cgLinks[0]!.cgroupId!));
    const rootDir = root === null ? null : cgroupDir(root, mount);
    if (!rootDir || !within(dir, rootDir))
      c.fail('attached', `programs are attached at ${root ?? '?'}, which does not contain ${o.cgroup}`);
    c.ok('attached', `${cgLinks.length} programs at ${root}`);

    const cov = coverage(pins, dir);
    if (!cov) c.fail('policy', `no policy covers ${o.cgroup} (nor any ancestor)`);
    if (cov.gate)
      c.fail(
        'policy',
        cov.gate === 'pass'
          ? `${o.cgroup} is${cov.at === cgroupPathOf(dir, mount) ? '' : ` below ${cov.at},`} a pod the Kubernetes source classified as not enrolled: its connections are never redirected`
          : `${o.cgroup} is below the guard on ${cov.at} and has no entry of its own: a pod the agent has not classified (yet); its connects are refused (EPERM, counted as guard_refused in status) until it has`,
      );
    if (cov.bypass)
      c.fail(
        'policy',
        `${o.cgroup} is a bypass (proxy) cgroup of policy ${cov.policy}: its connections are never redirected`,
      );
    // --dns checks DNS capture's chain alone; otherwise every part but DNS serving the policy.
    const serving = parts.filter((p) => (p.name === 'dns') === Boolean(o.dns) && p.covers(cov.slot));
    if (o.dns) {
      if (!serving.length) c.fail('dns policy', `policy ${cov.policy} captures no DNS (no spec.dns in force)`);
    } else if (!cov.proxy4 && !cov.proxy6 && serving.length) {
      c.ok('policy', `${cov.policy} (no outbound proxy: inbound only)`);
    } else if (!cov.proxy4 && !cov.proxy6 && parts.some((p) => p.name === 'dns' && p.covers(cov.slot))) {
      c.fail('policy', `${cov.policy} has no outbound proxy (it captures DNS only): check it with --dns`);
    } else await outboundChecks(c, pins, o, dir, cov, mount);
    for (const p of serving)
      await p.verify(c, { policy: cov.policy, slot: cov.slot, dir, bypassIds: cov.bypassIds }, o);
  });
}

/** The outbound chain: a connect from the cgroup is redirected, recorded, answered and listened for. */
async function outboundChecks(
  c: Checks,
  pins: Pins,
  o: VerifyRequest,
  dir: string,
  cov: Coverage,
  mount: string,
): Promise<void> {
  const dest = o.dest ?? (cov.proxy4 ? '192.0.2.1:80' : '[2001:db8::1]:80');
  const proxy = dest.startsWith('[') ? cov.proxy6 : cov.proxy4;
  if (!proxy) c.fail('policy', `policy ${cov.policy} has no proxy for ${dest.startsWith('[') ? 'IPv6' : 'IPv4'}`);
  c.ok('policy', `${cov.policy} → proxy ${proxy}`);

  const netns = o.netns ?? podNetns(dir);
  const pe = endpoint(proxy);
  let res: ChildResult;
  try {
    res = await runChild({
      cgroupDir: dir,
      netns,
      bpffs: pins.bpffs,
      dest: endpoint(dest),
      proxy: pe,
      proxyLoopback: isLoopback(pe),
    });
  } catch (e) {
    c.fail('probe', `the throwaway process failed: ${(e as Error).message}`);
  }
  const where = netns
    ? `in netns ${netns}`
    : 'in the current netns (no process in the cgroup to take the pod netns from; pass --netns)';
  if (res.connect !== 'ok') c.fail('redirect', `connect(${dest}) ${where} failed: ${res.connect}`);
  if (!res.record)
    c.fail(
      'redirect',
      `connect(${dest}) from ${res.local} was not redirected to ${proxy}: no record for the proxy to read (counters: meshredir status)`,
    );
  const recorded =
    res.record.family === AF_INET ? `${res.record.addr}:${res.record.port}` : `[${res.record.addr}]:${res.record.port}`;
  const want = ((d) =>
    `${d.family === 4 ? ipaddr.fromByteArray(d.bytes).toString() : `[${ipaddr.fromByteArray(d.bytes).toString()}]`}:${d.port}`)(
    endpoint(dest),
  );
  if (recorded !== want) c.fail('original destination', `the proxy would read ${recorded}, not ${dest}`);
  c.ok('redirect', `connect(${dest}) ${where} went to ${proxy}`);
  c.ok('original destination', `the proxy's SO_ORIGINAL_DST would answer ${recorded}`);
  if (res.peer !== want) c.fail('getpeername', `the application would see ${res.peer}, not ${dest}`);
  c.ok('getpeername', `the application sees ${res.peer}`);

  // The proxy listens in the pod netns (sidecar) or in the netns of its own processes (node proxy).
  const proxyPids = cov.bypassIds.flatMap((id) => {
    const path = cgroupPathById(id);
    return path === null ? [] : subtreePids(cgroupDir(path, mount));
  });
  const listening =
    res.proxyListening || proxyPids.some((pid) => accepts(listenersOf(`/proc/${pid}/net`), pe.bytes, pe.port));
  if (!listening)
    c.fail(
      'proxy',
      `nothing listens on ${proxy} (looked in the pod netns and in the netns of ${proxyPids.length} process(es) of the policy's bypass cgroups)`,
    );
  c.ok('proxy', `a socket listens on ${proxy}`);
}
