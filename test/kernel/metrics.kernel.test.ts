// metrics.kernel.test.ts — the agent's /metrics, /healthz and /readyz, read by real tools: a real Prometheus
// scrapes the agent and PromQL over its HTTP API gives exactly the connections the test made (counters
// summed over CPUs: clients pinned to each CPU), promtool accepts the exposition, and readiness follows
// the programs (a link detached) and the reconcile (a pass that fails) — in the eBPF mode and, with the
// nat counters of a policy, in the iptables mode.
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { existsSync, mkdtempSync, readFileSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { Env, kernelDescribe, policyYaml, sh, waitFor, type Proc } from './harness.js';
import { startPrometheus, until, type Prometheus } from './prometheus.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import type { Counters } from '../../src/modes/ebpf/counters.js';

/** The address the agent logged it serves on. */
const served = (a: Proc): string | undefined =>
  a.err
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as { event?: string; address?: string })
    .find((l) => l.event === 'metrics')?.address;

const get = async (url: string) => {
  const r = await fetch(url);
  return { status: r.status, body: await r.text() };
};

/** One value of an instant query (the sum of what it selects; 0 when it selects nothing). */
const value = async (prom: Prometheus, q: string): Promise<number> =>
  (await prom.query(`sum(${q})`)).reduce((a, x) => a + x.value, 0);

kernelDescribe('metrics and health endpoint', () => {
  let env: Env;
  const dirs: string[] = [];
  const proms: Prometheus[] = [];
  const newDir = (what: string) => {
    const d = mkdtempSync(join(tmpdir(), `meshredir-test-${what}-`));
    dirs.push(d);
    return d;
  };
  /** `n` connects through `client.mjs loop`, half of them pinned to each CPU; every one must succeed and
   * be answered by `answer` (a prefix). */
  const connects = async (
    ns: string,
    cg: string,
    host: string,
    port: number,
    n: number,
    answer: string,
    uid?: number,
  ) => {
    const ncpu = Math.min(cpus().length, 2);
    const parts = Array.from({ length: ncpu }, (_, cpu) => Math.floor(n / ncpu) + (cpu < n % ncpu ? 1 : 0));
    for (const [cpu, k] of parts.entries()) {
      const out = await env.run(
        ns,
        cg,
        'taskset',
        [
          '-c',
          String(cpu),
          process.execPath,
          join(env.toolsDir, 'client.mjs'),
          'loop',
          host,
          String(port),
          String(k),
          answer,
        ],
        uid === undefined ? {} : { uid },
      );
      const r = JSON.parse(out.trim()) as {
        total: number;
        ok: number;
        firstError: string | null;
        firstUnexpected: string | null;
      };
      expect([r.total, r.ok], `${r.firstError ?? ''} ${r.firstUnexpected ?? ''}`).toEqual([k, k]);
    }
  };
  const promtool = (text: string) => spawnSync('promtool', ['check', 'metrics'], { input: text, encoding: 'utf8' });
  /** Agents still running after a test (one that failed half-way): stopped, so they hold no lock. */
  const agents: Proc[] = [];
  const started = (a: Proc) => (agents.push(a), a);
  afterEach(async () => {
    for (const a of agents.splice(0)) await env.stop(a);
  });

  beforeAll(() => {
    env = new Env();
  });

  afterAll(async () => {
    for (const p of proms) await p.stop();
    const problems = await env?.teardown();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  describe('eBPF mode', () => {
    let dir: string;
    let podA: string, cgA: string, cgProxy: string;
    const N = 40;
    const M = 6;

    beforeAll(async () => {
      dir = newDir('metrics-policies');
      const node = env.netns('node');
      podA = env.netns('a');
      const up = env.netns('up');
      env.bridge(node, 'br0', ['10.200.0.1/24']);
      env.plug(node, 'br0', podA, ['10.200.0.11/24']);
      env.plug(node, 'br0', up, ['10.200.0.100/24']);
      cgA = env.cgroup('pod-a');
      cgProxy = env.cgroup('proxy');
      await env.server(up, '10.200.0.100', 8080, 'up');
      await env.server(up, '10.200.0.100', 9090, 'direct');
      await env.haproxy(node, cgProxy, '10.200.0.1:15001', 15001);
      writeFileSync(
        join(dir, 'a.yaml'),
        policyYaml({
          name: 'pod-a',
          cgroup: cgA,
          outbound: '10.200.0.1:15001',
          bypassCgroups: [cgProxy],
          outboundSpec: { excludePorts: [9090] },
        }),
      );
    });

    it('Prometheus scrapes exactly the connections made (summed over CPUs); promtool accepts the exposition', async () => {
      const agent = started(await env.agent(dir, ['--interval', '1']));
      const addr = served(agent)!;
      expect(addr).toMatch(/^127\.0\.0\.1:\d+$/);
      const prom = await startPrometheus(env, [addr]);
      proms.push(prom);
      await prom.nextScrape();
      expect(await value(prom, 'up{job="meshredir"}')).toBe(1);
      expect(await value(prom, 'meshredir_connections_redirected_total{policy="pod-a"}')).toBe(0);

      await connects(podA, cgA, '10.200.0.100', 8080, N, 'up 10.200.0.1 '); // via HAProxy
      await connects(podA, cgA, '10.200.0.100', 9090, M, 'direct 10.200.0.11 '); // excluded port
      // The counts really are spread over CPUs, so the sum is what is checked.
      const pins = new Pins(env.bpffs);
      const slot = pins.slots().get('pod-a')!;
      const perCpu = pins.withMaps(['mr_stats'], (m) => m.get('mr_stats')!.getPerCpu(slot) as Counters[]);
      const used = perCpu.filter((c) => c.redirected > 0n).length;
      expect(used).toBe(Math.min(cpus().length, 2));

      await prom.nextScrape();
      expect(await value(prom, 'meshredir_connections_redirected_total{policy="pod-a"}')).toBe(N);
      expect(await value(prom, 'meshredir_connections_established_total{policy="pod-a"}')).toBe(N);
      expect(await value(prom, 'meshredir_original_destinations_served_total{policy="pod-a"}')).toBe(N);
      expect(await value(prom, 'meshredir_connections_bypassed_total{policy="pod-a",reason="port"}')).toBe(M);
      // HAProxy's own connects to the upstream, from the bypass cgroup.
      expect(await value(prom, 'meshredir_connections_bypassed_total{policy="pod-a",reason="proxy_cgroup"}')).toBe(N);
      expect(await value(prom, 'meshredir_connections_refused_total{policy="pod-a"}')).toBe(0);
      expect(await value(prom, 'meshredir_policies{state="applied"}')).toBe(1);
      expect(await value(prom, 'meshredir_mode_info{mode="ebpf",requested="ebpf"}')).toBe(1);
      expect(await value(prom, 'meshredir_program_attached')).toBeGreaterThanOrEqual(7);
      expect(await value(prom, 'meshredir_map_capacity{map="mr_orig"}')).toBe(2 * 16_384);
      expect(await value(prom, 'meshredir_map_entries{map="mr_slots"}')).toBe(1);
      expect(await value(prom, 'meshredir_handshakes_in_flight')).toBe(0);
      expect(await value(prom, 'meshredir_reconcile_duration_seconds_count')).toBeGreaterThanOrEqual(2);
      expect(await value(prom, 'meshredir_reconcile_errors_total')).toBe(0);
      expect(await value(prom, 'meshredir_mode_metrics_success')).toBe(1);
      // A scrape later, still exactly N: nothing is counted twice.
      await prom.nextScrape();
      expect(await value(prom, 'meshredir_connections_redirected_total{policy="pod-a"}')).toBe(N);

      const text = (await get(`http://${addr}/metrics`)).body;
      const lint = promtool(text);
      expect(lint.status, `${lint.stdout}${lint.stderr}`).toBe(0);
      expect(text).toMatch(/^meshredir_build_info\{version="\d+\.\d+\.\d+[^"]*"\} 1$/m);
      // DNS capture's counters are read from their pinned map too (no DNS policy here: zeros).
      expect(text).toMatch(/^meshredir_dns_captured_total\{policy="pod-a",call="connect_udp"\} 0$/m);

      // Another policy takes the freed slot: its counters start at zero, not at pod-a's.
      const policy = (name: string) =>
        policyYaml({
          name,
          cgroup: cgA,
          outbound: '10.200.0.1:15001',
          bypassCgroups: [cgProxy],
          outboundSpec: { excludePorts: [9090] },
        });
      writeFileSync(join(dir, 'a.yaml'), policy('pod-b'));
      await until(async () => pins.slots().has('pod-b'), 'pod-b applied', agent);
      expect(pins.slots().get('pod-b')).toBe(slot);
      const after = (await get(`http://${addr}/metrics`)).body;
      expect(after).toMatch(/^meshredir_connections_redirected_total\{policy="pod-b"\} 0$/m);
      expect(after).toMatch(/^meshredir_connections_bypassed_total\{policy="pod-b",reason="port"\} 0$/m);
      expect(after).not.toMatch(/policy="pod-a"/);
      writeFileSync(join(dir, 'a.yaml'), policy('pod-a'));
      await until(async () => pins.slots().has('pod-a'), 'pod-a applied again', agent);
      await env.stop(agent);
      await prom.stop();
      proms.pop();
    });

    it('/readyz follows the programs and the last reconcile; /healthz the loop', async () => {
      const agent = started(await env.agent(dir, ['--interval', '60']));
      const base = `http://${served(agent)!}`;
      const ready = async () => get(`${base}/readyz`);
      const touch = () => writeFileSync(join(dir, 'a.yaml'), readFileSync(join(dir, 'a.yaml'), 'utf8') + '\n');
      expect(await ready()).toEqual({ status: 200, body: expect.stringMatching(/^ok: \d+ programs attached\n$/) });
      expect((await get(`${base}/healthz`)).status).toBe(200);
      expect((await get(`${base}/nothing`)).status).toBe(404);

      // A link detached behind the agent's back: not ready at once (no pass needed to notice).
      sh('bpftool', ['link', 'detach', 'pinned', join(env.bpffs, 'links', 'mr_connect4')]);
      expect(await ready()).toEqual({ status: 503, body: 'not ok: detached: mr_connect4\n' });
      expect((await get(`${base}/healthz`)).status).toBe(200);
      touch(); // a change: the agent reconciles, re-attaching it
      await until(async () => (await ready()).status === 200, 'ready after the repair', agent);

      // A reconcile that fails: a foreign map pinned where mr_policies was (its layout is refused).
      const pin = join(env.bpffs, 'maps', 'mr_policies');
      rmSync(pin);
      sh('bpftool', [
        'map',
        'create',
        pin,
        'type',
        'hash',
        'key',
        '4',
        'value',
        '4',
        'entries',
        '1',
        'name',
        'mr_policies',
      ]);
      touch();
      await until(async () => (await ready()).status === 503, 'not ready after a failed pass', agent);
      expect((await ready()).body).toMatch(/^not ok: the last reconcile pass failed: .*mr_policies/);
      const metrics = (await get(`${base}/metrics`)).body;
      expect(metrics).toMatch(/^meshredir_last_reconcile_success 0$/m);
      expect(metrics).toMatch(/^meshredir_reconcile_errors_total [1-9]\d*$/m);
      expect((await get(`${base}/healthz`)).status).toBe(200); // the loop is alive: a restart would not help
      rmSync(pin);
      touch();
      await until(async () => (await ready()).status === 200, 'ready after a pass succeeds', agent);
      expect((await get(`${base}/metrics`)).body).toMatch(/^meshredir_last_reconcile_success 1$/m);
      await env.stop(agent);
    });

    it('a taken address fails the start before anything is changed; off serves nothing', async () => {
      const first = started(await env.agent(dir, ['--interval', '60']));
      const addr = served(first)!;
      const second = env.cli([
        'agent',
        '--policies',
        dir,
        '--cgroup-root',
        env.cgRoot,
        '--bpffs',
        `${env.bpffs}-second`,
        '--state-dir',
        `${env.stateDir}-second`,
        '--mode',
        'ebpf',
        '--metrics-address',
        addr,
      ]);
      try {
        expect(await second.exited).toBe(1);
        expect(second.err).toContain(`metrics address ${addr}: EADDRINUSE`);
        // Nothing made: no pins, not even the lock (the bpffs directory), no state directory.
        expect(existsSync(`${env.bpffs}-second`)).toBe(false);
        expect(existsSync(`${env.stateDir}-second`)).toBe(false);
      } finally {
        await env.stop(first);
        rmSync(`${env.stateDir}-second`, { recursive: true, force: true });
        if (existsSync(`${env.bpffs}-second`)) rmdirSync(`${env.bpffs}-second`);
      }
      const off = started(await env.agent(dir, ['--interval', '60', '--metrics-address', 'off']));
      try {
        expect(served(off)).toBeUndefined();
      } finally {
        await env.stop(off);
      }
    });
  });

  describe('iptables mode', () => {
    let dir: string;
    let pod: string, cg: string;
    let state: string;
    const N = 30;
    const M = 4;
    const K = 3;

    beforeAll(async () => {
      dir = newDir('metrics-ipt-policies');
      pod = env.netns('ipt');
      const up = env.netns('ipt-up');
      env.veth(pod, 'eth0', ['10.201.0.11/24'], up, 'eth0', ['10.201.0.100/24']);
      cg = env.cgroup('ipt-pod');
      // The process that tells the mode which netns is the pod's.
      const holder = env.spawn(pod, cg, 'sleep', ['1000']);
      await waitFor(
        () => readFileSync(join(env.cgDir(cg), 'cgroup.procs'), 'utf8').trim() !== '',
        'pod process',
        holder,
      );
      await env.server(up, '10.201.0.100', 8080, 'up');
      await env.server(up, '10.201.0.100', 9090, 'direct');
      // The "proxy": whatever listens on the redirect port in the pod's netns.
      await env.server(pod, '127.0.0.1', 15001, 'proxy');
      state = join(env.stateDir, 'iptables.json');
      writeFileSync(
        join(dir, 'ipt.yaml'),
        `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ipt }\nspec:\n  cgroup: ${cg}\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n  outbound: { excludePorts: [9090] }\n`,
      );
    });

    afterAll(() => {
      sh(process.execPath, [env.cliPath, ...env.cleanupArgs()], { allowFail: true });
    });

    it('the nat counters of a policy, scraped by Prometheus; readiness follows the reconcile', async () => {
      const agent = started(
        env.cli([
          'agent',
          '--policies',
          dir,
          '--cgroup-root',
          env.cgRoot,
          '--mode',
          'iptables',
          '--iptables-state',
          state,
          '--state-dir',
          env.stateDir,
          '--interval',
          '1',
          '--metrics-address',
          '127.0.0.1:0',
        ]),
      );
      await waitFor(() => agent.err.includes('redirect-ready'), 'agent ready', agent, 30_000);
      const addr = served(agent)!;
      const base = `http://${addr}`;
      expect((await get(`${base}/readyz`)).body).toBe('ok: rules applied in 1 network namespace(s)\n');
      const prom = await startPrometheus(env, [addr]);
      proms.push(prom);

      await connects(pod, cg, '10.201.0.100', 8080, N, 'proxy '); // redirected
      await connects(pod, cg, '10.201.0.100', 9090, M, 'direct 10.201.0.11 '); // excluded port
      await connects(pod, cg, '10.201.0.100', 8080, K, 'up 10.201.0.11 ', 1337); // the proxy's uid

      await prom.nextScrape();
      expect(await value(prom, 'meshredir_connections_redirected_total{policy="ipt"}')).toBe(N);
      expect(await value(prom, 'meshredir_connections_bypassed_total{policy="ipt",reason="port"}')).toBe(M);
      expect(await value(prom, 'meshredir_connections_bypassed_total{policy="ipt",reason="owner"}')).toBe(K);
      expect(await value(prom, 'meshredir_connections_bypassed_total{policy="ipt",reason="cidr"}')).toBe(0);
      expect(await value(prom, 'meshredir_iptables_counters_readable{policy="ipt"}')).toBe(1);
      expect(await value(prom, 'meshredir_mode_info{mode="iptables"}')).toBe(1);
      const lint = promtool((await get(`${base}/metrics`)).body);
      expect(lint.status, `${lint.stdout}${lint.stderr}`).toBe(0);

      // A pass that fails as a whole: the state file (where the rules are) is unreadable.
      const saved = readFileSync(state, 'utf8');
      writeFileSync(state, '{ not json');
      // The mode's own readiness reads the state too (it may say so first); then the pass fails.
      await until(
        async () =>
          /^not ok: the last reconcile pass failed: .*not valid JSON/.test((await get(`${base}/readyz`)).body),
        'not ready after a failed pass',
        agent,
      );
      expect((await get(`${base}/readyz`)).status).toBe(503);
      expect((await get(`${base}/metrics`)).body).toMatch(/^meshredir_last_reconcile_success 0$/m);
      expect((await get(`${base}/metrics`)).body).toMatch(/^meshredir_mode_metrics_success 0$/m);
      expect((await get(`${base}/healthz`)).status).toBe(200);
      writeFileSync(state, saved);
      await until(async () => (await get(`${base}/readyz`)).status === 200, 'ready again', agent);
      // Counters survive (they live in the nat table, not in the agent).
      await prom.nextScrape();
      expect(await value(prom, 'meshredir_connections_redirected_total{policy="ipt"}')).toBe(N);
      await env.stop(agent);
    });
  });
});
