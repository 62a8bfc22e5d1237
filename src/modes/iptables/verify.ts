// verify.ts — the iptables-mode self-check for a cgroup (sends no packet): a policy applied for it → its
// processes are in the netns the rules are in → the rules are there as applied → they would redirect a
// connect to `dest` by the cgroup's process → something listens on the redirect port; then, for a policy
// with inbound interception, its own chain (verify-inbound.ts).
import { readFileSync } from 'node:fs';
import ipaddr from 'ipaddr.js';
import { isLoopback } from '../../policy/addr.js';
import { cgroupArgDir, requireCgroup2 } from '../../util/host.js';
import { subtreePids } from '../../util/cgroups.js';
import { accepts, parseListeners } from '../../util/proc-net.js';
import { underRoot } from '../../policy/scope.js';
import { REDIRECT_TARGET } from './rules.js';
import { NetnsHandle, findNetns, hostNetnsIds, idOf } from '../netns.js';
import { parseNat, evaluate, type Conn } from './evaluate.js';
import { bin, ours, type Runner } from './run.js';
import { fkey, readState, type Family, type NetnsState } from './state.js';
import { staleCgroups } from './plan.js';
import { Checks } from '../checks.js';
import { appliedInbound, checkInbound } from './verify-inbound.js';
import { appliedDns, checkDns } from './verify-dns.js';
import type { VerifyRequest } from '../mode.js';

/** The owner match looks at the socket's file credentials: a process's fs ids (4th field). */
function procIds(pid: number): { uid: number; gid: number } {
  try {
    const st = readFileSync(`/proc/${pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(st)?.[1] ?? 0);
    const gid = Number(/^Gid:\s+\d+\s+\d+\s+\d+\s+(\d+)/m.exec(st)?.[1] ?? 0);
    return { uid, gid };
  } catch {
    return { uid: 0, gid: 0 };
  }
}

export async function iptablesVerify(run: Runner, stateFile: string, o: VerifyRequest) {
  return Checks.run(async (c: Checks) => {
    const mount = requireCgroup2();
    const dir = cgroupArgDir(o.cgroup, mount);
    const rel = dir === mount ? '/' : dir.slice(mount.length);
    if (idOf(dir) === null) c.fail('cgroup', `${o.cgroup} does not exist (looked for ${dir})`);
    c.ok('cgroup', dir);
    const e = coveringRules(c, stateFile, rel);
    const path = checkNetns(c, o, dir, rel, e);
    if (o.dns) {
      const pid = subtreePids(dir)[0];
      checkDns(c, run, e, path, { ...(pid === undefined ? { uid: 0, gid: 0 } : procIds(pid)), cgroup: rel });
      return;
    }
    // An inbound-only (or DNS-only) policy has no outbound chain to follow.
    const outbound = Object.values(e.families).some((fs) =>
      fs?.applied.some((l) => /^-A OUTPUT .*-j MESHREDIR_OUTPUT(\s|$)/.test(l)),
    );
    const inbound = appliedInbound(e);
    if (!outbound && !inbound && appliedDns(e))
      c.fail('policy', `${e.policy} has no outbound proxy (it captures DNS only): check it with --dns`);
    if (outbound || !inbound) checkRules(c, run, o, dir, rel, e, path);
    if (inbound) await checkInbound(c, run, e, path);
  });
}

/** The applied policy that covers the cgroup (nearest ancestor), and its netns entry. */
function coveringRules(c: Checks, stateFile: string, rel: string): NetnsState {
  const s = readState(stateFile);
  const covering = Object.values(s.policies)
    .filter((p) => underRoot(rel, p.cgroup))
    .sort((a, b) => b.cgroup.length - a.cgroup.length)[0];
  if (!covering) {
    const empty = Object.keys(s.policies).length ? '' : ': empty — has the agent run in iptables mode here?';
    c.fail('policy', `no iptables-mode policy covers ${rel} (state ${stateFile}${empty})`);
  }
  if (covering.outcome !== 'applied')
    c.fail('policy', `policy ${covering.policy} is ${covering.outcome}: ${covering.reason ?? ''}`);
  const e = Object.values(s.netns).find((n) => n.policy === covering.policy && n.id === covering.netnsId);
  if (!e) c.fail('policy', `policy ${covering.policy} has no applied rules in the state`);
  c.ok('policy', `${covering.policy} (cgroup ${covering.cgroup}) → netns ${e.id}, ${e.backend}`);
  return e;
}

/** The cgroup's processes (or --netns) are in the netns the rules are in; returns a path to it. */
function checkNetns(c: Checks, o: VerifyRequest, dir: string, rel: string, e: NetnsState): string {
  let netnsId: string | null;
  let where: string;
  if (o.netns) {
    netnsId = idOf(o.netns);
    where = o.netns;
    if (!netnsId) c.fail('netns', `${o.netns} does not exist`);
  } else {
    const ids = new Set(
      subtreePids(dir)
        .map((pid) => idOf(`/proc/${pid}/ns/net`))
        .filter((x): x is string => x !== null),
    );
    if (ids.size === 0) c.fail('netns', `no process in ${rel} to take its network namespace from; pass --netns`);
    if (ids.size > 1)
      c.fail(
        'netns',
        `the processes of ${rel} are in ${ids.size} different network namespaces: ${[...ids].join(', ')}`,
      );
    netnsId = [...ids][0]!;
    where = `the netns of the processes of ${rel}`;
  }
  if (netnsId !== e.id) {
    const is = hostNetnsIds().has(netnsId) ? 'the host network namespace' : `netns ${netnsId}`;
    c.fail('netns', `${where} is ${is}, but the rules are in netns ${e.id}`);
  }
  const path = findNetns(e.id, e.path);
  if (!path) c.fail('netns', `network namespace ${e.id} no longer exists`);
  c.ok('netns', `${where} is netns ${e.id}, where the rules are (${path})`);
  return path;
}

/** The rules are there as applied, would redirect a connect to dest, and something listens there. */
function checkRules(
  c: Checks,
  run: Runner,
  o: VerifyRequest,
  dir: string,
  rel: string,
  e: NetnsState,
  path: string,
): void {
  const dest = o.dest ?? (e.families['4'] ? '192.0.2.1:80' : '[2001:db8::1]:80');
  const m = /^\[?([^\]]+?)\]?:(\d+)$/.exec(dest);
  if (!m) c.fail('rules', `--dest ${dest}: not an address:port`);
  const family: Family = dest.startsWith('[') ? 6 : 4;
  const fs = e.families[fkey(family)];
  if (!fs) c.fail('rules', `no IPv${family} rules are applied for policy ${e.policy}`);
  let ns: NetnsHandle;
  try {
    ns = NetnsHandle.open(path, e.id);
  } catch (err) {
    c.fail('rules', `cannot enter netns ${path}: ${(err as Error).message}`);
  }
  try {
    let save = '';
    try {
      save = run.saveNat(ns, e.backend, family);
    } catch (err) {
      c.fail('rules', (err as Error).message);
    }
    const live = ours(save);
    const missing = fs.applied.filter((l) => !live.includes(l));
    if (missing.length) {
      const tool = bin(e.backend, family, 'save');
      c.fail(
        'rules',
        `${missing.length} of ${fs.applied.length} applied rule(s) missing from ${tool} (first: ${missing[0]}); the agent repairs drift at its next reconcile`,
      );
    }
    const stale = staleCgroups(e);
    if (stale.length) c.fail('rules', `${stale.join('; ')}; the agent adds it again at its next reconcile`);
    c.ok('rules', `${fs.applied.length} rule(s) in place (${bin(e.backend, family, '')}, nat)`);

    // The decision, by the rules as they are (only ours: foreign nat OUTPUT rules are not modelled).
    const pid = subtreePids(dir)[0];
    const ids = pid === undefined ? { uid: 0, gid: 0 } : procIds(pid);
    let bytes: number[] = [];
    try {
      bytes = ipaddr.parse(m[1]!).toByteArray();
    } catch {
      c.fail('redirect', `--dest ${dest}: ${m[1]} is not an IP address`);
    }
    if ((bytes.length === 4 ? 4 : 6) !== family)
      c.fail('redirect', `--dest ${dest}: write IPv6 destinations as [addr]:port`);
    const conn: Conn = {
      family,
      dst: bytes,
      dport: Number(m[2]),
      uid: ids.uid,
      gid: ids.gid,
      // A socket it creates is in its cgroup, and has no mark unless it sets one.
      cgroup: rel,
      mark: 0,
      outLo: isLoopback({ family, bytes }),
    };
    const trace: string[] = [];
    const chains = save.split('\n').filter((l) => l.startsWith(':MESHREDIR_'));
    const v = evaluate(parseNat(['*nat', ...chains, ...live, 'COMMIT'].join('\n'), family), conn, trace);
    const who = `a connect to ${dest} by uid ${ids.uid}/gid ${ids.gid}`;
    if (v.verdict !== 'redirect') {
      const why = trace.length
        ? `the rule "${trace.at(-1)}" lets it pass`
        : 'no jump from OUTPUT into MESHREDIR_OUTPUT';
      c.fail('redirect', `${who} would not be redirected: ${why}`);
    }
    const target = family === 4 ? `${REDIRECT_TARGET[4]}:${v.port}` : `[${REDIRECT_TARGET[6]}]:${v.port}`;
    c.ok(
      'redirect',
      `${who} is redirected to ${target} (conntrack keeps the original destination for SO_ORIGINAL_DST and getpeername)`,
    );

    let tcp = '';
    try {
      tcp = run.run(ns, ['cat', '/proc/net/tcp']) + run.run(ns, ['cat', '/proc/net/tcp6']);
    } catch (err) {
      c.fail('proxy', `cannot read the socket table of netns ${path}: ${(err as Error).message}`);
    }
    const lo = family === 4 ? [127, 0, 0, 1] : [...new Array<number>(15).fill(0), 1];
    if (!accepts(parseListeners(tcp), lo, v.port)) c.fail('proxy', `nothing listens on ${target} in netns ${path}`);
    c.ok('proxy', `a socket listens on ${target} in the pod netns`);
  } finally {
    ns.close();
  }
}
