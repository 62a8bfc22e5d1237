// fastpath.kernel.test.ts — the opt-in sk_msg fast path: checksummed transfers both ways through
// HAProxy and through a plain forwarding proxy, half-close, RST, 1,000 concurrent connections, a proxy
// restart, proof the fast path was taken (counters, and the bytes missing from lo), and not taken
// without `accelerate`. Every transfer has a deadline and names the connections that stalled.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, sh, waitFor, ORIGDST_PROXY, type Proc } from './harness.js';

interface Transfer {
  ok: boolean;
  n?: number;
  bad?: unknown[];
  stalled?: unknown[];
}
interface Status {
  maps: { map: string; entries: number }[];
  policies: { name: string; counters: Record<string, number> }[];
}

kernelDescribe('sk_msg fast path (accelerate)', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  const pods: Record<string, { ns: string; app: string; proxy: string }> = {};
  let odp: Proc;

  const status = async () => JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const counters = async (name: string) => (await status()).policies.find((p) => p.name === name)!.counters;
  const sockhash = async () => (await status()).maps.find((m) => m.map === 'mr_sockhash')!.entries;
  const loBytes = (ns: string) => {
    const j = JSON.parse(sh('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'lo'])) as { stats64: { rx: { bytes: number } } }[];
    return j[0]!.stats64.rx.bytes;
  };
  const transfer = async (pod: string, size: number, opts: { parallel?: number; chunk?: number; mode?: string } = {}) => {
    const p = pods[pod]!;
    const out = await env.run(p.ns, p.app, process.execPath, [join(env.toolsDir, 'transfer.mjs'), '10.203.0.254', '7000', String(size), String(opts.parallel ?? 1), String(opts.chunk ?? 65536), opts.mode ?? 'normal'], { timeoutMs: 90_000 }).catch((e: Error) => e.message);
    return JSON.parse(out.slice(out.indexOf('{'))) as Transfer;
  };

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    const up = env.netns('up');
    env.bridge(up, 'br0', ['10.203.0.254/24']);
    const echo = env.spawn(up, null, process.execPath, [join(env.toolsDir, 'echo.mjs'), '10.203.0.254', '7000']);
    await waitFor(() => echo.out.includes('ready'), 'echo upstream', echo);
    let n = 1;
    for (const [name, accelerate, proxy] of [
      ['haproxy', true, 'haproxy'],
      ['forward', true, 'forward'],
      ['plain', false, 'haproxy'],
    ] as const) {
      const ns = env.netns(name);
      env.plug(up, 'br0', ns, [`10.203.0.${n++}/24`]);
      const app = env.cgroup(`${name}/app`);
      const proxyCg = env.cgroup(`${name}/proxy`);
      if (proxy === 'haproxy') await env.haproxy(ns, proxyCg, '127.0.0.1:15001', 15001);
      else {
        odp = env.spawn(ns, proxyCg, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'forward']);
        await env.waitListening(ns, 15001, 'origdst-proxy', odp);
      }
      writeFileSync(join(dir, `${name}.yaml`), policyYaml({ name, cgroup: `${env.cgRoot}/${name}`, outbound: '127.0.0.1:15001', bypassCgroups: [proxyCg], accelerate }));
      pods[name] = { ns, app, proxy: proxyCg };
    }
    agent = await env.agent(dir, ['--interval', '1']);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  for (const pod of ['haproxy', 'forward']) {
    it(`${pod}: 1 B to 64 MiB arrive intact both ways, with half-close delivering everything and the EOF`, async () => {
      for (const size of [1, 1024, 65536, 1 << 20, 64 << 20]) {
        const r = await transfer(pod, size);
        expect(r, `${size} bytes`).toMatchObject({ ok: true, n: 1 });
      }
      // Small writes (many partial messages) too.
      expect(await transfer(pod, 1 << 20, { chunk: 100 })).toMatchObject({ ok: true });
    });
  }

  it('blocking sockets: 1 B to 64 MiB arrive intact both ways through HAProxy', async () => {
    const p = pods.haproxy!;
    for (const size of [1, 1024, 65536, 1 << 20, 64 << 20]) {
      const out = await env.run(p.ns, p.app, 'python3', [join(env.toolsDir, 'transfer_blocking.py'), '10.203.0.254', '7000', String(size)], { timeoutMs: 90_000 });
      expect(JSON.parse(out), `${size} bytes`).toMatchObject({ ok: true, received: size });
    }
  });

  it('the fast path is really taken: the sk_msg counter grows and the bytes do not cross lo', async () => {
    const before = await counters('haproxy');
    const lo = loBytes(pods.haproxy!.ns);
    expect(await transfer('haproxy', 64 << 20)).toMatchObject({ ok: true });
    const after = await counters('haproxy');
    expect(after.msg_fast! - before.msg_fast!).toBeGreaterThan(100);
    expect(after.accel_sockets! - before.accel_sockets!).toBe(2); // the app's socket and HAProxy's
    // 64 MiB went each way between app and HAProxy; lo saw only handshakes and ACK-sized traffic.
    expect(loBytes(pods.haproxy!.ns) - lo).toBeLessThan(4 << 20);
  });

  it('without accelerate the fast path is not taken', async () => {
    const lo = loBytes(pods.plain!.ns);
    expect(await transfer('plain', 16 << 20)).toMatchObject({ ok: true });
    const c = await counters('plain');
    expect([c.accel_sockets, c.msg_fast]).toEqual([0, 0]);
    expect(loBytes(pods.plain!.ns) - lo).toBeGreaterThan(32 << 20); // both directions over lo
  });

  it('1,000 concurrent connections, and the entries go when they close', async () => {
    expect(await transfer('haproxy', 4096, { parallel: 1000 })).toMatchObject({ ok: true, n: 1000 });
    const end = Date.now() + 5000;
    while ((await sockhash()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(await sockhash()).toBe(0);
  });

  it('RST on the application side frees the entries', async () => {
    expect(await transfer('haproxy', 1 << 20, { parallel: 20, mode: 'rst' })).toMatchObject({ ok: true });
    const end = Date.now() + 5000;
    while ((await sockhash()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(await sockhash()).toBe(0);
  });

  it('a proxy restart in the middle: its connections fail cleanly, new ones are fast again', async () => {
    const p = pods.forward!;
    const running = transfer('forward', 512 << 20); // long enough to be cut
    await new Promise((r) => setTimeout(r, 500));
    await env.stop(odp, 'SIGKILL');
    const cut = await running;
    expect(cut.ok).toBe(false); // cut, not hung: the deadline did not fire
    expect(cut.stalled).toBeUndefined();
    // The proxy's side went away (its sockets closed by the kernel): the entries went with them.
    const end = Date.now() + 5000;
    while ((await sockhash()) > 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 200));
    expect(await sockhash()).toBe(0);
    odp = env.spawn(p.ns, p.proxy, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'forward']);
    await env.waitListening(p.ns, 15001, 'origdst-proxy', odp);
    const before = (await counters('forward')).msg_fast!;
    expect(await transfer('forward', 1 << 20)).toMatchObject({ ok: true });
    expect((await counters('forward')).msg_fast!).toBeGreaterThan(before);
  });

  it('turning accelerate off applies to new connections; an open one keeps working', async () => {
    const p = pods.haproxy!;
    const long = transfer('haproxy', 128 << 20, { chunk: 4096 });
    writeFileSync(join(dir, 'haproxy.yaml'), policyYaml({ name: 'haproxy', cgroup: `${env.cgRoot}/haproxy`, outbound: '127.0.0.1:15001', bypassCgroups: [p.proxy], accelerate: false }));
    await new Promise((r) => setTimeout(r, 1500)); // the watch/interval reconcile applies it
    const before = (await counters('haproxy')).accel_sockets!;
    expect(await transfer('haproxy', 1 << 20)).toMatchObject({ ok: true });
    expect((await counters('haproxy')).accel_sockets!).toBe(before);
    expect(await long).toMatchObject({ ok: true });
    await env.stop(agent);
  });
});
