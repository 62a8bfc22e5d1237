// rules.ts — a policy as istio-style nat rules (iptables-restore input): pure, golden-tested.
// Layout follows istio-iptables: OUTPUT → MESHREDIR_OUTPUT → MESHREDIR_REDIRECT (REDIRECT to the
// outbound proxy port); PREROUTING → MESHREDIR_INBOUND → MESHREDIR_IN_REDIRECT (inbound port).
import type { Policy } from '../../policy/schema.js';

export interface RuleOptions {
  family: 4 | 6;
}

export const CHAINS = ['MESHREDIR_OUTPUT', 'MESHREDIR_REDIRECT', 'MESHREDIR_INBOUND', 'MESHREDIR_IN_REDIRECT'] as const;

const q = (s: string) => `"${s.replace(/(["\\])/g, '\\$1')}"`;

/**
 * The exact input for `iptables-restore --noflush`: declares and flushes our chains, then fills them,
 * so applying twice yields one set of rules and foreign chains are never touched. The jumps from the
 * built-in chains are not in it (a restore cannot say "add if missing"): see jumpRules().
 */
export function renderRestore(p: Policy, { family }: RuleOptions): string {
  const c = `-m comment --comment ${q(`meshredir:${p.name}`)}`;
  const lo = family === 4 ? '127.0.0.1/32' : '::1/128';
  const passthrough = family === 4 ? '127.0.0.6/32' : '::6/128';
  const proxy = family === 4 ? p.proxy.outbound : p.proxy.outbound6;
  const lines: string[] = ['*nat', ...CHAINS.map((ch) => `:${ch} - [0:0]`), ...CHAINS.map((ch) => `-F ${ch}`)];
  const add = (chain: string, rule: string) => {
    const at = rule.lastIndexOf('-j ');
    lines.push(`-A ${chain} ${rule.slice(0, at)}${c} ${rule.slice(at)}`.replace(/\s+/g, ' ').trim());
  };

  if (p.proxy.inbound) {
    add('MESHREDIR_IN_REDIRECT', `-p tcp -j REDIRECT --to-ports ${p.proxy.inbound}`);
    for (const port of p.inbound.excludePorts) add('MESHREDIR_INBOUND', `-p tcp --dport ${port} -j RETURN`);
    add('MESHREDIR_INBOUND', '-p tcp -j MESHREDIR_IN_REDIRECT');
  }

  if (proxy) {
    add('MESHREDIR_REDIRECT', `-p tcp -j REDIRECT --to-ports ${proxy.port}`);
    // istio: traffic the inbound proxy sends to the app from 127.0.0.6 passes through.
    add('MESHREDIR_OUTPUT', `-s ${passthrough} -o lo -j RETURN`);
    const owners: [string, number][] = [...p.bypass.uids.map((u) => ['--uid-owner', u] as [string, number]), ...p.bypass.gids.map((g) => ['--gid-owner', g] as [string, number])];
    for (const [flag, id] of owners) {
      if (p.proxy.inbound) add('MESHREDIR_OUTPUT', `! -d ${lo} -o lo -p tcp ! --dport ${p.proxy.inbound} -m owner ${flag} ${id} -j MESHREDIR_IN_REDIRECT`);
      add('MESHREDIR_OUTPUT', `-o lo -m owner ! ${flag} ${id} -j RETURN`);
      add('MESHREDIR_OUTPUT', `-m owner ${flag} ${id} -j RETURN`);
    }
    if (!p.outbound.redirectLoopback) add('MESHREDIR_OUTPUT', `-d ${lo} -j RETURN`);
    for (const port of p.outbound.excludePorts) add('MESHREDIR_OUTPUT', `-p tcp --dport ${port} -j RETURN`);
    for (const cidr of p.outbound.excludeCidrs.filter((x) => x.family === family)) add('MESHREDIR_OUTPUT', `-d ${cidr.text} -j RETURN`);
    const incCidrs = p.outbound.includeCidrs.filter((x) => x.family === family);
    const ports = p.outbound.includePorts;
    // An include list that names only the other family redirects nothing of this one.
    if (p.outbound.includeCidrs.length > 0 && incCidrs.length === 0) {
      // nothing
    } else if (incCidrs.length > 0 && ports.length > 0) {
      for (const cidr of incCidrs) for (const port of ports) add('MESHREDIR_OUTPUT', `-d ${cidr.text} -p tcp --dport ${port} -j MESHREDIR_REDIRECT`);
    } else if (incCidrs.length > 0) {
      for (const cidr of incCidrs) add('MESHREDIR_OUTPUT', `-d ${cidr.text} -j MESHREDIR_REDIRECT`);
    } else if (ports.length > 0) {
      for (const port of ports) add('MESHREDIR_OUTPUT', `-p tcp --dport ${port} -j MESHREDIR_REDIRECT`);
    } else {
      add('MESHREDIR_OUTPUT', '-j MESHREDIR_REDIRECT');
    }
  }
  lines.push('COMMIT', '');
  return lines.join('\n');
}

/** argv (for iptables/ip6tables) of the jumps from the built-in chains; add each only if `-C` misses it. */
export function jumpRules(p: Policy, { family }: RuleOptions): string[][] {
  const proxy = family === 4 ? p.proxy.outbound : p.proxy.outbound6;
  const c = ['-m', 'comment', '--comment', 'meshredir'];
  const out: string[][] = [];
  if (proxy) out.push(['-t', 'nat', '-A', 'OUTPUT', '-p', 'tcp', ...c, '-j', 'MESHREDIR_OUTPUT']);
  if (p.proxy.inbound) out.push(['-t', 'nat', '-A', 'PREROUTING', '-p', 'tcp', ...c, '-j', 'MESHREDIR_INBOUND']);
  return out;
}

/** What the iptables mode cannot do for this policy; non-empty = the policy is rejected in this mode. */
export function unsupported(p: Policy): string[] {
  const out: string[] = [];
  if (p.bypass.uids.length === 0 && p.bypass.gids.length === 0) {
    out.push(
      'spec.proxy.bypass: iptables mode recognises the proxy only by uid/gid (owner match); without spec.proxy.bypass.uids or gids the proxy\'s own connections would be redirected back to it',
    );
  }
  for (const [field, ep] of [
    ['outbound', p.proxy.outbound],
    ['outbound6', p.proxy.outbound6],
  ] as const) {
    if (!ep) continue;
    const loopback = ep.family === 4 ? ep.bytes[0] === 127 : ep.bytes.slice(0, 15).every((b) => b === 0) && ep.bytes[15] === 1;
    if (!loopback) {
      out.push(
        `spec.proxy.${field}: ${ep.text} — iptables REDIRECT can only send to a proxy listening in the pod's own network namespace (it rewrites to the local address and port ${ep.port}), and SO_ORIGINAL_DST only works where the NAT happened; use a loopback proxy address, or the eBPF mode for a proxy in another namespace`,
      );
    }
  }
  if (p.accelerate) out.push('spec.accelerate: the sk_msg fast path needs the eBPF mode');
  return out;
}

/** Fields this mode ignores, with why (reported, not fatal). */
export function ignoredFields(p: Policy): string[] {
  const out: string[] = [];
  if (p.bypass.cgroups.length && (p.bypass.uids.length || p.bypass.gids.length)) {
    out.push('spec.proxy.bypass.cgroups: iptables mode bypasses by uid/gid only; the proxy must run as one of spec.proxy.bypass.uids/gids');
  }
  return out;
}
