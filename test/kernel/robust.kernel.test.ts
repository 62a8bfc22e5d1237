// robust.kernel.test.ts — the agent against what operators and bad files do to it (issue 16), always with
// a good policy applied beside the bad input: that policy's pod keeps being redirected and a re-created
// cgroup of it is covered within one interval, the bad input is named in the log and in `status`, the
// agent's memory stays bounded (VmHWM), and SIGTERM still stops it.
import { afterAll, afterEach, beforeAll, expect, it, vi } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmdirSync,
  rmSync,
  statSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, waitFor, type Proc } from './harness.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { CgKind } from '../../src/bpf/abi.js';
import { bytes } from '../../src/policy/limits.js';

const INTERVAL = 1;

kernelDescribe('the agent against operators and bad files', () => {
  let env: Env;
  let dir: string;
  let node: string, podA: string, up: string;
  let cgA: string, cgProxy: string;
  const agents: Proc[] = [];
  const pins = () => new Pins(env.bpffs);

  const start = async (extra: string[] = [], policies = dir) => {
    const a = await env.agent(policies, ['--interval', String(INTERVAL), ...extra]);
    agents.push(a);
    return a;
  };
  const agentArgs = (policies: string, extra: string[] = []) => [
    'agent',
    '--policies',
    policies,
    '--cgroup-root',
    env.cgRoot,
    '--bpffs',
    env.bpffs,
    '--state-dir',
    env.stateDir,
    '--mode',
    'ebpf',
    // Any free loopback port: two agents started together must meet at the lock, not at the default port.
    '--metrics-address',
    '127.0.0.1:0',
    '--interval',
    String(INTERVAL),
    ...extra,
  ];
  /** The agent's log lines (one JSON object per line on stderr). */
  const logs = (a: Proc) =>
    a.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { level: number; event?: string; msg: string });
  /** The longest of the agent's recent passes, in ms (from its 'reconciled' / 'in sync' lines). */
  const passMs = (a: Proc) =>
    Math.max(
      0,
      ...logs(a)
        .filter((l) => l.msg === 'reconciled' || l.msg === 'in sync')
        .slice(-5)
        .map((l) => (l as { ms?: number }).ms ?? 0),
    );
  const said = (a: Proc, text: string | RegExp, level?: number) =>
    logs(a).some(
      (l) =>
        (level === undefined || l.level === level) && (typeof text === 'string' ? l.msg === text : text.test(l.msg)),
    );
  const WARN = 40;
  const ERROR = 50;
  const viaProxy = async () => (await env.client(podA, cgA, ['connect', '10.200.0.100', '8080'])).data ?? '';
  const status = async () =>
    JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir])) as {
      agent: {
        running: number | null;
        lastPass: { at: string | null; ok: boolean | null; stale: boolean };
        lastReconcile: {
          ok: boolean;
          errors: string[];
          warnings: string[];
          outcomes?: { policy: string; file: string; state: string; reason?: string }[];
        };
      };
      maps: { map: string; entries: number; max: number }[];
    };
  /** Peak resident memory of a process, in KiB. */
  const hwm = (pid: number) => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
  const portExcluded = (port: number) =>
    pins()
      .entries<[{ port: number }, number][]>('mr_ports')
      .some(([k]) => k.port === port);
  /** Polls an async condition (the bound only ends a hang). */
  const until = async (cond: () => Promise<boolean>, what: string, ms: number) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      if (await cond()) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`${what}: not after ${ms} ms`);
  };
  const policyIds = () =>
    pins()
      .entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups')
      .filter(([, v]) => v.kind === CgKind.POLICY)
      .map(([id]) => id);
  /**
   * The pod's cgroup deleted and made again (a new id, as a container runtime does): covered within one
   * interval, proven by the map entry and a connection through the proxy.
   */
  const recreatedPodCovered = async (a: Proc) => {
    const cg = env.cgDir(cgA);
    rmdirSync(cg);
    mkdirSync(cg);
    const id = statSync(cg, { bigint: true }).ino;
    const t0 = Date.now();
    // One interval after the pass in flight (which may have looked before the mkdir) and the next one.
    const bound = INTERVAL * 1000 + 2 * passMs(a) + 1500;
    await waitFor(() => policyIds().includes(id), `re-created pod cgroup in mr_cgroups within ${bound} ms`, a, bound);
    console.log(`re-created cgroup covered after ${Date.now() - t0} ms (passes take up to ${passMs(a)} ms)`);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
  };
  const goodYaml = (excludePorts = [9090]) =>
    policyYaml({
      name: 'pod-a',
      cgroup: cgA,
      outbound: '10.200.0.1:15001',
      bypassCgroups: [cgProxy],
      outboundSpec: { excludePorts },
    });

  // The agents of this file log every pass with its duration (a re-created cgroup is covered within one
  // interval of the pass in flight); the level goes back for the files after this one.
  const level = process.env.MESHREDIR_LOG_LEVEL;

  beforeAll(async () => {
    process.env.MESHREDIR_LOG_LEVEL = 'debug';
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    node = env.netns('node');
    podA = env.netns('a');
    up = env.netns('up');
    env.bridge(node, 'br0', ['10.200.0.1/24']);
    env.plug(node, 'br0', podA, ['10.200.0.11/24']);
    env.plug(node, 'br0', up, ['10.200.0.100/24']);
    cgA = env.cgroup('pod-a');
    cgProxy = env.cgroup('proxy');
    await env.server(up, '10.200.0.100', 8080, 'up');
    await env.haproxy(node, cgProxy, '10.200.0.1:15001', 15001);
    writeFileSync(join(dir, 'a.yaml'), goodYaml());
  });

  // A test that failed half-way leaves no agent behind to hold the next one's lock.
  afterEach(async () => {
    for (const a of agents.splice(0)) await env.stop(a);
  });

  afterAll(async () => {
    if (level === undefined) delete process.env.MESHREDIR_LOG_LEVEL;
    else process.env.MESHREDIR_LOG_LEVEL = level;
    for (const a of agents) await env.stop(a, 'SIGKILL');
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('a 30 MB valid file, a 100 MB file, a symlink to /dev/zero, a FIFO, a socket: named, skipped, memory bounded; the agent keeps reconciling and SIGTERM stops it', async () => {
    const a = await start();
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    const big = join(dir, 'big.yaml');
    const huge = join(dir, 'huge.yaml');
    const zero = join(dir, 'zero.yaml');
    const fifo = join(dir, 'x.yaml');
    const sock = join(dir, 'sock.yaml');
    // 30 MB and valid: 2.8 million excluded ports (the file that took 2.8 GiB and 47 s per reconcile).
    writeFileSync(
      big,
      policyYaml({
        name: 'big',
        cgroup: `${env.cgRoot}/big`,
        outbound: '10.200.0.1:15001',
        outboundSpec: { excludePorts: Array.from({ length: 2_800_000 }, (_, i) => 1 + (i % 65535)) },
      }),
    );
    expect(statSync(big).size).toBeGreaterThan(30_000_000);
    writeFileSync(huge, 'x: ');
    truncateSync(huge, 100 * 1024 * 1024);
    symlinkSync('/dev/zero', zero);
    execFileSync('mkfifo', [fifo]);
    execFileSync('python3', ['-c', `import socket; socket.socket(socket.AF_UNIX).bind(${JSON.stringify(sock)})`]);
    try {
      const expected: [string, string, number][] = [
        [big, `${big}: ${bytes(statSync(big).size)}: larger than the 4 MiB limit per policy file; not read`, ERROR],
        [huge, `${huge}: 100 MiB: larger than the 4 MiB limit per policy file; not read`, ERROR],
        [zero, `${zero}: skipped: a symlink to /dev/zero, a character device, not a regular file`, WARN],
        [fifo, `${fifo}: skipped: a FIFO, not a regular file`, WARN],
        [sock, `${sock}: skipped: a socket, not a regular file`, WARN],
      ];
      for (const [f, m, level] of expected) await waitFor(() => said(a, m, level), `${f} named in the log`, a, 10_000);
      // … and in status, as the last reconcile's errors and warnings.
      const st = await status();
      for (const [f, , level] of expected) {
        const list = level === ERROR ? st.agent.lastReconcile.errors : st.agent.lastReconcile.warnings;
        expect(
          list.some((m) => m.startsWith(`${f}: `)),
          `${f} in status`,
        ).toBe(true);
      }
      // Nothing was read of them: the agent's peak memory is that of an agent with one small policy.
      const peak = hwm(a.child.pid!);
      expect(peak, `VmHWM ${peak} kB`).toBeLessThan(200 * 1024);
      // Still reconciling: a re-created cgroup is covered, an edit applies.
      await recreatedPodCovered(a);
      writeFileSync(join(dir, 'a.yaml'), goodYaml([9090, 8080]));
      await waitFor(() => portExcluded(8080), 'edit applied', a, 5000);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
      writeFileSync(join(dir, 'a.yaml'), goodYaml());
      await waitFor(() => !portExcluded(8080), 'edit back', a, 5000);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      expect(hwm(a.child.pid!)).toBeLessThan(200 * 1024);
      // SIGTERM stops it, FIFO and all.
      const t0 = Date.now();
      expect(await env.stop(a)).toBe(0);
      expect(Date.now() - t0).toBeLessThan(5000);
      console.log(`VmHWM with the bad files: ${peak} kB`);
    } finally {
      for (const f of [big, huge, zero, fifo, sock]) rmSync(f, { force: true });
    }
  });

  it('two agents on one installation: the second exits 1 naming the first one’s pid; started together, one wins; cleanup refuses while one runs (--force: removes, and the agent repairs with a warning)', async () => {
    const a = await start();
    const other = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    const otherState = mkdtempSync(join(tmpdir(), 'meshredir-test-state-'));
    try {
      // Same --bpffs, another policy directory and state directory: the pins are what matters.
      const b = env.cli([...agentArgs(other), '--state-dir', otherState]);
      expect(await b.exited).toBe(1);
      expect(b.err).toContain(
        `another meshredir agent (pid ${a.child.pid}) holds the lock on ${env.bpffs} (the eBPF pins): one agent per installation; stop it first`,
      );
      expect(b.err).not.toMatch(/EEXIST/);
      // Same --state-dir, another --bpffs: one agent per agent.json; nothing made under the other bpffs.
      const c = env.cli([...agentArgs(dir), '--bpffs', `${env.bpffs}-other`]);
      expect(await c.exited).toBe(1);
      expect(c.err).toContain(
        `another meshredir agent (pid ${a.child.pid}) holds the lock on ${env.stateDir}/agent.lock`,
      );
      expect(() => statSync(`${env.bpffs}-other`)).toThrow();
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      // cleanup while it runs: refused, saying who and why.
      const refused = env.cli(env.cleanupArgs());
      expect(await refused.exited).toBe(1);
      expect(refused.err).toContain(
        `an agent (pid ${a.child.pid}) holds the lock on ${env.stateDir}/agent.lock (the agent state in ${env.stateDir}); an agent (pid ${a.child.pid}) holds the lock on ${env.bpffs} (the eBPF pins): it would put back what it manages within its interval`,
      );
      expect(refused.err).toContain('Stop it first, or use --force to remove everything anyway');
      expect(pins().links().length).toBeGreaterThan(0);
      // --force: removed, with a warning; the agent puts it back within an interval and warns.
      const forced = env.cli(env.cleanupArgs('--force'));
      expect(await forced.exited).toBe(0);
      expect(forced.err).toContain('removing everything anyway (--force)');
      await waitFor(
        () =>
          said(
            a,
            /^changed behind the agent's back \(not by this agent\): .*link pin mr_connect4 deleted.*map pin mr_cgroups deleted/,
            WARN,
          ),
        'repair warned about',
        a,
        INTERVAL * 1000 + 3000,
      );
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      // The repaired bpffs directory is locked again (at the end of the repairing pass): still refused.
      await new Promise((r) => setTimeout(r, INTERVAL * 1000 + 500));
      const d = env.cli([...agentArgs(other), '--state-dir', otherState]);
      expect(await d.exited).toBe(1);
      expect(d.err).toContain(`(pid ${a.child.pid}) holds the lock on ${env.bpffs} (the eBPF pins)`);
      await env.stop(a);
      // Started together on a clean host: exactly one runs, the other names it.
      await env.cliRun(env.cleanupArgs());
      // Each on a free metrics port: this is about the locks, not the address.
      const anyPort = ['--metrics-address', '127.0.0.1:0'];
      const pair = [env.cli(agentArgs(dir, anyPort)), env.cli(agentArgs(dir, anyPort))];
      agents.push(...pair);
      await waitFor(
        () => pair.some((p) => p.child.exitCode !== null) && pair.some((p) => /redirect-ready/.test(p.err)),
        'one ready, one refused',
        undefined,
        30_000,
      );
      const [winner, loser] = pair[0]!.child.exitCode === null ? [pair[0]!, pair[1]!] : [pair[1]!, pair[0]!];
      expect(loser.child.exitCode).toBe(1);
      expect(loser.err).toMatch(new RegExp(`another meshredir agent \\(pid ${winner.child.pid}\\) holds the lock on `));
      expect(loser.err).not.toMatch(/EEXIST/);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      await env.stop(winner);
    } finally {
      rmSync(other, { recursive: true, force: true });
      rmSync(otherState, { recursive: true, force: true });
    }
  });

  it('policies that overflow mr_cidrs together: the one that does not fit is rejected by name, every other policy is reconciled, the map is not left full', async () => {
    const a = await start();
    const cidrs = (k: number, n: number) =>
      Array.from({ length: n }, (_, i) => `${10 + k}.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}/32`);
    // Written aside and moved in together, so that the agent sees them in one pass, in file order.
    const staging = mkdtempSync(join(tmpdir(), 'meshredir-test-staging-'));
    const files: string[] = [];
    const put = (name: string, text: string) => {
      writeFileSync(join(staging, name), text);
      files.push(join(dir, name));
    };
    for (let k = 1; k <= 5; k++) {
      const cg = env.cgroup(`p${k}`); // existing cgroups: their entries count
      put(
        `p${k}.yaml`,
        policyYaml({
          name: `p${k}`,
          cgroup: cg,
          outbound: '10.200.0.1:15001',
          outboundSpec: { excludeCidrs: cidrs(k, 60_000) },
        }),
      );
    }
    // Past the per-policy limit: refused by the schema, at the field.
    const over = join(dir, 'over.yaml');
    put(
      'over.yaml',
      policyYaml({
        name: 'over',
        cgroup: env.cgroup('over'),
        outbound: '10.200.0.1:15001',
        outboundSpec: { excludeCidrs: cidrs(9, 65_537) },
      }),
    );
    for (const f of files) execFileSync('mv', [join(staging, f.slice(dir.length + 1)), f]);
    rmSync(staging, { recursive: true, force: true });
    try {
      const p5 = join(dir, 'p5.yaml');
      const rejected = `${p5}: policy p5: does not fit in the eBPF maps: mr_cidrs would hold 300,000 entries, more than its 262,144 (this policy needs 60,000, the policies admitted before it 240,000); not applied`;
      await waitFor(() => said(a, rejected, ERROR), 'p5 rejected by name', a, 60_000);
      expect(
        said(
          a,
          `${over}: spec.outbound.excludeCidrs: 65,537 CIDRs in includeCidrs and excludeCidrs together (mr_cidrs holds 262,144 for every policy of the node); at most 65,536 per policy`,
          ERROR,
        ),
      ).toBe(true);
      expect(a.err).not.toMatch(/ENOSPC|reconcile_failed/);
      const slots = pins().slots();
      expect([...slots.keys()].sort()).toEqual(['p1', 'p2', 'p3', 'p4', 'pod-a']);
      const st = await status();
      expect(st.maps.find((m) => m.map === 'mr_cidrs')).toEqual({ map: 'mr_cidrs', entries: 240_000, max: 262_144 });
      expect(st.agent.lastReconcile.errors).toContain(rejected);
      expect(st.agent.lastReconcile.outcomes).toContainEqual({
        policy: 'p5',
        file: p5,
        state: 'rejected',
        reason: rejected,
      });
      // Every other policy is reconciled: the good pod, and a re-created cgroup of it.
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      await recreatedPodCovered(a);
      // Room made (p1 goes): p5 fits now and is applied.
      rmSync(files[0]!);
      await waitFor(
        () => pins().slots().has('p5') && !pins().slots().has('p1'),
        'p5 applied once p1 is gone',
        a,
        30_000,
      );
      expect((await status()).maps.find((m) => m.map === 'mr_cidrs')!.entries).toBe(240_000);
    } finally {
      for (const f of files) rmSync(f, { force: true });
      await waitFor(() => pins().slots().size === 1, 'the big policies removed', a, 60_000);
      await env.stop(a);
    }
  }, 300_000);

  it('a policy whose write fails (injected ENOSPC half-way) is rolled back alone: named, failed in status, the others reconciled and edited', async () => {
    const cgBad = env.cgroup('bad');
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      policyYaml({
        name: 'pod-bad',
        cgroup: cgBad,
        outbound: '10.200.0.1:15001',
        outboundSpec: { excludePorts: Array.from({ length: 40 }, (_, i) => 1000 + i), excludeCidrs: ['192.0.2.0/24'] },
      }),
    );
    const a = env.spawn(null, null, process.execPath, [env.cliPath, ...agentArgs(dir)], {
      env: { MESHREDIR_FAULT: 'fail-write:mr_ports:pod-bad' },
    });
    agents.push(a);
    try {
      await waitFor(() => /redirect-ready/.test(a.err), 'agent ready', a, 30_000);
      const failed = new RegExp(
        `^${bad.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}: policy pod-bad: cannot be written: batch update mr_ports \\(injected: MESHREDIR_FAULT=fail-write:mr_ports:pod-bad\\): bpf_map_update_batch: ENOSPC .*; what this pass wrote of it was rolled back \\(what was in place before stays\\)$`,
      );
      expect(said(a, failed, ERROR)).toBe(true);
      expect(said(a, /^writing the policy maps in one batch failed/, WARN)).toBe(true);
      // Rolled back: nothing of pod-bad in any map (its slot, ports, CIDRs, cgroup); pod-a whole. Every
      // pass (each second) writes pod-bad again and rolls it back, so the maps are read between two
      // passes: retried until one reading is whole (a rollback that never happens never passes).
      await vi.waitFor(
        () => {
          const slots = pins().slots();
          expect([...slots.keys()]).toEqual(['pod-a']);
          const own = slots.get('pod-a')!;
          expect(
            pins()
              .entries<[{ slot: number }, number][]>('mr_ports')
              .every(([k]) => k.slot === own),
          ).toBe(true);
          expect(pins().entries<[unknown, number][]>('mr_cidrs')).toEqual([]);
          expect(
            pins()
              .entries<[bigint, { slot: number }][]>('mr_cgroups')
              .every(([, v]) => v.slot === own),
          ).toBe(true);
        },
        { timeout: 5000, interval: 50 },
      );
      const st = await status();
      expect(st.agent.lastReconcile.outcomes).toContainEqual(
        expect.objectContaining({ policy: 'pod-bad', file: bad, state: 'failed' }),
      );
      // Every pass fails it again, and every other policy is still reconciled: a re-created cgroup, an edit.
      await recreatedPodCovered(a);
      writeFileSync(join(dir, 'a.yaml'), goodYaml([9090, 8080]));
      await waitFor(
        () =>
          pins()
            .entries<[{ slot: number; port: number }, number][]>('mr_ports')
            .some(([k]) => k.port === 8080),
        'edit of pod-a applied beside the failing policy',
        a,
        5000,
      );
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
    } finally {
      writeFileSync(join(dir, 'a.yaml'), goodYaml());
      rmSync(bad, { force: true });
      await waitFor(() => !portExcluded(8080), 'edit back', a, 5000);
      await env.stop(a);
    }
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
  });

  it('repairs of what the agent did not do are warnings: an edited map entry, a detached link; a map full of stale entries makes room first', async () => {
    const a = await start();
    const own = pins().slots().get('pod-a')!;
    // A deleted mr_cgroups entry, and a foreign entry in mr_ports.
    const cg = pins().openMap('mr_cgroups');
    try {
      cg.delete(statSync(env.cgDir(cgA), { bigint: true }).ino);
    } finally {
      cg.close();
    }
    const ports = pins().openMap('mr_ports');
    try {
      ports.set({ slot: own, port: 4242, pad: 0 }, 2);
    } finally {
      ports.close();
    }
    const edits = () =>
      logs(a)
        .filter(
          (l) =>
            l.level === WARN &&
            l.msg.startsWith("map entries changed behind the agent's back (not by this agent), restored: "),
        )
        .map((l) => l.msg)
        .join('\n');
    await waitFor(
      () =>
        edits().includes('mr_cgroups (1 written back, 0 removed)') &&
        edits().includes('mr_ports (0 written back, 1 removed)'),
      'both edits warned about',
      a,
      INTERVAL * 1000 + 3000,
    );
    const link = pins()
      .links()
      .find((l) => l.name === 'mr_connect4')!;
    execFileSync('bpftool', ['link', 'detach', 'id', String(link.id)]);
    await waitFor(
      () =>
        said(
          a,
          "changed behind the agent's back (not by this agent): link mr_connect4 detached; loading and attaching again",
          WARN,
        ),
      'detach warned about',
      a,
      INTERVAL * 1000 + 3000,
    );
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
    // mr_cidrs filled with stale entries (262,134 of 262,144) while the agent is down; then a policy edit
    // adds 100 CIDRs: they cannot fit beside the stale ones, which therefore go first.
    const cidrs = pins().openMap('mr_cidrs');
    try {
      const junk: [unknown, unknown][] = [];
      for (let i = 0; i < 262_134; i++) {
        const addr = Buffer.alloc(16);
        addr.writeUInt32BE(0xac000000 + i);
        junk.push([{ prefixlen: 32 + 8 + 32, slot: own, family: 2, addr, pad: Buffer.alloc(3) }, 2]);
      }
      cidrs.setMany(junk as [never, never][]);
    } finally {
      cidrs.close();
    }
    writeFileSync(
      join(dir, 'a.yaml'),
      policyYaml({
        name: 'pod-a',
        cgroup: cgA,
        outbound: '10.200.0.1:15001',
        bypassCgroups: [cgProxy],
        outboundSpec: { excludePorts: [9090], excludeCidrs: Array.from({ length: 100 }, (_, i) => `192.0.2.${i}/32`) },
      }),
    );
    const b = await start(['--interval', '600']);
    try {
      await waitFor(() => pins().entries<unknown[]>('mr_cidrs').length === 100, 'stale entries replaced', b, 30_000);
      expect(
        said(b, 'mr_cidrs: stale entries removed before the new ones were written (the map had no room for both)'),
      ).toBe(true);
      expect(b.err).not.toMatch(/ENOSPC|reconcile_failed/);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    } finally {
      writeFileSync(join(dir, 'a.yaml'), goodYaml());
      await waitFor(() => pins().entries<unknown[]>('mr_cidrs').length === 0, 'edit back', b, 10_000);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      await env.stop(b);
    }
  });

  it('the policy directory and its files: writable by others or owned by another user are refused with the reason; the good policy stays', async () => {
    // At start: the agent refuses a directory others can write to.
    chmodSync(dir, 0o777);
    const p = env.cli(agentArgs(dir));
    expect(await p.exited).toBe(1);
    expect(p.err).toContain(
      `policy directory ${dir} is writable by its group and others (mode 0777): refused, nothing was changed`,
    );
    chmodSync(dir, 0o700);
    const a = await start();
    const cgF = env.cgroup('foreign');
    const foreign = join(dir, 'foreign.yaml');
    const ww = join(dir, 'ww.yaml');
    writeFileSync(foreign, policyYaml({ name: 'pod-f', cgroup: cgF, outbound: '10.200.0.1:15001' }));
    chownSync(foreign, 65534, 65534);
    writeFileSync(
      ww,
      policyYaml({ name: 'pod-w', cgroup: cgF.replace('foreign', 'ww'), outbound: '10.200.0.1:15001' }),
    );
    chmodSync(ww, 0o666);
    try {
      await waitFor(
        () =>
          said(
            a,
            `${foreign}: refused: owned by uid 65534, not by root; policy files must be writable only by root`,
            ERROR,
          ) &&
          said(
            a,
            `${ww}: refused: writable by its group and others (mode 0666); policy files must be writable only by root`,
            ERROR,
          ),
        'files refused with the reason',
        a,
        5000,
      );
      expect([...pins().slots().keys()]).toEqual(['pod-a']);
      // While running: the directory made writable by others is refused whole; nothing changes.
      chmodSync(dir, 0o777);
      const m = `policy directory ${dir} is writable by its group and others (mode 0777): refused, nothing was changed (it must be writable only by root, like the state directory)`;
      await waitFor(() => said(a, m, ERROR), 'directory refused', a, INTERVAL * 1000 + 3000);
      const st = await status();
      expect(st.agent.lastReconcile).toMatchObject({ ok: false, errors: [m] });
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      chmodSync(dir, 0o700);
      await until(async () => (await status()).agent.lastReconcile.ok, 'a pass ok again', INTERVAL * 1000 + 5000);
      await recreatedPodCovered(a);
    } finally {
      chmodSync(dir, 0o700);
      rmSync(foreign, { force: true });
      rmSync(ww, { force: true });
      await env.stop(a);
    }
  });

  it('liveness: status shows each completed pass (agent.json untouched by quiet ones), a stuck agent as STALE, a dead one as not running; as a non-root user it says it cannot read, not "not installed"', async () => {
    const a = await start();
    const stateFile = join(env.stateDir, 'agent.json');
    const written = statSync(stateFile).mtimeMs;
    await new Promise((r) => setTimeout(r, 3 * INTERVAL * 1000 + 500));
    let st = await status();
    expect(st.agent.running).toBe(a.child.pid);
    expect(st.agent.lastPass.ok).toBe(true);
    expect(Date.now() - Date.parse(st.agent.lastPass.at!)).toBeLessThan(2 * INTERVAL * 1000 + 500);
    expect(st.agent.lastPass.stale).toBe(false);
    expect(statSync(stateFile).mtimeMs).toBe(written);
    // Stuck (stopped): no pass for more than 3 intervals + 10 s is STALE.
    a.child.kill('SIGSTOP');
    try {
      await new Promise((r) => setTimeout(r, (3 * INTERVAL + 10) * 1000 + 2000));
      st = await status();
      expect(st.agent.lastPass.stale).toBe(true);
      expect(await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir])).toMatch(
        new RegExp(
          `agent running \\(pid ${a.child.pid}\\); last pass completed ok at \\S+ \\(\\d+ s ago; a pass every 1 s\\) — STALE: the agent looks stuck`,
        ),
      );
    } finally {
      a.child.kill('SIGCONT');
    }
    await new Promise((r) => setTimeout(r, 2 * INTERVAL * 1000 + 500));
    expect((await status()).agent.lastPass.stale).toBe(false);
    // A non-root user cannot read the pins or the state: said so, exit 1 (not "not installed", exit 3).
    const asNobody = env.spawn(
      null,
      null,
      process.execPath,
      [env.cliPath, 'status', '--bpffs', env.bpffs, '--state-dir', env.stateDir],
      { uid: 65534 },
    );
    expect(await asNobody.exited).toBe(1);
    expect(asNobody.out + asNobody.err).not.toMatch(/not installed/);
    expect(asNobody.err).toContain(`cannot read the pins under ${env.bpffs}: EACCES (permission denied)`);
    expect(asNobody.out).toContain(`agent state: ${stateFile}: cannot read: EACCES`);
    // Dead: not running, with the time of its last pass.
    await env.stop(a, 'SIGKILL');
    st = await status();
    expect(st.agent.running).toBeNull();
    expect(await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir])).toMatch(
      new RegExp(`agent not running \\(last pid ${a.child.pid}\\); last pass completed ok at `),
    );
  });
});
