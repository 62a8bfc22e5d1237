// iptables.ts — the iptables mode: the same policies as istio-style nat rules in each pod's netns,
// applied atomically with iptables-restore --noflush (our chains only), backend chosen per netns and
// remembered, drift detected against what was applied, and a complete cleanup.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, statSync, existsSync, rmSync } from 'node:fs';
import { dirname } from 'node:path';
import { createHash } from 'node:crypto';
import type { Policy } from '../../policy/schema.js';
import { renderRestore, jumpRules, unsupported, ignoredFields, CHAINS } from './rules.js';
import { cgroupDir, requireCgroup2 } from '../../util/host.js';
import { podNetns } from '../ebpf/verify.js';

export type Backend = 'nft' | 'legacy';
export const DEFAULT_STATE = '/run/meshredir/iptables.json';

export interface IptablesConfig {
  /** Where the per-netns backend choice and the applied state are remembered. */
  stateFile: string;
  /** Force a backend instead of detecting it. */
  backend?: Backend;
  /** Seconds to wait for the xtables lock. */
  lockWait: number;
}

interface NetnsState {
  path: string;
  inode: string;
  backend: Backend;
  /** Our chains' lines as iptables-save printed them right after applying, per family. */
  applied: Record<'4' | '6', string[]>;
  /** Hash of the rendered input, per family: a changed policy changes it. */
  rendered: Record<'4' | '6', string>;
  policies: string[];
}

interface State {
  netns: Record<string, NetnsState>;
}

export interface IptablesApplyReport {
  applied: { policy: string; netns: string; backend: Backend; families: string[] }[];
  unchanged: string[];
  skipped: { policy: string; reason: string }[];
  removed: string[];
}

export class IptablesError extends Error {}

function inodeOf(path: string): string {
  const st = statSync(path);
  return `${st.dev}:${st.ino}`;
}

const bin = (backend: Backend, family: 4 | 6, what: 'save' | 'restore' | '') =>
  `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}${what ? `-${what}` : ''}`;

export class IptablesMode {
  constructor(readonly cfg: IptablesConfig) {}

  private readState(): State {
    try {
      return JSON.parse(readFileSync(this.cfg.stateFile, 'utf8')) as State;
    } catch {
      return { netns: {} };
    }
  }

  private writeState(s: State): void {
    mkdirSync(dirname(this.cfg.stateFile), { recursive: true, mode: 0o700 });
    writeFileSync(this.cfg.stateFile, JSON.stringify(s, null, 2), { mode: 0o600 });
  }

  /** Runs a command in a netns: directly when it is our own, else through nsenter. */
  private run(netns: string, argv: string[], input?: string): string {
    const own = inodeOf('/proc/self/ns/net') === inodeOf(netns);
    const full = own ? argv : ['nsenter', `--net=${netns}`, ...argv];
    try {
      return execFileSync(full[0]!, full.slice(1), { input: input ?? '', encoding: 'utf8', stdio: 'pipe', timeout: (this.cfg.lockWait + 10) * 1000 });
    } catch (e) {
      const err = e as { stderr?: string; message: string; code?: string };
      const msg = (err.stderr ?? '').trim() || err.message;
      if (/xtables lock|Another app is currently holding the xtables lock/i.test(msg)) {
        throw new IptablesError(`${argv[0]}: the xtables lock was held by another process for more than ${this.cfg.lockWait}s (--lock-wait); nothing was changed`);
      }
      throw new IptablesError(`${full.join(' ')}: ${msg.split('\n').slice(0, 3).join(' / ')}`);
    }
  }

  /** The pod netns of a policy: spec.netns, else that of a process in its cgroup. */
  netnsOf(p: Policy): string | null {
    if (p.netns) return existsSync(p.netns) ? p.netns : null;
    return podNetns(cgroupDir(p.cgroup, requireCgroup2()));
  }

  /** Prefer the backend already holding rules in that netns, then nft. */
  detectBackend(netns: string): Backend {
    if (this.cfg.backend) return this.cfg.backend;
    const rules = (b: Backend) => {
      try {
        return this.run(netns, [bin(b, 4, 'save')]).split('\n').filter((l) => l.startsWith('-A ')).length;
      } catch {
        return -1;
      }
    };
    const nft = rules('nft');
    const legacy = rules('legacy');
    if (legacy > 0 && nft <= 0) return 'legacy';
    if (nft >= 0) return 'nft';
    if (legacy >= 0) return 'legacy';
    throw new IptablesError(`neither iptables-nft nor iptables-legacy works in ${netns}`);
  }

  private ours(netns: string, backend: Backend, family: 4 | 6): string[] {
    return this.run(netns, [bin(backend, family, 'save'), '-t', 'nat'])
      .split('\n')
      .filter((l) => /^-A (MESHREDIR_|OUTPUT .*MESHREDIR_|PREROUTING .*MESHREDIR_)/.test(l));
  }

  /** The iptables-restore input per policy and family (for --dry-run and iptables-rules). */
  dryRun(policies: Policy[]): { policy: string; family: 4 | 6; text: string }[] {
    return policies.flatMap((p) => ([4, 6] as const).map((family) => ({ policy: p.name, family, text: renderRestore(p, { family }) })));
  }

  apply(policies: Policy[]): IptablesApplyReport {
    const rep: IptablesApplyReport = { applied: [], unchanged: [], skipped: [], removed: [] };
    const state = this.readState();
    const seen = new Set<string>();
    const byNetns = new Map<string, { path: string; policies: Policy[] }>();
    for (const p of policies) {
      const why = unsupported(p);
      if (why.length) {
        rep.skipped.push({ policy: p.name, reason: why.join('; ') });
        continue;
      }
      const ns = this.netnsOf(p);
      if (!ns) {
        rep.skipped.push({ policy: p.name, reason: `no network namespace: no process in ${p.cgroup} yet and no spec.netns` });
        continue;
      }
      const key = inodeOf(ns);
      const entry = byNetns.get(key) ?? { path: ns, policies: [] };
      entry.policies.push(p);
      byNetns.set(key, entry);
    }
    for (const [key, { path, policies: ps }] of byNetns) {
      if (ps.length > 1) {
        rep.skipped.push(...ps.map((p) => ({ policy: p.name, reason: `shares netns ${path} with ${ps.filter((o) => o !== p).map((o) => o.name).join(', ')}: one policy per netns in iptables mode` })));
        continue;
      }
      const p = ps[0]!;
      seen.add(key);
      let prev = state.netns[key];
      // A forced backend wins over the remembered one; our rules move off the old backend first.
      if (prev && this.cfg.backend && prev.backend !== this.cfg.backend) {
        this.removeFrom(prev);
        prev = undefined;
      }
      const backend = this.cfg.backend ?? prev?.backend ?? this.detectBackend(path);
      const families: string[] = [];
      const next: NetnsState = { path, inode: key, backend, applied: { '4': [], '6': [] }, rendered: { '4': '', '6': '' }, policies: [p.name] };
      let changed = false;
      for (const family of [4, 6] as const) {
        const text = renderRestore(p, { family });
        const hash = createHash('sha256').update(text).digest('hex');
        const f = String(family) as '4' | '6';
        const current = this.ours(path, backend, family);
        if (prev && prev.rendered[f] === hash && JSON.stringify(prev.applied[f]) === JSON.stringify(current)) {
          next.applied[f] = current;
          next.rendered[f] = hash;
          continue;
        }
        this.run(path, [bin(backend, family, 'restore'), '--noflush', '-w', String(this.cfg.lockWait)], text);
        for (const argv of jumpRules(p, { family })) {
          const check = argv.map((a) => (a === '-A' || a === '-I' ? '-C' : a));
          try {
            this.run(path, [bin(backend, family, ''), '-w', String(this.cfg.lockWait), ...check]);
          } catch {
            this.run(path, [bin(backend, family, ''), '-w', String(this.cfg.lockWait), ...argv]);
          }
        }
        next.applied[f] = this.ours(path, backend, family);
        next.rendered[f] = hash;
        families.push(`ipv${family}`);
        changed = true;
      }
      state.netns[key] = next;
      if (changed) rep.applied.push({ policy: p.name, netns: path, backend, families });
      else rep.unchanged.push(p.name);
    }
    // Netns whose policy is gone: remove our chains there.
    for (const [key, ns] of Object.entries(state.netns)) {
      if (seen.has(key)) continue;
      this.removeFrom(ns);
      delete state.netns[key];
      rep.removed.push(ns.path);
    }
    this.writeState(state);
    return rep;
  }

  private removeFrom(ns: NetnsState): void {
    if (!existsSync(ns.path) || inodeOf(ns.path) !== ns.inode) return; // the netns is gone, and our rules with it
    for (const family of [4, 6] as const) {
      const save = this.run(ns.path, [bin(ns.backend, family, 'save'), '-t', 'nat']);
      for (const line of save.split('\n')) {
        const m = /^-A (OUTPUT|PREROUTING) (.*-j MESHREDIR_\S+.*)$/.exec(line);
        if (m) this.run(ns.path, [bin(ns.backend, family, ''), '-w', String(this.cfg.lockWait), '-t', 'nat', '-D', m[1]!, ...splitArgs(m[2]!)]);
      }
      const present = CHAINS.filter((c) => save.includes(`:${c} `));
      if (present.length) {
        const text = ['*nat', ...present.map((c) => `-F ${c}`), ...present.map((c) => `-X ${c}`), 'COMMIT', ''].join('\n');
        this.run(ns.path, [bin(ns.backend, family, 'restore'), '--noflush', '-w', String(this.cfg.lockWait)], text);
      }
    }
  }

  cleanup(): string[] {
    const state = this.readState();
    const done: string[] = [];
    for (const ns of Object.values(state.netns)) {
      this.removeFrom(ns);
      done.push(ns.path);
    }
    rmSync(this.cfg.stateFile, { force: true });
    return done;
  }

  status(): { netns: string; backend: Backend; policies: string[]; rules: number }[] {
    return Object.values(this.readState().netns).map((n) => ({ netns: n.path, backend: n.backend, policies: n.policies, rules: n.applied['4'].length + n.applied['6'].length }));
  }

  notes(p: Policy): string[] {
    return ignoredFields(p);
  }
}

/** Splits an iptables-save rule tail into argv, honouring double quotes (comments). */
export function splitArgs(s: string): string[] {
  const out: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(s))) out.push(m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!);
  return out;
}
