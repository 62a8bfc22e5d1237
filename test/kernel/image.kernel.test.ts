// image.kernel.test.ts — the container image, built by `make image` from these sources and run with
// podman the way deploy/kubernetes/daemonset.yaml runs it (its capabilities, host PID and network
// namespaces, the host's cgroup2 and bpffs, read-only root): redirects test pods to an unmodified
// HAProxy, re-adopts its pins across a container restart without dropping a connection, cleans up
// after itself, and names what is missing when a capability or mount is. Minutes: the image build.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parse } from 'yaml';
import { Env, kernelDescribe, policyYaml, sh, waitFor, ROOT, type Proc } from './harness.js';

const IMAGE = 'localhost/meshredir:latest';
// This machine's podman: runc (crun refuses the hybrid cgroup layout), no systemd, low hard ulimits.
const PODMAN = ['--runtime', 'runc', '--cgroup-manager', 'cgroupfs', '--events-backend', 'file'];
const ULIMITS = ['--ulimit', 'nofile=1024:1024', '--ulimit', 'nproc=1024:1024'];
// Flags of the DaemonSet this test leaves out: no API server here (--kubernetes); --bpffs is replaced by
// the test's own. --metrics-address stays: the probes' endpoint is checked as the kubelet would.
const NOT_HERE = ['--kubernetes', '--bpffs'];

interface Container {
  name: string;
  args: string[];
  securityContext: { capabilities: { add: string[] }; readOnlyRootFilesystem?: boolean };
  volumeMounts: { name: string; mountPath: string; readOnly?: boolean }[];
  startupProbe: Probe;
  livenessProbe: Probe;
  readinessProbe: Probe;
}
interface Probe {
  httpGet: { host: string; path: string; port: number };
}
interface Volume {
  name: string;
  hostPath?: { path: string };
  configMap?: unknown;
  emptyDir?: unknown;
}
const ds = parse(readFileSync(join(ROOT, 'deploy', 'kubernetes', 'daemonset.yaml'), 'utf8')) as {
  spec: { template: { spec: { hostPID: boolean; hostNetwork: boolean; containers: Container[]; volumes: Volume[] } } };
};
const pod = ds.spec.template.spec;
const agentSpec = pod.containers.find((c) => c.name === 'agent')!;
const CAPS = agentSpec.securityContext.capabilities.add.map((c) => `CAP_${c}`);

const podman = (...args: string[]) => sh('podman', [...PODMAN, ...args]);

kernelDescribe('container image (podman, as the DaemonSet runs it)', () => {
  let env: Env;
  let policies: string;
  let node: string, podA: string, up: string;
  let cgA: string, cgProxy: string;
  const containers: string[] = [];
  const procs: Proc[] = [];

  /** `podman run` arguments mirroring the DaemonSet; the test's paths for the host's. */
  const runArgs = (o: { name: string; drop?: string; without?: string; rm?: boolean }): string[] => {
    const cg2 = env.cgMount;
    const host: Record<string, string> = { '/sys/fs/cgroup': cg2, '/run/meshredir': env.stateDir };
    const vols: string[] = [];
    for (const m of agentSpec.volumeMounts) {
      if (m.name === o.without) continue;
      const v = pod.volumes.find((x) => x.name === m.name)!;
      if (v.emptyDir) vols.push('--tmpfs', m.mountPath);
      else if (v.configMap) vols.push('-v', `${policies}:${m.mountPath}:ro`);
      else vols.push('-v', `${host[v.hostPath!.path] ?? v.hostPath!.path}:${m.mountPath}${m.readOnly ? ':ro' : ''}`);
    }
    return [
      ...PODMAN,
      'run',
      ...(o.rm ? ['--rm'] : []),
      '--name',
      o.name,
      ...ULIMITS,
      ...(pod.hostPID ? ['--pid', 'host'] : []),
      ...(pod.hostNetwork ? ['--network', 'host'] : []),
      ...(agentSpec.securityContext.readOnlyRootFilesystem ? ['--read-only', '--read-only-tmpfs=false'] : []),
      '--cap-drop',
      'ALL',
      ...CAPS.filter((c) => c !== o.drop).flatMap((c) => ['--cap-add', c]),
      ...vols,
      IMAGE,
    ];
  };
  const agentArgs = (...extra: string[]) => [
    ...agentSpec.args.filter((a) => !NOT_HERE.includes(a.split('=')[0]!)),
    `--bpffs=${env.bpffs}`,
    `--cgroup-root=${env.cgRoot}`,
    ...extra,
  ];
  const start = (name: string, args: string[]): Proc => {
    if (!containers.includes(name)) containers.push(name);
    const p = env.spawn(null, null, 'podman', args);
    procs.push(p);
    return p;
  };
  const viaProxy = async () => (await env.client(podA, cgA, ['connect', '10.200.0.100', '8080'])).data ?? '';

  beforeAll(async () => {
    // The image from these sources: scripts/image.sh reuses podman's layer cache when nothing changed.
    const t0 = Date.now();
    const { stderr } = await promisify(execFile)(join(ROOT, 'scripts', 'image.sh'), [], {
      cwd: ROOT,
      env: { ...process.env, IMAGE },
      maxBuffer: 64 << 20,
    });
    console.log(`make image: ${((Date.now() - t0) / 1000).toFixed(0)} s; ${stderr.trim().split('\n').pop()}`);
    env = new Env();
    policies = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    mkdirSync(env.stateDir, { recursive: true, mode: 0o700 });
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
    writeFileSync(
      join(policies, 'a.yaml'),
      policyYaml({ name: 'pod-a', cgroup: cgA, outbound: '10.200.0.1:15001', bypassCgroups: [cgProxy] }),
    );
  }, 1_800_000);

  afterAll(async () => {
    for (const c of containers) sh('podman', [...PODMAN, 'rm', '-f', '-t', '0', c], { allowFail: true });
    await Promise.all(procs.map((p) => p.exited));
    const problems = await env?.teardown();
    rmSync(policies, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('the runtime image has Node >= 20 and the CLI, and no compiler, assembler or linker', () => {
    const out = podman(
      'run',
      '--rm',
      ...ULIMITS,
      '--network',
      'host',
      '--entrypoint',
      'sh',
      IMAGE,
      '-c',
      'node --version; node /opt/meshredir/dist/cli/main.js --version; ' +
        'for c in cc gcc g++ c++ cpp clang clang-14 tcc ld ld.bfd ld.gold as make; do command -v $c; done; ' +
        "dpkg-query -W -f '${Package}\\n' | grep -E '^((gcc|g\\+\\+|cpp|clang|llvm)(-[0-9]+)?|binutils.*|tcc|libc6-dev|libbpf-dev|make)$' || true",
    ).trim();
    const [nodeVersion, cli, ...rest] = out.split('\n');
    expect(Number(/^v(\d+)\./.exec(nodeVersion!)?.[1])).toBeGreaterThanOrEqual(20);
    expect(cli).toBe('0.1.0');
    expect(rest).toEqual([]);
  });

  it('the agent from the image redirects a pod to an unmodified HAProxy, which gets the original destination', async () => {
    const name = `meshredir-test-${env.id}-agent`;
    const a = start(name, [...runArgs({ name }), ...agentArgs()]);
    await waitFor(() => a.err.includes('redirect-ready'), 'agent in the container ready', a, 60_000);
    expect(a.err).toMatch(/"event":"mode","mode":"ebpf"/); // auto chose eBPF with the DaemonSet's privileges
    const r = await env.client(podA, cgA, ['connect', '10.200.0.100', '8080']);
    // The upstream saw HAProxy (10.200.0.1): it forwarded to the destination SO_ORIGINAL_DST gave it.
    expect(r.data).toMatch(/^up 10\.200\.0\.1 /);
    expect(r.peer).toEqual({ address: '10.200.0.100', port: 8080 });
    // Pins in the host's bpffs and the state in the host's state dir, where a new container finds them.
    expect(existsSync(join(env.bpffs, 'links'))).toBe(true);
    expect(JSON.parse(readFileSync(join(env.stateDir, 'agent.json'), 'utf8'))).toMatchObject({
      mode: { chosen: 'ebpf' },
    });
    // The DaemonSet's probes, as the kubelet sends them (host network: the node's loopback).
    const url = (g: Probe['httpGet'], path = g.path) => `http://${g.host}:${g.port}${path}`;
    for (const probe of [agentSpec.startupProbe, agentSpec.livenessProbe, agentSpec.readinessProbe]) {
      let status = 0;
      for (let i = 0; i < 100 && status !== 200; i++) {
        status = await fetch(url(probe.httpGet)).then(
          (r) => r.status,
          () => 0,
        );
        if (status !== 200) await new Promise((r) => setTimeout(r, 100));
      }
      expect(status, probe.httpGet.path).toBe(200);
    }
    const metrics = await (await fetch(url(agentSpec.startupProbe.httpGet, '/metrics'))).text();
    expect(metrics).toMatch(/^meshredir_mode_info\{[^}]*mode="ebpf"/m);
  });

  it('stopped and started again: pins and state re-adopted, connections during the restart still redirected', async () => {
    const name = `meshredir-test-${env.id}-agent`;
    const loop = env.spawn(
      podA,
      cgA,
      process.execPath,
      [join(env.toolsDir, 'client.mjs'), 'until-stdin', '10.200.0.100', '8080', 'up 10.200.0.1 '],
      { stdin: true },
    );
    const done = () => Number([...loop.err.matchAll(/progress (\d+)/g)].pop()?.[1] ?? 0);
    await waitFor(() => done() >= 500, 'connections before the stop', loop, 60_000);
    podman('stop', '-t', '10', name); // SIGTERM: the agent exits and leaves redirection in place
    const atStop = done();
    await waitFor(() => done() >= atStop + 500, 'connections while no agent runs', loop, 60_000);
    const again = start(name, [...PODMAN, 'start', '--attach', name]);
    await waitFor(() => again.err.includes('redirect-ready'), 'restarted container ready', again, 60_000);
    const atStart = done();
    await waitFor(() => done() >= atStart + 500, 'connections after the restart', loop, 60_000);
    loop.child.stdin!.end();
    await loop.exited;
    const r = JSON.parse(loop.out) as {
      total: number;
      ok: number;
      failed: number;
      unexpected: number;
      firstError: string | null;
      firstUnexpected: string | null;
    };
    console.log(
      `container restart under load: ${r.total} connections (${atStop} before the stop, ${atStart - atStop} while stopped and starting), ${r.failed} failed, ${r.unexpected} not through the proxy`,
    );
    expect(r.failed, r.firstError ?? '').toBe(0);
    expect(r.unexpected, r.firstUnexpected ?? '').toBe(0);
    expect(r.ok).toBe(r.total);
    expect(r.total).toBeGreaterThanOrEqual(1500);
    // The second start made nothing: every link and map came from the pins.
    const loaded = again.err
      .split('\n')
      .filter((l) => l.includes('"event":"loaded"'))
      .map((l) => JSON.parse(l) as { createdMaps: string[]; attachedLinks: string[]; adoptedLinks: string[] })
      .pop()!;
    expect(loaded.createdMaps).toEqual([]);
    expect(loaded.attachedLinks).toEqual([]);
    expect(loaded.adoptedLinks.length).toBeGreaterThanOrEqual(7);
    podman('stop', '-t', '10', name);
  });

  it('`cleanup` from the image leaves nothing: pins, links, state file; the pod connects direct', async () => {
    const name = `meshredir-test-${env.id}-cleanup`;
    const c = start(name, [
      ...runArgs({ name, rm: true }),
      'cleanup',
      `--bpffs=${env.bpffs}`,
      ...agentSpec.args.filter((a) => /^--(state-dir|iptables-state)=/.test(a)),
    ]);
    expect(await c.exited, c.err).toBe(0);
    expect(existsSync(env.bpffs)).toBe(false);
    expect(existsSync(join(env.stateDir, 'agent.json'))).toBe(false);
    expect(sh('bpftool', ['cgroup', 'tree', env.cgRootDir])).not.toMatch(/mr_/);
    // The kernel frees a detached program after its last reference goes, not at once.
    await waitFor(() => !/ name mr_/.test(sh('bpftool', ['prog', 'show'])), 'programs unloaded', undefined, 10_000);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
  });

  const refusals: [string, { drop?: string; without?: string }, string[], RegExp][] = [
    ['CAP_SYS_ADMIN (eBPF)', { drop: 'CAP_SYS_ADMIN' }, ['--mode=ebpf'], /missing capability CAP_SYS_ADMIN: eBPF mode/],
    ['CAP_NET_ADMIN (iptables)', { drop: 'CAP_NET_ADMIN' }, ['--mode=iptables'], /missing capability CAP_NET_ADMIN: /],
    [
      'CAP_SYS_ADMIN (iptables)',
      { drop: 'CAP_SYS_ADMIN' },
      ['--mode=iptables'],
      /missing capability CAP_SYS_ADMIN: iptables/,
    ],
    [
      'CAP_SYS_PTRACE (iptables)',
      { drop: 'CAP_SYS_PTRACE' },
      ['--mode=iptables'],
      /missing capability CAP_SYS_PTRACE: /,
    ],
    [
      'CAP_NET_RAW (legacy)',
      { drop: 'CAP_NET_RAW' },
      ['--mode=iptables', '--iptables-backend=legacy'],
      /missing capability CAP_NET_RAW: /,
    ],
    ['the bpffs mount', { without: 'bpffs' }, [], /no bpffs at \/sys\/fs\/bpf\/meshredir-test-/],
    ['the cgroup2 mount', { without: 'cgroup' }, ['--mode=ebpf'], /no cgroup2 mount: /],
  ];
  it.each(refusals)('without %s it exits 1 with one message naming it', async (_, o, extra, message) => {
    const name = `meshredir-test-${env.id}-refused-${refusals.findIndex((r) => r[1] === o)}`;
    const p = start(name, [...runArgs({ name, rm: true, ...o }), ...agentArgs(...extra)]);
    expect(await p.exited).toBe(1);
    const lines = p.err.trim().split('\n');
    expect(lines[0]).toMatch(/^meshredir: cannot run the agent in (auto|ebpf|iptables) mode here:$/);
    expect(lines.slice(1)).toEqual([expect.stringMatching(message)]);
    expect(p.err).not.toMatch(/libbpf|EPERM|\n\s+at /); // no libbpf log, errno or stack
    expect(existsSync(env.bpffs)).toBe(false); // refused before anything was made
  });
});
