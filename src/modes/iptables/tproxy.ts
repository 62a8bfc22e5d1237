// tproxy.ts — inbound interception with TPROXY (`spec.inbound.interception: tproxy`): istio's mangle rules
// and the fwmark routing they use, in the pod netns. No NAT: the proxy's transparent listener accepts the
// connection with the client's own address as peer and the pod's address and port as local address.
// Pure, golden-tested; apply.ts and routes.ts put them in place.
import type { Policy } from '../../policy/schema.js';
import { addRule, ruleComment, sourcesOf } from './rules.js';

export const MANGLE_CHAINS = ['MESHREDIR_INBOUND', 'MESHREDIR_DIVERT', 'MESHREDIR_TPROXY'] as const;
export const MANGLE_JUMPS = [{ from: 'PREROUTING', to: 'MESHREDIR_INBOUND' }] as const;

/** Whether the policy intercepts inbound connections with TPROXY. */
export const inboundTproxy = (p: Policy): boolean =>
  p.proxy.inbound !== undefined && p.inbound.interception === 'tproxy';

const hex = (n: number) => `0x${n.toString(16)}`;

/**
 * The mangle chains of a TPROXY policy, declared, flushed and filled. In order: what arrives on lo (the
 * proxy's own connection to the app: netfilter sees the real device, unlike sk_lookup) and the bypass
 * sources and excluded ports return; a packet of a connection a transparent socket already holds is
 * marked and accepted (DIVERT); the rest (or the included ports) is handed to the listener on the inbound
 * port (TPROXY), marked so that the policy routing below delivers it locally.
 */
export function renderTproxy(p: Policy, family: 4 | 6): string[] {
  const port = p.proxy.inbound!.port;
  const lines: string[] = [...MANGLE_CHAINS.map((ch) => `:${ch} - [0:0]`), ...MANGLE_CHAINS.map((ch) => `-F ${ch}`)];
  const c = ruleComment(p);
  const add = (chain: string, rule: string) => addRule(lines, c, chain, rule);
  const mark = `${hex(p.inbound.tproxy.mark)}/0xffffffff`;
  add('MESHREDIR_INBOUND', '-i lo -p tcp -j RETURN');
  for (const src of sourcesOf(p, family)) add('MESHREDIR_INBOUND', `-s ${src.text} -p tcp -j RETURN`);
  for (const x of p.inbound.excludePorts) add('MESHREDIR_INBOUND', `-p tcp --dport ${x} -j RETURN`);
  add('MESHREDIR_INBOUND', '-p tcp -m socket --transparent -j MESHREDIR_DIVERT');
  for (const x of p.inbound.includePorts) add('MESHREDIR_INBOUND', `-p tcp --dport ${x} -j MESHREDIR_TPROXY`);
  if (p.inbound.includePorts.length === 0) add('MESHREDIR_INBOUND', '-p tcp -j MESHREDIR_TPROXY');
  add('MESHREDIR_DIVERT', `-j MARK --set-xmark ${mark}`);
  add('MESHREDIR_DIVERT', '-j ACCEPT');
  const lo = family === 4 ? '127.0.0.1/32' : '::1/128';
  add('MESHREDIR_TPROXY', `! -d ${lo} -p tcp -j TPROXY --on-port ${port} --tproxy-mark ${mark}`);
  return lines;
}

export function tproxyJumps(p: Policy): string[] {
  return inboundTproxy(p) ? ['-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND'] : [];
}

/** One policy-routing pair in the pod netns: `ip rule fwmark MARK lookup TABLE` and `local default dev lo
 * table TABLE` (istio's; needed for TPROXY to non-local destinations, harmless for the pod's own). */
export interface Route {
  family: 4 | 6;
  mark: number;
  table: number;
}

export function tproxyRoutes(p: Policy, family: 4 | 6): Route[] {
  return inboundTproxy(p) ? [{ family, ...p.inbound.tproxy }] : [];
}

/** `ip rule add|del fwmark MARK lookup TABLE`: marked packets use the route's table. */
export const ruleCommand = (r: Route, verb: 'add' | 'del'): string[] => [
  'ip',
  `-${r.family}`,
  'rule',
  verb,
  'fwmark',
  hex(r.mark),
  'lookup',
  String(r.table),
];

/** `ip route replace|del local ANY dev lo table TABLE`: every destination is local in that table. */
export const localRouteCommand = (r: Route, verb: 'replace' | 'del'): string[] => [
  'ip',
  `-${r.family}`,
  'route',
  verb,
  'local',
  r.family === 4 ? '0.0.0.0/0' : '::/0',
  'dev',
  'lo',
  'table',
  String(r.table),
];

/** The `ip` commands that make a route (for the dry run and apply). */
export function routeCommands(r: Route): string[][] {
  return [ruleCommand(r, 'add'), localRouteCommand(r, 'replace')];
}
