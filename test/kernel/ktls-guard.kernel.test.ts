// ktls-guard.kernel.test.ts — mr_setsockopt (the fast path's kTLS guard) is attached only while it is needed,
// as the kernel reports the cgroup root's programs (bpftool) and the pins say: none without an accelerating
// policy; attached, refusing TCP_ULP on an accelerated socket, with one; kept while an accelerated socket
// stays open (or an accelerated handshake is in flight) after accelerate is turned off, and gone once it
// closes; an agent restarted over pins keeps the same link while it is needed (accelerating, or a
// fast-path socket still open) and detaches it once nothing needs it; where the kernel refuses to attach it
// (MESHREDIR_FAULT), the policy is written without accelerate, says why, and still redirects; cleanup leaves
// nothing behind (the teardown's check).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, sh, until, waitFor, ORIGDST_PROXY, XFER, type Proc } from './harness.js';
import { atRoot as rootPrograms, linkPinned, outcomes, refusingAgent, sleep } from './on-demand-fix.js';

interface Status {
  maps: { map: string; entries: number }[];
  links: { name: string; id?: number; attached: boolean }[];
  policies: { name: string; accelerate: boolean; counters: Record<string, number> }[];
  ktlsGuard: { attached: boolean; needed: boolean; why: string; accelerating: string[]; openSockets: number };
}

const UP = '10.205.0.254';

kernelDescribe('kTLS guard: mr_setsockopt attached only while needed', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  let ns: string;
  let app: string;
  let proxy: string;
  const status = async () => JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const guard = async () => (await status()).ktlsGuard;
  const accelerating = async () => (await status()).policies.find((p) => p.name === 'pod')!.accelerate;
  const sockhash = async () => (await status()).maps.find((m) => m.map === 'mr_sockhash')!.entries;
  const atRoot = () => rootPrograms(env);
  const pinned = () => linkPinned(env, 'mr_setsockopt');
  const write = (accelerate: boolean) =>
    writeFileSync(
      join(dir, 'pod.yaml'),
      policyYaml({
        name: 'pod',
        cgroup: `${env.cgRoot}/pod/pod`,
        outbound: '127.0.0.1:15001',
        bypassCgroups: [proxy],
        accelerate,
      }),
    );
  /** setsockopt(TCP_ULP, "tls") on a new redirected connection of the app (a non-blocking socket). */
  const ulp = async () =>
    (JSON.parse(await env.run(ns, app, 'python3', [join(env.toolsDir, 'ulp.py'), UP, '7000'])) as { ulp: string }).ulp;
  /** An accelerated connection held open (xfer --hold) until release(). */
  const held = async () => {
    const p = env.spawn(ns, app, XFER, [UP, '7000', '--size', '4096', '--hold', '--deadline', '60'], { stdin: true });
    await waitFor(() => p.out.includes('\n'), 'xfer report', p, 30_000);
    expect(JSON.parse(p.out)).toMatchObject({ ok: true });
    return {
      release: async () => {
        p.child.stdin!.end();
        await p.exited;
      },
    };
  };
  const guardLinkId = async () => (await status()).links.find((l) => l.name === 'mr_setsockopt')?.id;

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    const up = env.netns('up');
    env.bridge(up, 'br0', [`${UP}/24`]);
    const echo = env.spawn(up, null, process.execPath, [join(env.toolsDir, 'echo.mjs'), UP, '7000']);
    await waitFor(() => echo.out.includes('ready'), 'echo upstream', echo);
    ns = env.netns('pod');
    env.plug(up, 'br0', ns, ['10.205.0.1/24']);
    app = env.cgroup('pod/pod/app');
    proxy = env.cgroup('pod/proxy');
    const fwd = env.spawn(ns, proxy, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'forward']);
    await env.waitListening(ns, 15001, 'origdst-proxy', fwd);
    write(false);
    agent = await env.agent(dir, ['--interval', '1']);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('no policy accelerates: no setsockopt link, in the kernel or the pins; status says why', async () => {
    expect(atRoot()).toContain('mr_getsockopt'); // the rest is attached
    expect(atRoot()).not.toContain('mr_setsockopt');
    expect(pinned()).toBe(false);
    expect(existsSync(join(env.bpffs, 'progs', 'mr_setsockopt'))).toBe(true); // loaded, ready to attach
    expect(await guard()).toMatchObject({ attached: false, needed: false, accelerating: [] });
    expect((await guard()).why).toMatch(/no policy accelerates and no socket is on the fast path/);
    const text = await env.cliRun(['status', '--bpffs', env.bpffs]);
    expect(text).toMatch(/kTLS guard \(mr_setsockopt\): not attached/);
    expect(await ulp()).not.toBe('EPERM'); // the kernel answers (no "tls" ULP here: ENOENT)
  });

  it('accelerate on: the link is attached, and kTLS is refused on an accelerated socket', async () => {
    write(true);
    await until('accelerate applied', accelerating);
    expect(atRoot()).toContain('mr_setsockopt');
    expect(await guard()).toMatchObject({ attached: true, needed: true, accelerating: ['pod'] });
    expect(agent.err).toContain('"event":"ktls_guard_attached"');
    const before = (await status()).policies.find((p) => p.name === 'pod')!.counters.ulp_refused!;
    expect(await ulp()).toBe('EPERM');
    expect((await status()).policies.find((p) => p.name === 'pod')!.counters.ulp_refused).toBe(before + 1);
  });

  it('accelerate off while a fast-path socket is open: the link stays until it closes, then goes', async () => {
    const h = await held();
    await until('on the fast path', async () => (await sockhash()) >= 1);
    write(false);
    await until('accelerate off', async () => !(await accelerating()));
    await sleep(2500); // past the grace and two pulses
    const g = await guard();
    expect(g).toMatchObject({ attached: true, needed: true, accelerating: [] });
    expect(g.why).toMatch(/socket\(s\) are still on the fast path/);
    expect(atRoot()).toContain('mr_setsockopt');
    await h.release();
    await until('the link detached', async () => !(await guard()).attached);
    expect(atRoot()).not.toContain('mr_setsockopt');
    expect(pinned()).toBe(false);
    expect(agent.err).toContain('"event":"ktls_guard_detached"');
    expect(await ulp()).not.toBe('EPERM');
  });

  it('accelerate off while an accelerated handshake is in flight (its SYN dropped): kept until it ends', async () => {
    write(true);
    await until('the link attached', async () => (await guard()).attached);
    // The redirected SYN to the proxy is dropped: the socket stays in SYN_SENT, its record (which says
    // "accelerate") in mr_orig; it would join the fast path when established.
    const drop = ['OUTPUT', '-o', 'lo', '-p', 'tcp', '--dport', '15001', '--syn', '-j', 'DROP'];
    sh('ip', ['netns', 'exec', ns, 'iptables', '-w', '-A', ...drop]);
    const connecting = env.spawn(ns, app, 'python3', [
      '-c',
      `import socket, time\ns = socket.socket()\ns.setblocking(False)\ns.connect_ex(("${UP}", 7000))\nprint("connecting", flush=True)\ntime.sleep(120)`,
    ]);
    try {
      await waitFor(() => connecting.out.includes('connecting'), 'connect sent', connecting);
      write(false);
      await until('accelerate off', async () => !(await accelerating()));
      await sleep(2500);
      const g = await guard();
      expect(g).toMatchObject({ attached: true, needed: true, openSockets: 0 });
      expect(g.why).toMatch(/1 accelerated handshake\(s\) are in flight/);
    } finally {
      await env.stop(connecting); // its socket closes: the record goes
      sh('ip', ['netns', 'exec', ns, 'iptables', '-w', '-D', ...drop]);
    }
    await until('the link detached', async () => !(await guard()).attached);
  });

  it('an agent restarted over pins keeps the same link while a policy accelerates', async () => {
    write(true);
    await until('the link attached', async () => (await guard()).attached);
    const id = await guardLinkId();
    expect(await env.stop(agent)).toBe(0);
    expect(atRoot()).toContain('mr_setsockopt'); // pinned: the guard outlives the agent
    agent = await env.agent(dir, ['--interval', '1']);
    expect(await guardLinkId()).toBe(id); // re-adopted, never detached
    expect(await ulp()).toBe('EPERM');
  });

  it('restarted with accelerate off and a fast-path socket open: kept until it closes, then detached', async () => {
    const h = await held();
    await until('on the fast path', async () => (await sockhash()) >= 1);
    expect(await env.stop(agent)).toBe(0);
    write(false);
    agent = await env.agent(dir, ['--interval', '1']);
    await until('accelerate off', async () => !(await accelerating()));
    await sleep(2500);
    expect(await guard()).toMatchObject({ attached: true, needed: true });
    expect(atRoot()).toContain('mr_setsockopt');
    await h.release();
    await until('the link detached', async () => !(await guard()).attached);
    expect(atRoot()).not.toContain('mr_setsockopt');
  });

  it('the kernel refuses to attach the guard: the policy applies without accelerate, says why, and redirects', async () => {
    expect(await env.stop(agent)).toBe(0);
    write(true);
    const refused = await refusingAgent(env, dir, 'mr_setsockopt');
    try {
      expect(await accelerating()).toBe(false); // its entry written without accelerate: never unguarded
      expect(atRoot()).not.toContain('mr_setsockopt');
      expect(await guard()).toMatchObject({ attached: false, accelerating: [] });
      const before = (await status()).policies.find((p) => p.name === 'pod')!.counters.redirected!;
      const h = await held(); // through the proxy, not on the fast path
      expect(await sockhash()).toBe(0);
      await h.release();
      expect((await status()).policies.find((p) => p.name === 'pod')!.counters.redirected).toBeGreaterThan(before);
      expect(await ulp()).not.toBe('EPERM');
      expect(refused.err).toContain('"event":"ktls_guard_attach_failed"');
      expect(refused.err).toContain('"event":"accelerate_off"');
      expect((await outcomes(env)).find((o) => o.policy === 'pod')).toMatchObject({
        state: 'applied',
        reason: expect.stringMatching(
          /^spec\.accelerate is not applied: the kTLS guard \(mr_setsockopt\) cannot be attached \(.*injected/,
        ),
      });
    } finally {
      await env.stop(refused);
    }
    // Once the kernel takes it: attached, and accelerate written.
    agent = await env.agent(dir, ['--interval', '1']);
    await until('accelerate applied', accelerating);
    expect(atRoot()).toContain('mr_setsockopt');
    expect(await ulp()).toBe('EPERM');
  });

  it('restarted over a guard nothing needs any more: detached (after its grace), not kept forever', async () => {
    write(true);
    await until('the link attached', async () => (await guard()).attached);
    expect(await env.stop(agent)).toBe(0);
    write(false);
    agent = await env.agent(dir, ['--interval', '600']); // no periodic reconcile: the pulse asks for it
    await until('the link detached', async () => !(await guard()).attached);
    expect(atRoot()).not.toContain('mr_setsockopt');
    expect(pinned()).toBe(false);
    expect(await env.stop(agent)).toBe(0);
    await env.cliRun(env.cleanupArgs());
    expect(existsSync(env.bpffs)).toBe(false);
  });
});
