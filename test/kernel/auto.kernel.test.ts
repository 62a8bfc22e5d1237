// auto.kernel.test.ts — `--mode auto` records why it chose its mode, and `status` (table and --json)
// says so afterwards from the agent's state file: iptables when the eBPF capabilities are dropped,
// eBPF when everything loads and attaches.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, sh, waitFor, CLI } from './harness.js';

interface AgentStatus {
  mode: string;
  agent: {
    mode: string;
    requested: string;
    reason: string;
    probe?: { missing: { feature: string; why: string }[] };
    lastReconcile: { ok: boolean } | null;
  };
}

kernelDescribe('auto mode decision in status', () => {
  let env: Env;
  let dir: string;
  let pod: string;
  let cgApp: string;
  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    pod = env.netns('pod');
    cgApp = env.cgroup('pod/app');
    // A process of the pod, so the iptables mode finds the pod's netns from the policy's cgroup.
    env.spawn(pod, cgApp, 'sleep', ['600']);
    writeFileSync(
      join(dir, 'pod.yaml'),
      policyYaml({ name: 'pod', cgroup: `${env.cgRoot}/pod`, outbound: '127.0.0.1:15001', uids: [1337] }),
    );
  });
  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('without CAP_BPF/CAP_SYS_ADMIN: iptables, and status says why', async () => {
    const state = join(env.stateDir, 'iptables.json');
    const p = env.spawn(null, null, 'nsenter', [
      `--net=/run/netns/${pod}`,
      'capsh',
      '--drop=cap_bpf,cap_sys_admin,cap_perfmon',
      '--',
      '-c',
      `exec ${process.execPath} ${CLI} agent --policies ${dir} --iptables-state ${state} --state-dir ${env.stateDir} --bpffs ${env.bpffs} --interval 60`,
    ]);
    try {
      await waitFor(() => p.err.includes('redirect-ready'), 'agent ready', p, 30_000);
      const s = JSON.parse(
        sh(process.execPath, [
          CLI,
          'status',
          '--json',
          '--bpffs',
          env.bpffs,
          '--iptables-state',
          state,
          '--state-dir',
          env.stateDir,
        ]),
      ) as AgentStatus;
      expect(s.mode).toBe('iptables');
      expect(s.agent).toMatchObject({ mode: 'iptables', requested: 'auto', lastReconcile: { ok: true } });
      expect(s.agent.reason).toMatch(/^eBPF mode unavailable: bpf \(bpf_map_create: EPERM\)/);
      expect(s.agent.probe!.missing).toContainEqual({ feature: 'bpf', why: 'bpf_map_create: EPERM' });
      const text = sh(process.execPath, [
        CLI,
        'status',
        '--bpffs',
        env.bpffs,
        '--iptables-state',
        state,
        '--state-dir',
        env.stateDir,
      ]);
      expect(text).toMatch(
        /agent: mode iptables \(chosen by --mode auto: eBPF mode unavailable: bpf \(bpf_map_create: EPERM\)/,
      );
    } finally {
      await env.stop(p);
      sh(process.execPath, [
        CLI,
        'cleanup',
        '--iptables-state',
        state,
        '--bpffs',
        env.bpffs,
        '--state-dir',
        env.stateDir,
      ]);
    }
    expect(sh('ip', ['netns', 'exec', pod, 'iptables-save', '-t', 'nat'])).not.toMatch(/MESHREDIR/);
    expect(existsSync(join(env.stateDir, 'agent.json'))).toBe(false);
  });

  it('with every capability: eBPF, and status says every program loads and attaches', async () => {
    const a = await env.agent(dir, ['--mode', 'auto', '--interval', '60']);
    try {
      const s = JSON.parse(
        sh(process.execPath, [CLI, 'status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir]),
      ) as AgentStatus;
      expect(s.mode).toBe('ebpf');
      expect(s.agent).toMatchObject({ mode: 'ebpf', requested: 'auto', lastReconcile: { ok: true } });
      expect(s.agent.reason).toMatch(/^meshredir's programs load and attach here/);
      expect(sh(process.execPath, [CLI, 'status', '--bpffs', env.bpffs, '--state-dir', env.stateDir])).toMatch(
        /agent: mode ebpf \(chosen by --mode auto: meshredir's programs load and attach/,
      );
    } finally {
      await env.stop(a);
    }
  });
});
