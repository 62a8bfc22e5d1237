// verify-dns.ts — `verify --dns` in iptables mode (sends no packet): DNS capture's rules are there as
// applied (nat, and raw's conntrack zones), its nat jump comes before the outbound one → the nat chain, as
// it is in the netns, sends UDP (and TCP) port 53 to each captured nameserver by the pod's process to the
// DNS proxy, and lets the proxy's own queries (its uid, gid, cgroup or mark) through → something takes UDP
// and TCP on the proxy port in the pod netns (a proxy on a node address is reached by DNAT, elsewhere).
import ipaddr from 'ipaddr.js';
import { parseSockets, accepts, parseListeners } from '../../util/proc-net.js';
import { NetnsHandle } from '../netns.js';
import { parseNat, evaluate, splitArgs, type Conn } from './evaluate.js';
import { bin, ours, type Runner } from './run.js';
import { appliedIn, fkey, type Family, type NetnsState } from './state.js';
import type { Checks } from '../checks.js';

/** What `all` is checked with: documentation addresses (nothing is sent). */
const ANY = { 4: '192.0.2.53', 6: '2001:db8::53' } as const;

/** Whether the policy captures DNS in this netns (its nat rules have MESHREDIR_DNS). */
export const appliedDns = (e: NetnsState): boolean =>
  Object.values(e.families).some((fs) => fs?.applied.some((l) => l.startsWith('-A MESHREDIR_DNS ')));

/** The proxy's identities the rules spare (RETURN lines), as connection fields. */
function bypasses(lines: string[]): { text: string; conn: Partial<Conn> }[] {
  const out: { text: string; conn: Partial<Conn> }[] = [];
  for (const l of lines) {
    if (!l.startsWith('-A MESHREDIR_DNS ') || !l.endsWith('-j RETURN') || l.includes('--dport')) continue;
    const a = splitArgs(l);
    const val = (k: string) => a[a.indexOf(k) + 1];
    if (a.includes('--uid-owner'))
      out.push({ text: `uid ${val('--uid-owner')}`, conn: { uid: Number(val('--uid-owner')) } });
    else if (a.includes('--gid-owner'))
      out.push({ text: `gid ${val('--gid-owner')}`, conn: { gid: Number(val('--gid-owner')) } });
    else if (a.includes('--path')) out.push({ text: `cgroup ${val('--path')}`, conn: { cgroup: val('--path')! } });
    else if (a.includes('--mark')) {
      const [v] = val('--mark')!.split('/');
      out.push({ text: `mark ${val('--mark')}`, conn: { mark: Number(v) } });
    }
  }
  return out;
}

export function checkDns(
  c: Checks,
  run: Runner,
  e: NetnsState,
  path: string,
  who: { uid: number; gid: number; cgroup: string },
): void {
  const fams = ([4, 6] as const).filter((f) =>
    e.families[fkey(f)]?.applied.some((l) => l.startsWith('-A MESHREDIR_DNS ')),
  );
  if (!fams.length) c.fail('dns rules', `policy ${e.policy} captures no DNS here (no MESHREDIR_DNS rules applied)`);
  let ns: NetnsHandle;
  try {
    ns = NetnsHandle.open(path, e.id);
  } catch (err) {
    c.fail('dns rules', `cannot enter netns ${path}: ${(err as Error).message}`);
  }
  try {
    for (const family of fams) checkFamily(c, run, e, ns, family, who);
  } finally {
    ns.close();
  }
}

function checkFamily(
  c: Checks,
  run: Runner,
  e: NetnsState,
  ns: NetnsHandle,
  family: Family,
  who: { uid: number; gid: number; cgroup: string },
): void {
  const fs = e.families[fkey(family)]!;
  const tool = bin(e.backend, family, '');
  let save = '';
  let raw = '';
  try {
    save = run.saveNat(ns, e.backend, family);
    if (appliedIn(fs, 'raw').length) raw = run.save(ns, e.backend, family, 'raw');
  } catch (err) {
    c.fail('dns rules', (err as Error).message);
  }
  const live = ours(save);
  const want = fs.applied.filter((l) => l.includes('MESHREDIR_DNS'));
  const missing = [
    ...want.filter((l) => !live.includes(l)),
    ...appliedIn(fs, 'raw').filter((l) => !ours(raw).includes(l)),
  ];
  if (missing.length)
    c.fail(
      'dns rules',
      `IPv${family}: ${missing.length} rule(s) missing (first: ${missing[0]}); the agent repairs drift at its next reconcile`,
    );
  const jumps = save.split('\n').filter((l) => l.startsWith('-A OUTPUT '));
  const dnsAt = jumps.findIndex((l) => / -j MESHREDIR_DNS(\s|$)/.test(l));
  const outAt = jumps.findIndex((l) => / -j MESHREDIR_OUTPUT(\s|$)/.test(l));
  if (outAt >= 0 && dnsAt > outAt)
    c.fail(
      'dns rules',
      `IPv${family}: the jump to MESHREDIR_DNS comes after the one to MESHREDIR_OUTPUT, which would take TCP 53`,
    );
  const zones = appliedIn(fs, 'raw').length;
  c.ok(
    'dns rules',
    `IPv${family}: ${want.length} nat rule(s)${zones ? ` and ${zones} conntrack-zone rule(s) (raw)` : ''} in place (${tool}), the DNS jump first in OUTPUT`,
  );

  // The decision, by our nat rules as they are.
  const chains = save.split('\n').filter((l) => l.startsWith(':MESHREDIR_'));
  const table = () => parseNat(['*nat', ...chains, ...live, 'COMMIT'].join('\n'), family);
  const captures = want.filter((l) => / -j (REDIRECT|DNAT) /.test(l));
  const dests = [...new Set(captures.map((l) => /-d (\S+?)\/\d+ /.exec(l)?.[1] ?? ANY[family]))];
  const protos = [...new Set(captures.map((l) => (/-p (udp|tcp) /.exec(l)?.[1] ?? 'udp') as 'udp' | 'tcp'))];
  const base = { family, dport: 53, uid: who.uid, gid: who.gid, cgroup: who.cgroup, mark: 0, outLo: false };
  let target = '';
  for (const d of dests)
    for (const proto of protos) {
      const trace: string[] = [];
      const v = evaluate(table(), { ...base, proto, dst: ipaddr.parse(d).toByteArray() }, trace);
      const what = `${proto.toUpperCase()} to ${family === 4 ? d : `[${d}]`}:53 by uid ${who.uid}/gid ${who.gid}`;
      if (v.verdict === 'pass')
        c.fail(
          'dns capture',
          `${what} would not be captured: ${trace.length ? `the rule "${trace.at(-1)}" lets it pass` : 'no jump into MESHREDIR_DNS'}`,
        );
      if (v.verdict === 'redirect' && v.chain !== 'MESHREDIR_DNS')
        c.fail('dns capture', `${what} would go to the outbound proxy (port ${v.port}), not the DNS proxy`);
      target =
        v.verdict === 'redirect' ? `${family === 4 ? '127.0.0.1' : '[::1]'}:${v.port}` : (v as { to: string }).to;
    }
  c.ok(
    'dns capture',
    `IPv${family}: ${protos.join(' and ').toUpperCase()} port 53 to ${dests.join(', ')} goes to ${target}`,
  );

  const spared = bypasses(want);
  for (const b of spared) {
    const v = evaluate(table(), { ...base, proto: 'udp', dst: ipaddr.parse(dests[0]!).toByteArray(), ...b.conn });
    if (v.verdict !== 'pass')
      c.fail('dns bypass', `the DNS proxy's own query (${b.text}) would be captured back to it`);
  }
  c.ok(
    'dns bypass',
    spared.length
      ? `the proxy's own queries pass (${spared.map((b) => b.text).join(', ')})`
      : 'the proxy is outside the pod netns: its queries never meet these rules',
  );

  // Something takes UDP and TCP on the redirect port in the pod netns (DNAT: the proxy is elsewhere).
  const m = /:(\d+)$/.exec(target);
  if (!target.startsWith('127.') && !target.startsWith('[::1]')) {
    c.ok('dns proxy', `DNAT to ${target}: a proxy outside the pod netns (not looked for here)`);
    return;
  }
  const port = Number(m![1]);
  let udp = '';
  let tcp = '';
  try {
    for (const f of ['udp', 'udp6']) udp += run.run(ns, ['cat', `/proc/net/${f}`]);
    for (const f of ['tcp', 'tcp6']) tcp += run.run(ns, ['cat', `/proc/net/${f}`]);
  } catch (err) {
    c.fail('dns proxy', `cannot read the socket tables: ${(err as Error).message}`);
  }
  const lo = family === 4 ? [127, 0, 0, 1] : [...new Array<number>(15).fill(0), 1];
  const servers = parseSockets(udp)
    .filter((s) => s.state === '07' && s.remote.port === 0)
    .map((s) => s.local);
  const needTcp = protos.includes('tcp');
  if (!accepts(servers, lo, port) || (needTcp && !accepts(parseListeners(tcp), lo, port)))
    c.fail(
      'dns proxy',
      `nothing takes ${!accepts(servers, lo, port) ? 'UDP' : 'TCP'} on ${target} in the pod netns: queries would be refused`,
    );
  c.ok('dns proxy', `something takes UDP${needTcp ? ' and TCP' : ''} on ${target} in the pod netns`);
}
