// verify-inbound.ts — the iptables mode's inbound self-check (sends no packet): the inbound rules of the
// policy are in place as applied (nat REDIRECT, or mangle TPROXY with its policy routing), and the proxy
// listens on the inbound port in the pod netns — for TPROXY a transparent listener, without which TPROXY
// drops every connection.
import { closeSync } from 'node:fs';
import { ours, type Runner } from './run.js';
import { routeState, routeText } from './routes.js';
import { appliedIn, fkey, type Family, type NetnsState } from './state.js';
import { NetnsHandle, pidsInNetns, runIn } from '../netns.js';
import type { Checks } from '../checks.js';

export type InboundKind = 'redirect' | 'tproxy';

/** How the rules applied in a netns intercept inbound connections, and on which port (null: they do not). */
export function appliedInbound(e: NetnsState): { kind: InboundKind; port: number; families: Family[] } | null {
  for (const kind of ['tproxy', 'redirect'] as const) {
    const families: Family[] = [];
    let port: number | undefined;
    for (const f of [4, 6] as const) {
      const fs = e.families[fkey(f)];
      const lines = kind === 'tproxy' ? appliedIn(fs, 'mangle') : appliedIn(fs, 'nat');
      const m =
        kind === 'tproxy'
          ? lines.map((l) => /-j TPROXY .*--on-port (\d+)/.exec(l)).find(Boolean)
          : lines.some((l) => /^-A PREROUTING .*-j MESHREDIR_INBOUND/.test(l))
            ? lines.map((l) => /^-A MESHREDIR_IN_REDIRECT .*--to-ports (\d+)/.exec(l)).find(Boolean)
            : undefined;
      if (m) {
        families.push(f);
        port = Number(m[1]);
      }
    }
    if (port !== undefined) return { kind, port, families };
  }
  return null;
}

export async function checkInbound(c: Checks, run: Runner, e: NetnsState, path: string): Promise<void> {
  const inbound = appliedInbound(e)!;
  const { kind, port } = inbound;
  let ns: NetnsHandle;
  try {
    ns = NetnsHandle.open(path, e.id);
  } catch (err) {
    c.fail('inbound rules', `cannot enter netns ${path}: ${(err as Error).message}`);
  }
  try {
    const table = kind === 'tproxy' ? 'mangle' : 'nat';
    for (const f of inbound.families) {
      const want = appliedIn(e.families[fkey(f)], table);
      let live: string[] = [];
      try {
        live = ours(run.save(ns, e.backend, f, table));
      } catch (err) {
        c.fail('inbound rules', (err as Error).message);
      }
      const missing = want.filter((l) => !live.includes(l));
      if (missing.length)
        c.fail(
          'inbound rules',
          `IPv${f}: ${missing.length} of ${want.length} applied ${table} rule(s) missing (first: ${missing[0]}); the agent repairs drift at its next reconcile`,
        );
    }
    c.ok(
      'inbound rules',
      `${kind === 'tproxy' ? 'mangle PREROUTING → TPROXY' : 'nat PREROUTING → REDIRECT'} to port ${port} (${inbound.families.map((f) => `IPv${f}`).join(', ')})`,
    );
    if (kind === 'tproxy') {
      const routes = e.routes ?? [];
      if (routes.length === 0) c.fail('inbound routing', 'no policy routing recorded for TPROXY in the state');
      for (const r of routes) {
        const st = routeState(run, ns, r);
        if (!st.rule || !st.route)
          c.fail(
            'inbound routing',
            `${routeText(r)}: ${[st.rule ? '' : 'the ip rule', st.route ? '' : 'the local route'].filter(Boolean).join(' and ')} missing; the agent restores it at its next reconcile`,
          );
      }
      c.ok('inbound routing', routes.map(routeText).join('; '));
    }

    // The listener, from the netns's own socket table (connecting to it would send a packet).
    const { parseTcpTables, findListeners, takeFd, socketFacts } = await import('../../bpf/listeners.js');
    let table0;
    try {
      table0 = parseTcpTables(runIn(ns, ['cat', '/proc/net/tcp', '/proc/net/tcp6']));
    } catch (err) {
      c.fail('inbound proxy', `cannot read the socket table of netns ${path}: ${(err as Error).message}`);
    }
    // REDIRECT rewrites to the pod's address and TPROXY (no --on-ip) looks up the packet's own: a
    // listener bound to loopback gets nothing.
    const onPort = table0.filter((l) => l.port === port && !(l.bytes[0] === 127 || isV6Loopback(l.bytes)));
    if (onPort.length === 0)
      c.fail(
        'inbound proxy',
        `nothing listens on port ${port} (wildcard or pod address) in netns ${path}: inbound connections are ${kind === 'tproxy' ? 'dropped' : 'refused'}`,
      );
    if (kind === 'redirect') {
      c.ok('inbound proxy', `a socket listens on port ${port} in the pod netns`);
      return;
    }
    const found = findListeners({ table: onPort, ownerPids: pidsInNetns(e.id), port });
    if (found.length === 0)
      c.fail(
        'inbound proxy',
        `a socket listens on port ${port}, but no process in the netns holds it (a node proxy's?): cannot check that it is transparent`,
      );
    const bad: string[] = [];
    for (const l of found) {
      let fd: number;
      try {
        fd = takeFd(l.pid, l.fd);
      } catch (err) {
        c.fail('inbound proxy', `cannot check the listener (pid ${l.pid} fd ${l.fd}): ${(err as Error).message}`);
      }
      try {
        if (!socketFacts(fd).transparent) bad.push(`pid ${l.pid} fd ${l.fd} (IPv${l.family})`);
      } finally {
        closeSync(fd);
      }
    }
    if (bad.length)
      c.fail(
        'inbound proxy',
        `the listener on port ${port} is not transparent (${bad.join(', ')}): TPROXY drops every connection for it; the proxy needs IP_TRANSPARENT (HAProxy: bind … transparent)`,
      );
    c.ok('inbound proxy', `${found.length} transparent listener(s) on port ${port} (pid ${found[0]!.pid})`);
  } finally {
    ns.close();
  }
}

function isV6Loopback(b: number[]): boolean {
  return b.length === 16 && b.slice(0, 15).every((x) => x === 0) && b[15] === 1;
}
