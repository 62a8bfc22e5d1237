// inbound-verify.ts — the inbound part's self-check for a covered cgroup, with no packet sent: the link is
// on the pod's netns → the pod's addresses are in mr_in_addrs → a listener is registered per family and
// is the proxy's live listener (found in the pod netns, taken again, SO_COOKIE compared, closed) → the
// attached program itself (BPF_PROG_TEST_RUN, by the link's program id) hands a lookup for a pod address
// to that very socket, and leaves an excluded port to the app.
import { closeSync, statSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { lib } from '../../sys/libbpf.js';
import { BpfError } from '../../bpf/errors.js';
import { closeFd } from '../../bpf/fd.js';
import { Action, InFlag } from '../../bpf/abi.js';
import { runSkLookup, SK_PASS } from '../../bpf/inbound.js';
import {
  findListeners,
  parseTcpTables,
  socketFacts,
  tableListeners,
  takeFd,
  type TableListener,
} from '../../bpf/listeners.js';
import { cgroupPathById, subtreePids } from '../../util/cgroups.js';
import { cgroupDir, requireCgroup2 } from '../../util/host.js';
import { NetnsHandle, pidsInNetns, runIn } from '../netns.js';
import type { Checks } from '../checks.js';
import type { VerifyRequest } from '../mode.js';
import type { Covered } from './part.js';
import type { Pins } from './pins.js';
import { inboundPolicies } from './inbound-status.js';
import { podAddresses } from './inbound-plan.js';

/** Documentation addresses as the client of the test runs (nothing is sent anywhere). */
const TEST_SOURCE = { 4: [192, 0, 2, 1], 6: [0x20, 0x01, 0x0d, 0xb8, ...new Array<number>(11).fill(0), 1] };
const TEST_SOURCE_TEXT = { 4: '192.0.2.1', 6: '2001:db8::1' };
const EOPNOTSUPP = 95;

interface Holder {
  pid: number;
  fd: number;
  at: string;
  reuseport: boolean;
}

export async function inboundVerify(pins: Pins, c: Checks, cov: Covered, req: VerifyRequest): Promise<void> {
  const st = inboundPolicies(pins).find((p) => p.slot === cov.slot);
  const link = st?.link;
  if (!st || !link) c.fail('inbound link', `policy ${cov.policy} has no inbound link (links/sklookup-${cov.slot})`);
  if (!link.attached || link.progId === undefined)
    c.fail('inbound link', `the netns of ${cov.policy}'s link is gone (defunct); the next reconcile removes it`);
  const pid = subtreePids(cov.dir)[0];
  const netnsPath = req.netns ?? (pid === undefined ? null : `/proc/${pid}/ns/net`);
  if (netnsPath) {
    let ino: number;
    try {
      ino = statSync(netnsPath).ino;
    } catch (e) {
      c.fail('inbound link', `${netnsPath}: ${(e as Error).message}`);
    }
    if (ino !== link.netnsIno)
      c.fail(
        'inbound link',
        `the pod's netns (${netnsPath}) is netns:[${ino}], but the link is on netns:[${link.netnsIno}] (the next reconcile moves it)`,
      );
  }
  c.ok('inbound link', `mr_sklookup (prog ${link.progId}) on netns:[${link.netnsIno}] through link ${link.id}`);

  if (st.addresses.length === 0) c.fail('inbound addresses', `no address of ${cov.policy}'s pod is in mr_in_addrs`);
  let table: TableListener[] = [];
  if (netnsPath) {
    const ns = NetnsHandle.open(netnsPath);
    try {
      const live = podAddresses(ns).map((a) => a.text);
      const missing = live.filter((a) => !st.addresses.includes(a));
      if (missing.length)
        c.fail(
          'inbound addresses',
          `the pod's address(es) ${missing.join(', ')} are not in mr_in_addrs: connections to them are not intercepted (the next reconcile adds them)`,
        );
      table =
        pid !== undefined && !req.netns
          ? tableListeners(pid)
          : parseTcpTables(runIn(ns, ['cat', '/proc/net/tcp', '/proc/net/tcp6']));
    } finally {
      ns.close();
    }
  }
  c.ok('inbound addresses', `${st.addresses.join(', ')} in mr_in_addrs (whenNoProxy ${st.whenNoProxy})`);

  // The registered sockets, against the listeners the proxy's processes hold in the pod netns now.
  const families = ([4, 6] as const).filter((f) => st.addresses.some((a) => a.includes(':') === (f === 6)));
  const holders = new Map<4 | 6, Holder>();
  const owners = ownerPids(cov, link.netnsIno, netnsPath);
  for (const f of families) {
    const cookie = f === 4 ? st.listeners.ipv4 : st.listeners.ipv6;
    if (cookie === null)
      c.fail(
        'inbound listener',
        `no IPv${f} listener registered: inbound IPv${f} connections are ${st.whenNoProxy === 'pass' ? 'passed to the app' : 'refused'}`,
      );
    const h = netnsPath ? holderOf(table, owners, BigInt(cookie)) : null;
    if (netnsPath && !h)
      c.fail(
        'inbound listener',
        `the registered IPv${f} socket (cookie ${cookie}) is not a listener any process of the policy holds in the pod netns`,
      );
    if (h) holders.set(f, h);
  }
  c.ok(
    'inbound listener',
    families
      .map((f) => {
        const h = holders.get(f);
        const cookie = f === 4 ? st.listeners.ipv4 : st.listeners.ipv6;
        return `IPv${f}: cookie ${cookie}${h ? `, pid ${h.pid} fd ${h.fd} (${h.at})` : ' (pod netns unknown: pass --netns to find its holder)'}`;
      })
      .join('; '),
  );

  // The attached program, on made-up lookups.
  const progFd: number = lib.bpf_prog_get_fd_by_id(link.progId);
  if (progFd < 0) c.fail('inbound test run', `program ${link.progId} is gone`);
  try {
    const ports = pins
      .entries<[{ slot: number; port: number }, number][]>('mr_in_ports')
      .filter(([k]) => k.slot === cov.slot);
    const excluded = ports.filter(([, a]) => a === Action.EXCLUDE).map(([k]) => k.port);
    const included = ports.filter(([, a]) => a === Action.INCLUDE).map(([k]) => k.port);
    const flags = pins
      .entries<[{ family: number }, { slot: number; flags: number }][]>('mr_in_addrs')
      .find(([, v]) => v.slot === cov.slot)![1].flags;
    const port =
      flags & InFlag.INCLUDE_PORTS ? included[0]! : [8080, 80, 443, 9080, 3000].find((p) => !excluded.includes(p))!;
    const said: string[] = [];
    for (const f of families) {
      const local = st.addresses.find((a) => a.includes(':') === (f === 6))!;
      const bytes = ipaddr.parse(local).toByteArray();
      const what = `${TEST_SOURCE_TEXT[f]}:40000 → ${f === 6 ? `[${local}]` : local}:${port}`;
      const want = BigInt((f === 4 ? st.listeners.ipv4 : st.listeners.ipv6)!);
      try {
        const r = runSkLookup(progFd, {
          family: f,
          remote: TEST_SOURCE[f],
          remotePort: 40000,
          local: bytes,
          localPort: port,
        });
        if (r.verdict !== SK_PASS || r.cookie !== want)
          c.fail(
            'inbound test run',
            `${what}: the program ${r.verdict === SK_PASS ? 'passed it' : 'dropped it'} with ${r.cookie === 0n ? 'no socket' : `socket ${r.cookie}`}, not the proxy's listener (cookie ${want})`,
          );
        said.push(`${what} → the proxy's listener (cookie ${want})`);
      } catch (e) {
        // A listener with SO_REUSEPORT: the kernel's test run stops with EOPNOTSUPP once the program has
        // selected a socket, before naming it; the only socket it can select is the one registered above.
        if (!(e instanceof BpfError) || e.errno !== EOPNOTSUPP || !holders.get(f)?.reuseport) throw e;
        said.push(`${what} → a socket selected (the listener has SO_REUSEPORT: the test run cannot name it)`);
      }
    }
    c.ok('inbound test run', `BPF_PROG_TEST_RUN of the attached program: ${said.join('; ')}`);
    if (excluded.length) {
      const f = families[0]!;
      const local = st.addresses.find((a) => a.includes(':') === (f === 6))!;
      const r = runSkLookup(progFd, {
        family: f,
        remote: TEST_SOURCE[f],
        remotePort: 40000,
        local: ipaddr.parse(local).toByteArray(),
        localPort: excluded[0]!,
      });
      if (r.verdict !== SK_PASS || r.cookie !== 0n)
        c.fail('inbound excluded port', `port ${excluded[0]} is excluded, yet the program selected socket ${r.cookie}`);
      c.ok('inbound excluded port', `port ${excluded[0]} goes to the app (no socket selected)`);
    }
  } finally {
    closeFd(progFd);
  }
}

/** Who may hold the listener: the policy's bypass cgroups' processes, the cgroup's, and the pod netns's. */
function ownerPids(cov: Covered, ino: number, netnsPath: string | null): number[] {
  const mount = requireCgroup2();
  const bypass = cov.bypassIds.flatMap((id) => {
    const path = cgroupPathById(id);
    return path === null ? [] : subtreePids(cgroupDir(path, mount));
  });
  let inNetns: number[] = [];
  if (netnsPath) {
    const st = statSync(netnsPath, { bigint: true });
    if (Number(st.ino) === ino) inNetns = pidsInNetns(`${st.dev}:${st.ino}`);
  }
  return [...new Set([...bypass, ...subtreePids(cov.dir), ...inNetns])];
}

/** The listener of the table whose socket cookie is `cookie`, and who holds it. */
function holderOf(table: TableListener[], owners: number[], cookie: bigint): Holder | null {
  for (const port of new Set(table.map((l) => l.port))) {
    for (const l of findListeners({ table, ownerPids: owners, port })) {
      let fd: number;
      try {
        fd = takeFd(l.pid, l.fd);
      } catch {
        continue;
      }
      try {
        const s = socketFacts(fd);
        if (s.cookie !== cookie) continue;
        const text = ipaddr.fromByteArray(s.local.bytes).toString();
        const ip = s.family === 4 ? text : `[${text}]`;
        return { pid: l.pid, fd: l.fd, at: `${ip}:${s.local.port}`, reuseport: s.reuseport };
      } finally {
        closeSync(fd);
      }
    }
  }
  return null;
}
