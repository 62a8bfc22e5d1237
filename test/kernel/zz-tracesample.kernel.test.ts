// temporary (not committed): captures a sample trace for the docs.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Env, kernelDescribe, policyYaml, waitFor, type Proc } from './harness.js';

kernelDescribe('trace sample', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-trace-'));
    const node = env.netns('node');
    const podA = env.netns('a');
    const up = env.netns('up');
    env.bridge(node, 'br0', ['10.200.0.1/24']);
    env.plug(node, 'br0', podA, ['10.200.0.11/24']);
    env.plug(node, 'br0', up, ['10.200.0.100/24']);
    const cgA = env.cgroup('pod-a');
    const cgProxy = env.cgroup('proxy');
    await env.server(up, '10.200.0.100', 8080, 'up');
    await env.server(up, '10.200.0.100', 9090, 'direct');
    await env.haproxy(node, cgProxy, '10.200.0.1:15001', 15001);
    writeFileSync(join(dir, 'a.yaml'), policyYaml({ name: 'reviews', cgroup: cgA, outbound: '10.200.0.1:15001', bypassCgroups: [cgProxy], outboundSpec: { excludePorts: [9090] } }));
    agent = await env.agent(dir, ['--interval', '1']);
    (globalThis as Record<string, unknown>).ctx = { podA, cgA };
  });
  afterAll(async () => {
    await env.stop(agent);
    const problems = await env.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });
  it('captures', async () => {
    const { podA, cgA } = (globalThis as Record<string, unknown>).ctx as { podA: string; cgA: string };
    for (const json of [false, true]) {
      const t = env.cli(['trace', ...(json ? ['--json'] : []), '--bpffs', env.bpffs]);
      await waitFor(() => (json ? t.out : t.err).includes(json ? 'start' : 'tracing'), 'start', t);
      await env.run(podA, cgA, 'curl', ['-sS', '--http0.9', 'http://10.200.0.100:8080/']);
      await env.run(podA, cgA, 'curl', ['-sS', '--http0.9', 'http://10.200.0.100:9090/']);
      await new Promise((r) => setTimeout(r, 400));
      await env.stop(t, 'SIGINT');
      writeFileSync(`/tmp/trace-sample/${json ? 'json' : 'text'}.txt`, `${t.out}\n--- stderr\n${t.err}`);
    }
    writeFileSync('/tmp/trace-sample/status.txt', await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir]));
  });
});
