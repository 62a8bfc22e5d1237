// evaluate.ts — what a nat table made of our rules does with a new outbound TCP connection or UDP flow: a
// tiny first-match evaluator of exactly the rule subset rules.ts and dns-rules.ts generate (unknown syntax
// is an error, never ignored). Used to check the generated rules against the decision model, and by
// `verify` (and `verify --dns`: UDP and TCP port 53).
import ipaddr from 'ipaddr.js';
import { within } from '../../util/host.js';

/** A new TCP connection (or UDP flow) as the nat OUTPUT chain sees its first packet. */
export interface Conn {
  family: 4 | 6;
  /** tcp unless said (DNS capture: udp too). */
  proto?: 'tcp' | 'udp';
  /** Destination address, 4 or 16 bytes. */
  dst: number[];
  dport: number;
  /** Source address; the evaluator only needs it for the 127.0.0.6 passthrough rule. */
  src?: number[];
  uid: number;
  gid: number;
  /** The cgroup the socket was created in, as a path under the cgroup2 mount (-m cgroup); none: the root's. */
  cgroup?: string;
  /** The socket's mark (SO_MARK), 0 when unset (-m mark). */
  mark?: number;
  /** Whether the packet leaves through lo (a local destination). */
  outLo: boolean;
}

export type Verdict =
  | { verdict: 'pass' }
  | { verdict: 'redirect'; port: number; chain: string }
  | { verdict: 'dnat'; to: string; chain: string };

interface Net {
  bytes: number[];
  prefix: number;
}

interface Rule {
  text: string;
  proto?: string;
  dst?: { net: Net; neg: boolean };
  src?: { net: Net; neg: boolean };
  out?: { iface: string; neg: boolean };
  dport?: { port: number; neg: boolean };
  uid?: { id: number; neg: boolean };
  gid?: { id: number; neg: boolean };
  cgroup?: { path: string; neg: boolean };
  mark?: { value: number; mask: number; neg: boolean };
  target: string;
  toPort?: number;
  toDest?: string;
}

export class RuleSyntaxError extends Error {}

/** Splits a rule tail into argv, honouring double quotes (comments). */
export function splitArgs(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}

function parseNet(s: string, family: 4 | 6, line: string): Net {
  const [addr = '', prefixText] = s.split('/');
  let a: ipaddr.IPv4 | ipaddr.IPv6;
  try {
    a = ipaddr.parse(addr);
  } catch {
    throw new RuleSyntaxError(`${line}: ${s} is not an address`);
  }
  if ((a.kind() === 'ipv4' ? 4 : 6) !== family)
    throw new RuleSyntaxError(`${line}: ${s} is not an IPv${family} address`);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new RuleSyntaxError(`${line}: ${s}: bad prefix`);
  return { bytes: a.toByteArray(), prefix };
}

function inNet(addr: number[], n: Net): boolean {
  for (let bit = 0; bit < n.prefix; bit++) {
    const i = bit >> 3;
    const m = 0x80 >> (bit & 7);
    if (((addr[i] ?? 0) & m) !== ((n.bytes[i] ?? 0) & m)) return false;
  }
  return true;
}

function parseRule(argv: string[], family: 4 | 6, line: string): Rule {
  const r: Rule = { text: line, target: '' };
  let neg = false;
  const num = (s: string | undefined) => {
    if (s === undefined || !/^\d+$/.test(s)) throw new RuleSyntaxError(`${line}: ${s ?? '(nothing)'} is not a number`);
    return Number(s);
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const next = () => {
      const v = argv[++i];
      if (v === undefined) throw new RuleSyntaxError(`${line}: ${a} needs a value`);
      return v;
    };
    if (a === '!') {
      neg = true;
      continue;
    }
    switch (a) {
      case '-p':
        if (neg) throw new RuleSyntaxError(`${line}: ! -p is not in the generated subset`);
        r.proto = next();
        break;
      case '-d':
        r.dst = { net: parseNet(next(), family, line), neg };
        break;
      case '-s':
        r.src = { net: parseNet(next(), family, line), neg };
        break;
      case '-o':
        r.out = { iface: next(), neg };
        break;
      case '--dport':
        if (r.proto !== 'tcp' && r.proto !== 'udp') throw new RuleSyntaxError(`${line}: --dport without -p tcp/udp`);
        r.dport = { port: num(next()), neg };
        break;
      case '--uid-owner':
        r.uid = { id: num(next()), neg };
        break;
      case '--gid-owner':
        r.gid = { id: num(next()), neg };
        break;
      case '--path':
        r.cgroup = { path: next(), neg };
        break;
      case '--mark': {
        const [v, m] = next().split('/');
        const n = (x: string | undefined) => (x !== undefined && /^(0x[0-9a-f]+|\d+)$/i.test(x) ? Number(x) : NaN);
        const value = n(v);
        const mask = m === undefined ? 0xffffffff : n(m);
        if (!(value >= 0 && mask >= 0))
          throw new RuleSyntaxError(`${line}: --mark ${v}${m ? `/${m}` : ''} is not value[/mask]`);
        r.mark = { value, mask, neg };
        break;
      }
      case '-m': {
        const mod = next();
        if (!['owner', 'comment', 'tcp', 'udp', 'cgroup', 'mark'].includes(mod))
          throw new RuleSyntaxError(`${line}: match ${mod} is not in the generated subset`);
        break;
      }
      case '--comment':
        next();
        break;
      case '-j':
        r.target = next();
        break;
      case '--to-ports':
        r.toPort = num(next());
        break;
      case '--to-destination':
        r.toDest = next();
        break;
      default:
        throw new RuleSyntaxError(`${line}: ${a} is not in the generated subset`);
    }
    neg = false;
  }
  if (!r.target) throw new RuleSyntaxError(`${line}: no -j target`);
  if (r.target === 'REDIRECT' && r.toPort === undefined)
    throw new RuleSyntaxError(`${line}: REDIRECT without --to-ports`);
  if (r.target === 'DNAT' && r.toDest === undefined)
    throw new RuleSyntaxError(`${line}: DNAT without --to-destination`);
  return r;
}

/** The chains of an iptables-restore (or iptables-save) nat text, in order. */
export function parseNat(text: string, family: 4 | 6): Map<string, Rule[]> {
  const chains = new Map<string, Rule[]>();
  let inNat = false;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    if (line.startsWith('*')) {
      inNat = line === '*nat';
      continue;
    }
    if (!inNat) continue;
    if (line === 'COMMIT') continue;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0]!;
      if (!chains.has(name)) chains.set(name, []);
      continue;
    }
    if (/^-[FX] /.test(line)) continue; // flush/delete of a chain that is about to be filled
    // DNS capture's jump is inserted first (-I OUTPUT 1).
    const ins = /^-I (\S+) 1 (.*)$/.exec(line);
    const m = ins ?? /^-A (\S+) (.*)$/.exec(line);
    if (!m) throw new RuleSyntaxError(`${line}: only -A and -I CHAIN 1 lines are in the generated subset`);
    const list = chains.get(m[1]!) ?? [];
    const rule = parseRule(splitArgs(m[2]!), family, line);
    if (ins) list.unshift(rule);
    else list.push(rule);
    chains.set(m[1]!, list);
  }
  return chains;
}

function matches(r: Rule, c: Conn): boolean {
  const x = (cond: boolean, neg: boolean) => cond !== neg;
  if (r.proto !== undefined && r.proto !== (c.proto ?? 'tcp')) return false;
  if (r.dst && !x(inNet(c.dst, r.dst.net), r.dst.neg)) return false;
  if (r.src && !x(c.src !== undefined && inNet(c.src, r.src.net), r.src.neg)) return false;
  if (r.out && !x(r.out.iface === 'lo' ? c.outLo : false, r.out.neg)) return false;
  if (r.dport && !x(c.dport === r.dport.port, r.dport.neg)) return false;
  if (r.uid && !x(c.uid === r.uid.id, r.uid.neg)) return false;
  if (r.gid && !x(c.gid === r.gid.id, r.gid.neg)) return false;
  if (r.cgroup && !x(within(c.cgroup ?? '/', r.cgroup.path), r.cgroup.neg)) return false;
  if (r.mark && !x(((c.mark ?? 0) & r.mark.mask) >>> 0 === r.mark.value, r.mark.neg)) return false;
  return true;
}

/** Runs `c` through the nat OUTPUT chain (built-in policy ACCEPT) of `chains`; `trace` gets every rule that matched. */
export function evaluate(chains: Map<string, Rule[]>, c: Conn, trace: string[] = []): Verdict {
  const run = (chain: string, depth: number): Verdict | 'return' => {
    if (depth > 16) throw new RuleSyntaxError(`chain ${chain}: jumps nest deeper than 16 (a loop?)`);
    const rules = chains.get(chain);
    if (!rules) throw new RuleSyntaxError(`jump to chain ${chain}, which is not declared`);
    for (const r of rules) {
      if (!matches(r, c)) continue;
      trace.push(r.text);
      if (r.target === 'RETURN') return 'return';
      if (r.target === 'ACCEPT') return { verdict: 'pass' };
      if (r.target === 'REDIRECT') return { verdict: 'redirect', port: r.toPort!, chain };
      if (r.target === 'DNAT') return { verdict: 'dnat', to: r.toDest!, chain };
      const v = run(r.target, depth + 1);
      if (v !== 'return') return v;
    }
    return 'return';
  };
  if (!chains.has('OUTPUT')) chains = new Map([...chains, ['OUTPUT', []]]);
  const v = run('OUTPUT', 0);
  return v === 'return' ? { verdict: 'pass' } : v;
}
