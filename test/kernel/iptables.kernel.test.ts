// iptables.kernel.test.ts — the iptables mode one network namespace at a time: which netns a policy
// goes to (never the host's; one all processes agree on), one netns failing without stopping the
// others, netns found by inode after their process exited (and "gone" only when they are), a forced
// backend that keeps the old rules when the new one cannot take them, hosts without ip6tables, the
// state written only on change, dry-run = what is applied, and verify. Root; netns mr-*, cgroups
// meshredir-test-* only (the host's own tables are only read, to show nothing was put there).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, sh, waitFor, CLI, type Proc } from './harness.js';
import { IptablesMode } from '../../src/modes/iptables/index.js';
import type { Removal } from '../../src/modes/iptables/apply.js';
import type { PolicyStatus } from '../../src/modes/iptables/state.js';
import { parsePolicyText } from '../../src/policy/load.js';
import type { Policy } from '../../src/policy/schema.js';

const ino = (path: string) => statSync(path).ino;

kernelDescribe('iptables mode, one network namespace at a time', () => {
  let env: Env;
  let dir: string;
  const policy = (name: string, cgroup: string, extra = '', proxy = '    outbound: 127.0.0.1:15001\n'): Policy => {
    const r = parsePolicyText(
      `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ${name} }\nspec:\n  cgroup: ${cgroup}\n${extra}  proxy:\n${proxy}    bypass: { uids: [1337] }\n`,
      `${name}.yaml`,
    );
    expect(r.errors).toEqual([]);
    return r.policies[0]!;
  };
  /** The mode, with its own report of an apply (what the agent's ApplyResult summarises). */
  const mode = (state: string, extra: { backend?: 'nft' | 'legacy' } = {}) => {
    const m = new IptablesMode({
      iptablesState: state,
      lockWait: 1,
      ...(extra.backend ? { iptablesBackend: extra.backend } : {}),
    });
    return {
      apply: (ps: Policy[]) => {
        m.apply(m.plan({ policies: ps }));
        return m.last!;
      },
      status: () => m.status().json as { policies: PolicyStatus[] },
      cleanup: () => m.cleanup().json.iptablesNetns as Removal[],
    };
  };
  const natSave = (ns: string, tool = 'iptables-nft-save') => sh('ip', ['netns', 'exec', ns, tool, '-t', 'nat']);
  const ours = (ns: string, tool?: string) =>
    natSave(ns, tool)
      .split('\n')
      .filter((l) => l.includes('MESHREDIR'));
  const hostHasOurs = () =>
    ['iptables-nft-save', 'ip6tables-nft-save', 'iptables-legacy-save', 'ip6tables-legacy-save'].some((t) =>
      sh(t, ['-t', 'nat'], { allowFail: true }).includes('MESHREDIR'),
    );
  /** A "pod": netns + cgroup + a process in both; resolves once the process is in the netns. */
  const pod = async (name: string): Promise<{ ns: string; cg: string; p: Proc }> => {
    const ns = env.netns(name);
    const cg = env.cgroup(name);
    const p = env.spawn(ns, cg, 'sleep', ['1000']);
    await waitFor(
      () => {
        try {
          return ino(`/proc/${p.child.pid}/ns/net`) === ino(`/run/netns/${ns}`);
        } catch {
          return false;
        }
      },
      `${name}: process in its netns`,
      p,
    );
    return { ns, cg, p };
  };
  /** PATH entries that stand in for iptables tools (a failure the real ones would give). */
  const shim = (tools: Record<string, string>): string => {
    const d = mkdtempSync(join(dir, 'shim-'));
    for (const [tool, body] of Object.entries(tools)) {
      writeFileSync(join(d, tool), `#!/bin/sh\n${body}\n`);
      chmodSync(join(d, tool), 0o755);
    }
    return d;
  };
  const withPath = <T>(prefix: string, fn: () => T): T => {
    const old = process.env.PATH;
    process.env.PATH = `${prefix}:${old}`;
    try {
      return fn();
    } finally {
      process.env.PATH = old;
    }
  };

  beforeAll(() => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-ipt-'));
    // The host netns checks below put processes in this runner's netns: it must be the host's
    // (kernel threads such as kthreadd always live there).
    expect(ino('/proc/self/ns/net')).toBe(ino('/proc/2/ns/net'));
  });

  afterAll(async () => {
    for (const f of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'v', 'x'].map((n) => join(dir, `${n}.json`))) {
      if (existsSync(f)) mode(f).cleanup();
    }
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
    expect(hostHasOurs()).toBe(false);
  });

  describe('which network namespace', () => {
    it('the pod netns of a cgroup whose processes all agree; never the host netns; one policy per netns', async () => {
      const state = join(dir, 'a.json');
      const m = mode(state);
      const a = await pod('a');
      // hostNetwork-like: a cgroup whose process is in the host netns.
      const cgHost = env.cgroup('hostnet');
      env.spawn(null, cgHost, 'sleep', ['1000']);
      await waitFor(
        () => readFileSync(join(env.cgDir(cgHost), 'cgroup.procs'), 'utf8').trim() !== '',
        'host process in its cgroup',
      );
      const r = m.apply([policy('a', a.cg), policy('hostnet', cgHost)]);
      expect(r.applied.map((x) => x.policy)).toEqual(['a']);
      expect(r.skipped).toEqual([
        {
          policy: 'hostnet',
          reason: expect.stringMatching(
            /are in the host network namespace .*never puts rules there \(they would redirect the whole node's TCP\)/,
          ),
        },
      ]);
      expect(hostHasOurs()).toBe(false);
      expect(ours(a.ns)).toContain('-A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT');
      // spec.netns naming the host netns is refused the same way.
      const viaPath = m.apply([policy('a', a.cg), policy('hostpath', '/nowhere', '  netns: /proc/2/ns/net\n')]);
      expect(viaPath.skipped).toEqual([
        {
          policy: 'hostpath',
          reason: expect.stringMatching(/^spec\.netns \/proc\/2\/ns\/net is the host network namespace/),
        },
      ]);

      // A process that joined the cgroup before entering its netns (as our harness does): the pod's
      // processes disagree, so the policy waits, and what it applied before stays.
      const before = ours(a.ns);
      const straggler = env.spawn(null, a.cg, 'sleep', ['1000']);
      await waitFor(
        () => readFileSync(join(env.cgDir(a.cg), 'cgroup.procs'), 'utf8').includes(String(straggler.child.pid)),
        'straggler in the cgroup',
      );
      const mixed = m.apply([policy('a', a.cg)]);
      expect(mixed.skipped).toEqual([
        {
          policy: 'a',
          reason: expect.stringMatching(
            /processes of cgroup .* are in 2 different network namespaces \(.*host netns: pid \d+.*\); waiting until they agree/,
          ),
        },
      ]);
      expect(mixed.removed).toEqual([]);
      expect(ours(a.ns)).toEqual(before);
      expect(hostHasOurs()).toBe(false);
      await env.stop(straggler);

      // Two policies whose processes share one netns: neither is applied, the earlier rules stay.
      const cgSibling = env.cgroup('a-sibling');
      env.spawn(a.ns, cgSibling, 'sleep', ['1000']);
      await waitFor(() => m.apply([policy('a', a.cg), policy('sib', cgSibling)]).skipped.length === 2, 'both refused');
      const shared = m.status().policies;
      expect(shared.find((p) => p.policy === 'sib')).toMatchObject({
        outcome: 'skipped',
        reason: expect.stringMatching(/shares network namespace .* with a: iptables mode allows one policy per netns/),
      });
      expect(ours(a.ns)).toEqual(before);
      expect(m.cleanup().map((x) => x.outcome)).toEqual(['removed']);
      expect(ours(a.ns)).toEqual([]);
    });
  });

  describe('failures stay in their netns', () => {
    it('a restore that fails in one netns is reported for that policy; the others are applied and remembered', async () => {
      const state = join(dir, 'b.json');
      const m = mode(state);
      const b = await pod('b');
      const c = await pod('c');
      const fail = shim({
        'iptables-nft-restore': `if [ "$(stat -L -c %i /proc/self/ns/net)" = "${ino(`/run/netns/${b.ns}`)}" ]; then echo "iptables-nft-restore: line 2 failed (simulated: rejected in this netns)" >&2; exit 1; fi\nexec /usr/sbin/iptables-nft-restore "$@"`,
      });
      const r = withPath(fail, () => m.apply([policy('b', b.cg), policy('c', c.cg)]));
      expect(r.failed).toEqual([
        {
          policy: 'b',
          netns: expect.stringMatching(/^\/proc\/\d+\/ns\/net$/),
          reason: expect.stringMatching(
            /^IPv4: iptables-nft-restore --noflush -w 1 in netns .*: iptables-nft-restore: line 2 failed \(simulated.* \(no rules in place\)$/,
          ),
        },
      ]);
      expect(r.applied.map((x) => x.policy)).toEqual(['c']);
      expect(r.stateWritten).toBe(true);
      expect(ours(c.ns).length).toBeGreaterThan(0);
      expect(ours(b.ns)).toEqual([]);
      const st = m.status();
      expect(st.policies.find((p) => p.policy === 'b')).toMatchObject({ outcome: 'failed' });
      expect(st.policies.find((p) => p.policy === 'c')).toMatchObject({
        outcome: 'applied',
        backend: 'nft',
        families: ['ipv4'],
      });
      // Without the failure: b is applied, c is left alone (in sync).
      const again = m.apply([policy('b', b.cg), policy('c', c.cg)]);
      expect(again.applied.map((x) => x.policy)).toEqual(['b']);
      expect(again.unchanged).toEqual(['c']);
      // A policy edited into something this mode cannot do is not left half-applied: its earlier
      // rules go, and it says why.
      const edited = m.apply([policy('b', b.cg, '  accelerate: true\n'), policy('c', c.cg)]);
      expect(edited.skipped).toEqual([
        { policy: 'b', reason: expect.stringMatching(/^not supported in iptables mode: spec\.accelerate/) },
      ]);
      expect(edited.removed).toEqual([expect.objectContaining({ policy: 'b', outcome: 'removed' })]);
      expect(ours(b.ns)).toEqual([]);
      expect(ours(c.ns).length).toBeGreaterThan(0);
      m.cleanup();
    });
  });

  describe('netns by inode', () => {
    it('rules are removed from a netns whose process exited (found through /run/netns), and "gone" is said only when it is', async () => {
      const state = join(dir, 'd.json');
      const m = mode(state);
      const d = await pod('d');
      const e = await pod('e');
      m.apply([policy('d', d.cg), policy('e', e.cg)]);
      const remembered = JSON.parse(readFileSync(state, 'utf8')) as {
        netns: Record<string, { path: string; policy: string }>;
      };
      expect(Object.values(remembered.netns).map((n) => n.path)).toEqual([
        `/proc/${d.p.child.pid}/ns/net`,
        `/proc/${e.p.child.pid}/ns/net`,
      ]);
      await env.stop(d.p);
      await env.stop(e.p);
      // e's netns goes for real: no process, no mount, no fd refers to it any more.
      sh('ip', ['netns', 'del', e.ns]);
      expect(ours(d.ns).length).toBeGreaterThan(0);
      const r = m.apply([]);
      expect(r.removed).toEqual([
        {
          policy: 'd',
          netns: `/run/netns/${d.ns}`,
          netnsId: expect.any(String),
          outcome: 'removed',
          detail: expect.stringMatching(/removed every MESHREDIR line/),
        },
        {
          policy: 'e',
          netns: `/proc/${e.p.child.pid}/ns/net`,
          netnsId: expect.any(String),
          outcome: 'gone',
          detail: expect.stringMatching(
            /no longer exists — no process, open file or mount refers to it — so its rules went with it/,
          ),
        },
      ]);
      expect(ours(d.ns)).toEqual([]);
      expect(existsSync(state)).toBe(true);
    });

    it('cleanup says which netns it could not clean, keeps them in the state, and exits 1', async () => {
      const state = join(dir, 'f.json');
      const f = await pod('f');
      mode(state).apply([policy('f', f.cg)]);
      const fail = shim({ 'iptables-nft-restore': 'echo "iptables-nft-restore: simulated failure" >&2; exit 1' });
      const p = env.spawn(
        null,
        null,
        process.execPath,
        [CLI, 'cleanup', '--iptables-state', state, '--bpffs', env.bpffs, '--state-dir', env.stateDir],
        { env: { PATH: `${fail}:${process.env.PATH}` } },
      );
      expect(await p.exited).toBe(1);
      expect(p.err).toMatch(/FAILED: policy f: .*simulated failure.*rules may remain in network namespace/);
      expect(p.err).toMatch(/1 network namespace\(s\) still hold MESHREDIR rules; they stay in/);
      expect(ours(f.ns).length).toBeGreaterThan(0);
      expect(Object.keys((JSON.parse(readFileSync(state, 'utf8')) as { netns: object }).netns)).toHaveLength(1);
      const ok = env.spawn(null, null, process.execPath, [
        CLI,
        'cleanup',
        '--iptables-state',
        state,
        '--bpffs',
        env.bpffs,
        '--state-dir',
        env.stateDir,
      ]);
      expect(await ok.exited).toBe(0);
      expect(ok.out).toMatch(/policy f: removed every MESHREDIR line/);
      expect(ours(f.ns)).toEqual([]);
      expect(existsSync(state)).toBe(false);
    });
  });

  describe('backends', () => {
    it('a forced backend change applies on the new backend first: a held lock leaves the old rules working', async () => {
      const state = join(dir, 'g.json');
      const g = await pod('g');
      mode(state).apply([policy('g', g.cg)]);
      const nftRules = ours(g.ns);
      expect(nftRules.length).toBeGreaterThan(0);
      // Hold the legacy xtables lock the way iptables-legacy does (flock on /run/xtables.lock).
      const holder = env.spawn(
        null,
        null,
        'python3',
        [
          '-c',
          "import fcntl,sys\nf=open('/run/xtables.lock','a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\nsys.stdin.read()",
        ],
        { stdin: true },
      );
      await waitFor(() => holder.out.includes('locked'), 'lock held', holder);
      let r;
      try {
        r = mode(state, { backend: 'legacy' }).apply([policy('g', g.cg)]);
      } finally {
        holder.child.stdin!.end();
        await holder.exited;
      }
      expect(r.failed).toEqual([
        {
          policy: 'g',
          netns: expect.any(String),
          reason: expect.stringMatching(
            /^moving the rules from nft to legacy failed: IPv4: iptables-legacy-restore: the xtables lock was held by another process for more than 1s \(--lock-wait\).*; the rules stay on nft, unchanged$/,
          ),
        },
      ]);
      expect(ours(g.ns)).toEqual(nftRules);
      expect(ours(g.ns, 'iptables-legacy-save')).toEqual([]);
      // Lock free: the rules move, and only then leave nft.
      const moved = mode(state, { backend: 'legacy' }).apply([policy('g', g.cg)]);
      expect(moved.applied).toEqual([
        { policy: 'g', netns: expect.any(String), backend: 'legacy', families: ['ipv4', 'removed from nft'] },
      ]);
      expect(ours(g.ns)).toEqual([]);
      expect(ours(g.ns, 'iptables-legacy-save').length).toBe(nftRules.length);
      // Remembered: without forcing, the next apply stays on legacy and changes nothing.
      expect(mode(state).apply([policy('g', g.cg)]).unchanged).toEqual(['g']);
      mode(state).cleanup();
      expect(ours(g.ns, 'iptables-legacy-save')).toEqual([]);
    });

    it('a host without ip6tables: a v4-only policy never calls it; a v6 policy says what failed and what is in place', async () => {
      const state = join(dir, 'v.json');
      const v = await pod('v');
      const calls = join(dir, 'ip6tables-calls');
      const body = `echo "$0 $*" >> ${calls}; echo "ip6tables v1.8.9 (nf_tables): can't initialize ip6tables table \\\`nat': Address family not supported by protocol" >&2; exit 3`;
      const no6 = shim(
        Object.fromEntries(
          [
            'ip6tables-nft',
            'ip6tables-nft-save',
            'ip6tables-nft-restore',
            'ip6tables-legacy',
            'ip6tables-legacy-save',
            'ip6tables-legacy-restore',
          ].map((t) => [t, body]),
        ),
      );
      const m = mode(state);
      const r4 = withPath(no6, () => m.apply([policy('v', v.cg)]));
      expect(r4.applied).toEqual([{ policy: 'v', netns: expect.any(String), backend: 'nft', families: ['ipv4'] }]);
      expect(existsSync(calls)).toBe(false);
      const r6 = withPath(no6, () =>
        m.apply([policy('v', v.cg, '', '    outbound: 127.0.0.1:15001\n    outbound6: "[::1]:15001"\n')]),
      );
      expect(r6.failed).toEqual([
        {
          policy: 'v',
          netns: expect.any(String),
          reason: expect.stringMatching(
            /^IPv6: ip6tables-nft-save -t nat in netns .*: .*Address family not supported by protocol \(in place: ipv4 on nft\)$/,
          ),
        },
      ]);
      expect(existsSync(calls)).toBe(true);
      m.cleanup();
    });
  });

  describe('state, dry run and verify', () => {
    let x: { ns: string; cg: string; p: Proc };
    /** Per chain, each rule's target: iptables-save spells matches its own way and orders chains its own way. */
    const byChain = (ls: string[]) => {
      const m: Record<string, string[]> = {};
      for (const l of ls.filter((y) => y.startsWith('-A ')))
        (m[l.split(' ')[1]!] ??= []).push(l.slice(l.lastIndexOf('-j ')));
      return m;
    };
    it('an in-sync apply writes nothing: no state write, no restore (counters and ruleset unchanged)', async () => {
      const state = join(dir, 'h.json');
      const h = await pod('h');
      const m = mode(state);
      expect(m.apply([policy('h', h.cg)]).stateWritten).toBe(true);
      // Traffic through our chains, so that a restore (which resets our counters) would show.
      await env.server(h.ns, '127.0.0.1', 15001, 'proxy');
      env.ip(h.ns, 'addr', 'add', '10.9.9.9/32', 'dev', 'lo'); // a destination that stays in this netns
      expect((await env.client(h.ns, h.cg, ['connect', '10.9.9.9', '80'])).data).toMatch(/^proxy /);
      const counters = sh('ip', ['netns', 'exec', h.ns, 'iptables-nft-save', '-c', '-t', 'nat'])
        .split('\n')
        .filter((l) => l.includes('MESHREDIR'));
      expect(counters.find((l) => l.includes('-j REDIRECT'))).toMatch(/^\[1:\d+\]/);
      const mtime = statSync(state).mtimeMs;
      const text = readFileSync(state, 'utf8');
      for (let i = 0; i < 3; i++) {
        const r = m.apply([policy('h', h.cg)]);
        expect(r).toMatchObject({ applied: [], unchanged: ['h'], stateWritten: false });
      }
      expect(statSync(state).mtimeMs).toBe(mtime);
      expect(readFileSync(state, 'utf8')).toBe(text);
      expect(
        sh('ip', ['netns', 'exec', h.ns, 'iptables-nft-save', '-c', '-t', 'nat'])
          .split('\n')
          .filter((l) => l.includes('MESHREDIR')),
      ).toEqual(counters);
      m.cleanup();
    });

    it('agent --dry-run prints exactly the restore the agent then runs; refuses with the reason where it would not apply', async () => {
      const state = join(dir, 'x.json');
      x = await pod('x');
      const pdir = mkdtempSync(join(dir, 'policies-'));
      writeFileSync(
        join(pdir, 'x.yaml'),
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: x }\nspec:\n  cgroup: ${x.cg}\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n  outbound: { excludePorts: [22] }\n`,
      );
      const dry = async () => {
        const p = env.spawn(null, null, process.execPath, [
          CLI,
          'agent',
          '--mode',
          'iptables',
          '--dry-run',
          '--policies',
          pdir,
          '--iptables-state',
          state,
          '--state-dir',
          env.stateDir,
          '--lock-wait',
          '1',
        ]);
        return { code: await p.exited, out: p.out, err: p.err };
      };
      const first = await dry();
      expect(first.code, first.err).toBe(0);
      expect(first.out).toMatch(/^# policy x → netns \/proc\/\d+\/ns\/net \(\d+:\d+\), backend nft$/m);
      expect(first.out).toMatch(/^# IPv4: iptables-nft-restore --noflush -w 1 <<EOF$/m);
      expect(first.out).toMatch(/^-A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT$/m);
      expect(first.out).toMatch(/^# IPv6: not needed/m);
      expect(ours(x.ns)).toEqual([]); // a dry run changes nothing
      const input = first.out.split('<<EOF\n')[1]!.split('EOF\n')[0]!;
      const r = mode(state).apply(
        (await import('../../src/policy/load.js')).parsePolicyText(readFileSync(join(pdir, 'x.yaml'), 'utf8'), 'x.yaml')
          .policies,
      );
      expect(r.applied).toHaveLength(1);
      // What was applied is what was printed: the same rules, chain by chain.
      expect(byChain(ours(x.ns))).toEqual(byChain(input.split('\n')));
      const second = await dry();
      expect(second.out).toMatch(/^# IPv4: in sync, nothing to apply$/m);
      // A policy the mode would not apply: reason on stderr, exit 1.
      writeFileSync(
        join(pdir, 'host.yaml'),
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: host }\nspec:\n  cgroup: /nowhere\n  netns: /proc/2/ns/net\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n`,
      );
      writeFileSync(
        join(pdir, 'far.yaml'),
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: far }\nspec:\n  cgroup: /far\n  proxy:\n    outbound: 10.0.0.1:15001\n    bypass: { uids: [1337] }\n`,
      );
      const refused = await dry();
      expect(refused.code).toBe(1);
      expect(refused.err).toMatch(
        /^host: not applied in iptables mode: spec\.netns \/proc\/2\/ns\/net is the host network namespace/m,
      );
      expect(refused.err).toMatch(
        /^far: not applied in iptables mode: not supported in iptables mode: spec\.proxy\.outbound: 10\.0\.0\.1:15001/m,
      );
      expect(refused.out).not.toMatch(/policy (host|far)/);
    });

    it('verify checks the chain of the iptables mode: policy → netns → rules → redirect → proxy listening', async () => {
      const state = join(dir, 'x.json');
      const verify = async (...args: string[]) => {
        const p = env.spawn(null, null, process.execPath, [
          CLI,
          'verify',
          '--json',
          '--bpffs',
          env.bpffs,
          '--iptables-state',
          state,
          '--cgroup',
          x.cg,
          ...args,
        ]);
        const code = await p.exited;
        return {
          code,
          out: JSON.parse(p.out) as {
            ok: boolean;
            mode: string;
            steps: { step: string; ok: boolean; detail: string }[];
          },
        };
      };
      const down = await verify();
      expect(down.out.mode).toBe('iptables');
      expect(down.code).toBe(1);
      expect(down.out.steps.at(-1)).toMatchObject({
        step: 'proxy',
        ok: false,
        detail: expect.stringMatching(/nothing listens on 127\.0\.0\.1:15001/),
      });
      await env.server(x.ns, '127.0.0.1', 15001, 'proxy');
      const good = await verify();
      expect(good.out.steps.map((s) => s.step)).toEqual(['cgroup', 'policy', 'netns', 'rules', 'redirect', 'proxy']);
      expect(good.out.ok, JSON.stringify(good.out.steps)).toBe(true);
      expect(good.code).toBe(0);
      expect(good.out.steps.find((s) => s.step === 'redirect')!.detail).toMatch(
        /a connect to 192\.0\.2\.1:80 by uid 0\/gid 0 is redirected to 127\.0\.0\.1:15001/,
      );
      const excluded = await verify('--dest', '192.0.2.1:22');
      expect(excluded.out.steps.at(-1)).toMatchObject({
        step: 'redirect',
        ok: false,
        detail: expect.stringMatching(/would not be redirected: the rule ".*--dport 22 .*-j RETURN" lets it pass/),
      });
      sh('ip', ['netns', 'exec', x.ns, 'iptables-nft', '-t', 'nat', '-F', 'MESHREDIR_OUTPUT']);
      const drift = await verify();
      expect(drift.out.steps.at(-1)).toMatchObject({
        step: 'rules',
        ok: false,
        detail: expect.stringMatching(/applied rule\(s\) missing/),
      });
      mode(state).cleanup();
    });
  });
});
