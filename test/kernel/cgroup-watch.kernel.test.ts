// cgroup-watch.kernel.test.ts — the real agent (interval 600 s, so only its cgroup watch can be what acts):
// a policy whose cgroup does not exist yet is applied as soon as it is made (parents too), a cgroup removed
// and made again at the same path (as container runtimes do) has its new id in mr_cgroups and the old one
// out, a re-created proxy cgroup is a bypass again, and connections from the new cgroup go through HAProxy.
// The mkdir → policy-in-map latencies are printed (measured by `meshredir bench`, not asserted).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { CgKind } from '../../src/bpf/abi.js';
import { cgroupId } from '../../src/util/host.js';
import { Env, kernelDescribe, policyYaml, waitFor, type ClientResult, type Proc } from './harness.js';

const PROXY = '10.210.0.1';

kernelDescribe('cgroups that appear, go and come back get their policy at once (inotify, not the interval)', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  let node: string, up: string, pod: string;
  let proxyCg: string;
  const latencies: { what: string; ms: number }[] = [];

  const cgroups = () => new Map(new Pins(env.bpffs).entries<[bigint, { kind: number; slot: number }][]>('mr_cgroups'));
  /** Polls mr_cgroups until `cond` holds (every millisecond or so); the time it took, in ms. */
  const until = async (what: string, cond: (m: Map<bigint, { kind: number }>) => boolean, t0: number) => {
    const end = t0 + 1000; // "within one second of the mkdir": the interval is 600 s
    for (;;) {
      if (cond(cgroups())) return performance.now() - t0;
      if (performance.now() > end)
        throw new Error(`${what}: not within 1 s (interval 600 s)\n${agent.err.slice(-3000)}`);
      await new Promise((r) => setImmediate(r));
    }
  };
  const connect = (cg: string) => env.client<ClientResult>(pod, cg, ['connect', '10.210.0.100', '8080']);

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-cgwatch-'));
    node = env.netns('node');
    up = env.netns('up');
    pod = env.netns('pod');
    env.bridge(node, 'br0', [`${PROXY}/24`]);
    env.plug(node, 'br0', up, ['10.210.0.100/24']);
    env.plug(node, 'br0', pod, ['10.210.0.11/24']);
    proxyCg = env.cgroup('proxy');
    await env.server(up, '10.210.0.100', 8080, 'up');
    await env.haproxy(node, proxyCg, `${PROXY}:15001`, 15001);
    writeFileSync(
      join(dir, 'late.yaml'),
      policyYaml({
        name: 'late',
        cgroup: `${env.cgRoot}/late/app`,
        outbound: `${PROXY}:15001`,
        bypassCgroups: [proxyCg],
      }),
    );
    agent = await env.agent(dir, ['--interval', '600']);
  });

  afterAll(async () => {
    if (agent) await env.stop(agent);
    for (const d of ['late/app', 'late']) {
      try {
        rmdirSync(env.cgDir(`${env.cgRoot}/${d}`));
      } catch {
        // not there, or the Env removes it
      }
    }
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    if (latencies.length)
      console.log(
        `cgroup event → map (agent, interval 600 s): ${latencies.map((l) => `${l.what} ${l.ms.toFixed(1)} ms`).join(', ')}`,
      );
    expect(problems).toEqual([]);
  });

  it('a policy whose cgroup (and its parent) do not exist yet is applied within a second of the mkdir', async () => {
    expect([...cgroups().values()].filter((v) => v.kind === CgKind.POLICY)).toEqual([]);
    const t0 = performance.now();
    mkdirSync(env.cgDir(`${env.cgRoot}/late`));
    mkdirSync(env.cgDir(`${env.cgRoot}/late/app`));
    const id = cgroupId(env.cgDir(`${env.cgRoot}/late/app`))!;
    latencies.push({
      what: 'mkdir -p',
      ms: await until('late/app applied', (m) => m.get(id)?.kind === CgKind.POLICY, t0),
    });
    const r = await connect(`${env.cgRoot}/late/app`);
    expect(r.data).toMatch(/^up 10\.210\.0\.1 /); // through HAProxy
    expect(r.peer).toEqual({ address: '10.210.0.100', port: 8080 });
  });

  it('removed and made again at the same path: the new id goes in, the old id out (each within a second)', async () => {
    const path = env.cgDir(`${env.cgRoot}/late/app`);
    for (let i = 0; i < 10; i++) {
      const old = cgroupId(path)!;
      let t0 = performance.now();
      rmdirSync(path);
      latencies.push({ what: `rmdir#${i}`, ms: await until('old id out', (m) => !m.has(old), t0) });
      t0 = performance.now();
      mkdirSync(path);
      const id = cgroupId(path)!;
      expect(id).not.toBe(old);
      latencies.push({
        what: `mkdir#${i}`,
        ms: await until('new id in', (m) => m.get(id)?.kind === CgKind.POLICY, t0),
      });
    }
    // As a runtime does it: rmdir and mkdir back to back, no pause between them.
    const old = cgroupId(path)!;
    const t0 = performance.now();
    rmdirSync(path);
    mkdirSync(path);
    const id = cgroupId(path)!;
    latencies.push({
      what: 'rmdir+mkdir',
      ms: await until('new id in, old out', (m) => m.get(id)?.kind === CgKind.POLICY && !m.has(old), t0),
    });
    expect((await connect(`${env.cgRoot}/late/app`)).data).toMatch(/^up 10\.210\.0\.1 /);
  });

  it('a proxy (bypass) cgroup made again is a bypass again with its new id', async () => {
    // HAProxy must leave its cgroup for it to be removed: a second proxy cgroup stands in.
    const second = env.cgroup('proxy2');
    writeFileSync(
      join(dir, 'late.yaml'),
      policyYaml({
        name: 'late',
        cgroup: `${env.cgRoot}/late/app`,
        outbound: `${PROXY}:15001`,
        bypassCgroups: [proxyCg, second],
      }),
    );
    const secondDir = env.cgDir(second);
    await waitFor(() => cgroups().get(cgroupId(secondDir)!)?.kind === CgKind.BYPASS, 'second bypass applied', agent);
    const old = cgroupId(secondDir)!;
    const t0 = performance.now();
    rmdirSync(secondDir);
    mkdirSync(secondDir);
    const id = cgroupId(secondDir)!;
    latencies.push({
      what: 'bypass rmdir+mkdir',
      ms: await until('bypass id renewed', (m) => m.get(id)?.kind === CgKind.BYPASS && !m.has(old), t0),
    });
  });
});
