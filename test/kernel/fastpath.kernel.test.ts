// fastpath.kernel.test.ts — the opt-in sk_msg fast path: checksummed transfers (every byte checked
// against a never-repeating stream) both ways through HAProxy and through a plain forwarding proxy,
// with non-blocking and blocking sockets, short writes and a slow reader; half-close; RST from either
// side; 1,000 concurrent connections; a proxy restart; proof the fast path was taken (counters, and the
// bytes missing from lo) and not taken without `accelerate`; kTLS refused on accelerated sockets;
// `accelerate` turned off and `cleanup` while a transfer runs; a full sockhash; a listener that is not
// the policy's proxy; a leaving stream whose peer answered once and went quiet. Every transfer has a
// deadline and names the connections that stalled.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import {
  Env,
  kernelDescribe,
  policyYaml,
  sh,
  until,
  waitFor,
  ORIGDST_PROXY,
  ROOT,
  XFER,
  type Proc,
} from './harness.js';

interface Xfer {
  ok: boolean;
  n: number;
  partial_writes: number;
  eagain: number;
  bad: {
    i: number;
    lport: number;
    phase: string;
    error: string;
    sent: number;
    received: number;
    mismatch_at: number;
  }[];
  stalled: { i: number; lport: number; phase: string; sent: number; received: number }[];
}
interface Status {
  maps: { map: string; entries: number }[];
  policies: { name: string; accelerate: boolean; counters: Record<string, number> }[];
}

const UP = '10.203.0.254';
const MiB = 1 << 20;
/** The bench's load generator: request/response with one request in flight. */
const MRLOAD = join(ROOT, 'build', 'mrload');

/** A topology: an echo upstream on a bridge, and pods (netns + app and proxy cgroups) with their proxy. */
function lab(env: Env, dir: string) {
  const pods: Record<string, { ns: string; app: string; proxy: string; proc?: Proc }> = {};
  /** The upstream's netns (set by setup). */
  const net = { up: '' };
  const status = async () => JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const counters = async (name: string) => (await status()).policies.find((p) => p.name === name)!.counters;
  const sockhash = async () => (await status()).maps.find((m) => m.map === 'mr_sockhash')!.entries;
  /** Runs build/xfer in a pod's app cgroup; the deadline is xfer's own, which names stalled connections. */
  const xfer = async (pod: string, args: string[] = [], deadline = 60): Promise<Xfer> => {
    const p = pods[pod]!;
    const out = await env.run(p.ns, p.app, XFER, [UP, '7000', '--deadline', String(deadline), ...args], {
      timeoutMs: (deadline + 20) * 1000,
    });
    return JSON.parse(out) as Xfer;
  };
  const started = (pod: string, args: string[]) => {
    const p = pods[pod]!;
    const proc = env.spawn(p.ns, p.app, XFER, [UP, '7000', '--deadline', '90', ...args], { stdin: true });
    return {
      proc,
      result: async (): Promise<Xfer> => {
        await waitFor(() => proc.out.includes('\n'), 'xfer report', proc, 120_000);
        return JSON.parse(proc.out) as Xfer;
      },
    };
  };
  const setup = async (
    specs: [name: string, accelerate: boolean, proxy: 'haproxy' | 'forward', proxyInBypass?: boolean][],
    n0 = 1,
    /** Runs in each pod's netns before its proxy starts (sysctls a listener reads at listen()). */
    prepare?: (name: string, ns: string) => void,
  ) => {
    const up = env.netns('up');
    net.up = up;
    env.bridge(up, 'br0', [`${UP}/24`]);
    const echo = env.spawn(up, null, process.execPath, [join(env.toolsDir, 'echo.mjs'), UP, '7000']);
    await waitFor(() => echo.out.includes('ready'), 'echo upstream', echo);
    let n = n0;
    for (const [name, accelerate, proxy, proxyInBypass = true] of specs) {
      const ns = env.netns(name);
      env.plug(up, 'br0', ns, [`10.203.0.${n++}/24`]);
      prepare?.(name, ns);
      const app = env.cgroup(`${name}/pod/app`);
      const bypass = env.cgroup(`${name}/proxy`);
      // A listener that is not the policy's proxy lives outside both the pod and the bypass cgroups.
      const proxyCg = proxyInBypass ? bypass : env.cgroup(`${name}/elsewhere`);
      let proc: Proc | undefined;
      if (proxy === 'haproxy') proc = await env.haproxy(ns, proxyCg, '127.0.0.1:15001', 15001);
      else {
        proc = env.spawn(ns, proxyCg, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'forward']);
        await env.waitListening(ns, 15001, 'origdst-proxy', proc);
      }
      writeFileSync(
        join(dir, `${name}.yaml`),
        policyYaml({
          name,
          cgroup: `${env.cgRoot}/${name}/pod`,
          outbound: '127.0.0.1:15001',
          bypassCgroups: [bypass],
          accelerate,
        }),
      );
      pods[name] = { ns, app, proxy: proxyCg, proc };
    }
  };
  return { pods, net, status, counters, sockhash, until, xfer, started, setup };
}

kernelDescribe('sk_msg fast path (accelerate)', () => {
  let env: Env;
  let dir: string;
  let agent: Proc;
  let L: ReturnType<typeof lab>;
  const loBytes = (ns: string) =>
    (JSON.parse(sh('ip', ['-n', ns, '-s', '-j', 'link', 'show', 'lo'])) as { stats64: { rx: { bytes: number } } }[])[0]!
      .stats64.rx.bytes;

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    L = lab(env, dir);
    await L.setup([
      ['haproxy', true, 'haproxy'],
      ['forward', true, 'forward'],
      ['plain', false, 'haproxy'],
    ]);
    agent = await env.agent(dir, ['--interval', '1']);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  for (const pod of ['haproxy', 'forward']) {
    it(`${pod}: 1 B to 64 MiB arrive intact both ways (non-blocking), half-close delivering everything and the EOF`, async () => {
      for (const size of [1, 1024, 65536, MiB, 64 * MiB]) {
        const r = await L.xfer(pod, ['--size', String(size)]);
        expect(r, `${size} bytes: ${JSON.stringify(r)}`).toMatchObject({ ok: true, n: 1 });
      }
      expect(await L.xfer(pod, ['--size', String(MiB), '--chunk', '100']), '100-byte writes').toMatchObject({
        ok: true,
      });
    });

    it(`${pod}: blocking sockets are left on TCP (kernel limitation), and 1 B to 64 MiB arrive intact`, async () => {
      // The kernel's sockmap receive path can fail a blocking recv() with EAGAIN on a wakeup that
      // brought no data; a socket in blocking mode at its handshake is therefore not accelerated.
      const before = await L.counters(pod);
      for (const size of [1, 1024, 65536, MiB, 64 * MiB]) {
        const r = await L.xfer(pod, ['--blocking', '--size', String(size)]);
        expect(r, `${size} bytes: ${JSON.stringify(r)}`).toMatchObject({ ok: true, n: 1 });
      }
      const after = await L.counters(pod);
      expect(after.accel_blocking! - before.accel_blocking!).toBe(5);
      expect(after.accel_sockets! - before.accel_sockets!).toBe(0); // neither end
    });
  }

  it('the fast path is really taken: the sk_msg counter grows and the bytes do not cross lo', async () => {
    const ns = L.pods.haproxy!.ns;
    // At a pace HAProxy keeps up with, 16 MiB each way between app and HAProxy: lo sees none of it
    // (HAProxy's side towards the upstream is on eth0).
    const before = await L.counters('haproxy');
    const lo = loBytes(ns);
    expect(await L.xfer('haproxy', ['--size', String(16 * MiB), '--chunk', '16384', '--pace-ms', '1'])).toMatchObject({
      ok: true,
    });
    const after = await L.counters('haproxy');
    expect(after.accel_sockets! - before.accel_sockets!).toBe(2); // the app's socket and HAProxy's
    expect(after.msg_fast! - before.msg_fast!).toBeGreaterThan(400);
    expect(loBytes(ns) - lo).toBeLessThan(MiB);
    expect(after.msg_backoff! - before.msg_backoff!).toBe(0); // HAProxy kept up: no back-off
    await L.until('accelerated sockets closed', async () => (await L.counters('haproxy')).accel_open === 0);
  });

  it('a one-way stream that outruns its reader backs off to TCP; request/response never does (counters)', async () => {
    const ns = L.pods.haproxy!.ns;
    // Flat out in 1 KiB writes, the app's writes find HAProxy still holding unread fast-path bytes,
    // write after write: the socket backs off to TCP (where small writes coalesce), and comes back to
    // try again later. It switches only at a write that finds HAProxy with nothing unread (never TCP
    // bytes behind unread fast-path bytes), so HAProxy must keep reading: the app reads the echo at
    // once. (Writes over 32 KiB never back off: the fast path wins there.) A stream that backs off a
    // second time, or still outruns its reader when its hold is over, leaves the sockhash for good:
    // whether one transfer gets that far depends on the machine's pace, so up to four run (a new
    // connection each), every byte of each checked.
    let before = await L.counters('haproxy');
    const lo = loBytes(ns);
    for (let i = 0; i < 4; i++) {
      const r = await L.xfer('haproxy', ['--size', String(32 * MiB), '--chunk', '1024']);
      expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
      if ((await L.counters('haproxy')).accel_left! > before.accel_left!) break;
    }
    let after = await L.counters('haproxy');
    let d = (k: string) => after[k]! - before[k]!;
    const stream = {
      fast: d('msg_fast'),
      slow: d('msg_slow'),
      backoff: d('msg_backoff'),
      left: d('accel_left'),
      lo: loBytes(ns) - lo,
    };
    console.log(`fast path flat out: ${JSON.stringify(stream)} (lo bytes of 64 MiB per transfer)`);
    expect(stream.backoff, JSON.stringify(stream)).toBeGreaterThan(0);
    expect(stream.slow, JSON.stringify(stream)).toBeGreaterThan(0);
    expect(stream.fast, JSON.stringify(stream)).toBeGreaterThan(0); // before the back-off, and probes
    // Still outrunning its reader after the hold (or backing off again): a stream, which leaves the
    // sockhash for good, while the echo keeps coming its way (xfer checked every byte both ways).
    expect(stream.left, JSON.stringify(stream)).toBeGreaterThan(0);
    // 16 KiB writes (HAProxy's own writes are 16 KiB pieces too) back off the same way: the fast path
    // loses to TCP for one-way streams of writes up to 32 KiB.
    before = await L.counters('haproxy');
    for (let i = 0; i < 4; i++) {
      const r = await L.xfer('haproxy', ['--size', String(32 * MiB), '--chunk', String(16384)]);
      expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
      if ((await L.counters('haproxy')).msg_backoff! > before.msg_backoff!) break;
    }
    after = await L.counters('haproxy');
    console.log(
      `16 KiB writes: backoffs ${after.msg_backoff! - before.msg_backoff!}, left ${after.accel_left! - before.accel_left!}`,
    );
    expect(after.msg_backoff! - before.msg_backoff!).toBeGreaterThan(0);
    await L.until('accelerated sockets closed', async () => (await L.counters('haproxy')).accel_open === 0);
    // Request/response, one request in flight (the bench's load generator, through HAProxy to the echo
    // upstream), at every size the bench measures and up to the back-off's 32 KiB: a side only writes
    // once it has read the other's answer, so the peer never holds unread bytes at a write. Every
    // message takes the fast path (HAProxy writes a 32 KiB answer as 16 KiB pieces: more messages).
    for (const size of [64, 1024, 8192, 16384, 32768]) {
      before = await L.counters('haproxy');
      const out = await env.run(L.pods.haproxy!.ns, L.pods.haproxy!.app, MRLOAD, [
        'client',
        `${UP}:7000`,
        'rr',
        '1',
        '1',
        '0.2',
        String(size),
      ]);
      const rr = JSON.parse(out.trim().split('\n').pop()!) as { requests: number; errors: number };
      after = await L.counters('haproxy');
      d = (k: string) => after[k]! - before[k]!;
      const seen = {
        size,
        requests: rr.requests,
        errors: rr.errors,
        fast: d('msg_fast'),
        slow: d('msg_slow'),
        backoff: d('msg_backoff'),
        left: d('accel_left'),
      };
      expect(seen.errors, JSON.stringify(seen)).toBe(0);
      expect(seen.requests, JSON.stringify(seen)).toBeGreaterThan(100);
      expect(seen.fast, JSON.stringify(seen)).toBeGreaterThanOrEqual(2 * seen.requests);
      expect(seen.backoff, JSON.stringify(seen)).toBe(0);
      expect(seen.left, JSON.stringify(seen)).toBe(0);
      // The connection's first request may find the proxy's socket not yet on the fast path (its
      // passive ESTABLISHED can come after the client's first write) and go by TCP: once, not per request.
      expect(seen.slow, JSON.stringify(seen)).toBeLessThanOrEqual(1);
      await L.until('accelerated sockets closed', async () => (await L.counters('haproxy')).accel_open === 0);
    }
  });

  it('a burst of small writes then a half-close through HAProxy: every byte arrives (no TCP bytes behind unread fast-path bytes)', async () => {
    // 64 KiB in 1 KiB writes, then shutdown(SHUT_WR): the burst outruns HAProxy. Had it switched to
    // TCP while HAProxy still held unread fast-path bytes (a back-off at the 33rd write, as before),
    // HAProxy's recv() would return those alone (tcp_bpf_recvmsg), and HAProxy takes a short read
    // after EPOLLRDHUP for the end: it closed with the TCP bytes unread, resetting the connection
    // (5 of 20 in a build that backs off at once). A back-off now waits for a write that finds HAProxy
    // with nothing unread.
    const before = await L.counters('haproxy');
    for (let i = 0; i < 20; i++) {
      const r = await L.xfer('haproxy', ['--size', String(65536), '--chunk', '1024']);
      expect(r, `transfer ${i}: ${JSON.stringify(r)}`).toMatchObject({ ok: true });
    }
    const after = await L.counters('haproxy');
    console.log(
      `burst then half-close: backoffs ${after.msg_backoff! - before.msg_backoff!}, fast ${after.msg_fast! - before.msg_fast!}`,
    );
    // The transfers did take the fast path (both ends of each joined, and messages went fast): this
    // test cannot pass with acceleration silently off.
    expect(after.accel_sockets! - before.accel_sockets!).toBe(40);
    expect(after.msg_fast! - before.msg_fast!).toBeGreaterThan(20 * 4); // 64 writes up and the echo down, each
    await L.until('accelerated sockets closed', async () => (await L.counters('haproxy')).accel_open === 0);
  });

  it('a leaving stream whose peer answered once while it held unread bytes, then went quiet, still leaves', async () => {
    // An upload through HAProxy whose upstream answers once early (A, which the application does not
    // read) and once more after the application's socket asked to leave (B), then never again (an
    // HTTP response during an upload). HAProxy's socket, seeing the flag, must still redirect B
    // (the application holds A unread: B by TCP behind it could be lost), and once the application
    // has read A and B its socket must leave, though HAProxy never sends again. (Until 2026-12-05 the
    // peer's `hold` waited for a later send to say it was done: the socket stayed for good.)
    // The application writes 1 KiB every 20 µs; HAProxy is stopped for 30 ms at a time (SIGSTOP, our
    // own process), so that the writes queue up to a streak, then resumed: the next write finds it
    // with nothing unread and backs off; a second back-off, or not being drained after the hold,
    // sets the flag. Every uploaded byte is checked (SHA-256 and count at the upstream), A and B too.
    const haproxy = L.pods.haproxy!;
    const tool = join(env.toolsDir, 'leaving.py');
    const server = env.spawn(L.net.up, null, 'python3', [tool, 'server', UP, '7001'], { stdin: true });
    await waitFor(() => server.out.includes('ready'), 'leaving.py server', server);
    const before = await L.counters('haproxy');
    const client = env.spawn(haproxy.ns, haproxy.app, 'python3', [tool, 'client', UP, '7001'], { stdin: true });
    const d = async (k: string) => (await L.counters('haproxy'))[k]! - before[k]!;
    await L.until('both ends on the fast path', async () => (await d('accel_sockets')) === 2);
    await new Promise((r) => setTimeout(r, 300)); // A has come (after 64 KiB of the upload)
    // The flag is set once the application's writes stop reaching the program (it then sees one per
    // 4 GiB): neither fast nor by TCP for 500 ms, while it writes at 50 MB/s.
    let leaving = false;
    for (let round = 0; round < 8 && !leaving; round++) {
      process.kill(haproxy.proc!.child.pid!, 'SIGSTOP');
      await new Promise((r) => setTimeout(r, 30));
      process.kill(haproxy.proc!.child.pid!, 'SIGCONT');
      await new Promise((r) => setTimeout(r, 400));
      const seenByProgram = async () => {
        const c = await L.counters('haproxy');
        return c.msg_fast! + c.msg_slow!;
      };
      const m0 = await seenByProgram();
      await new Promise((r) => setTimeout(r, 500));
      leaving = (await seenByProgram()) === m0;
    }
    const seen = async () => {
      const c = await L.counters('haproxy');
      const k = ['msg_backoff', 'msg_fast', 'msg_slow', 'accel_left'].map((n) => [n, c[n]! - before[n]!]);
      return JSON.stringify({ ...Object.fromEntries(k), client: client.out, server: server.out });
    };
    expect(leaving, await seen()).toBe(true);
    expect(await d('accel_left'), await seen()).toBe(0); // A is unread: it cannot leave yet
    // B, once: HAProxy's socket redirects it (the application still holds A), no TCP byte behind A.
    const fast0 = await d('msg_fast');
    const slow0 = await d('msg_slow');
    server.child.stdin!.write('b\n');
    await L.until('B redirected', async () => (await d('msg_fast')) > fast0);
    expect(await d('msg_slow'), await seen()).toBe(slow0);
    // The application reads A and B (every byte checked), keeps writing (its ACKs run sockops): its
    // socket leaves, though HAProxy never sends again.
    client.child.stdin!.write('read\n');
    await waitFor(() => client.out.includes('read '), 'client reads A and B', client, 20_000);
    expect(client.out, await seen()).toContain('read ok');
    await L.until('the leaving socket left', async () => (await d('accel_left')) >= 1, 15_000).catch(
      async (e: Error) => {
        throw new Error(`${e.message}: ${await seen()}`);
      },
    );
    client.child.stdin!.write('stop\n');
    await waitFor(() => client.out.includes('"sent"'), 'client report', client, 30_000);
    await waitFor(() => server.out.includes('"received"'), 'server report', server, 30_000);
    const c = JSON.parse(client.out.trim().split('\n').pop()!) as { sent: number; sha256: string; extra: number };
    const sv = JSON.parse(server.out.trim().split('\n').pop()!) as { received: number; sha256: string };
    expect(c.sent).toBeGreaterThan(64 * 1024);
    expect({ received: sv.received, sha256: sv.sha256, extra: c.extra }).toEqual({
      received: c.sent,
      sha256: c.sha256,
      extra: 0,
    });
    await L.until('accelerated sockets closed', async () => (await L.counters('haproxy')).accel_open === 0);
  });

  it('without accelerate the fast path is not taken', async () => {
    const lo = loBytes(L.pods.plain!.ns);
    const r = await L.xfer('plain', ['--size', String(16 * MiB)]);
    // With the counters in the message: a failed connection says which phase and errno, and the policy's
    // counters whether its record was refused, spoiled or never served.
    expect(r, JSON.stringify({ xfer: r, counters: await L.counters('plain') })).toMatchObject({ ok: true });
    const c = await L.counters('plain');
    expect([c.accel_sockets, c.msg_fast]).toEqual([0, 0]);
    expect(loBytes(L.pods.plain!.ns) - lo).toBeGreaterThan(32 * MiB); // both directions over lo
  });

  it('a slow reader: writes come back short, the connection detours by TCP, every byte arrives in order', async () => {
    const p = L.pods.forward!;
    // Small buffers in the pod's netns (the fast path's bound follows tcp_rmem's maximum, with a floor
    // of 4 MiB), so that a slow reader soon backs up the whole chain to the application's writes.
    const sysctl = (k: string, v: string) => sh('ip', ['netns', 'exec', p.ns, 'sysctl', '-qw', `${k}=${v}`]);
    const saved = ['net.ipv4.tcp_rmem', 'net.ipv4.tcp_wmem'].map(
      (k) => [k, sh('ip', ['netns', 'exec', p.ns, 'sysctl', '-n', k]).trim().replace(/\s+/g, ' ')] as const,
    );
    sysctl('net.ipv4.tcp_rmem', '4096 65536 1048576');
    sysctl('net.ipv4.tcp_wmem', '4096 16384 1048576');
    try {
      const before = await L.counters('forward');
      // The app reads 64 KiB every 2 ms (~30 MB/s) while it writes as fast as it may.
      const r = await L.xfer('forward', ['--size', String(48 * MiB), '--read-pause-ms', '2']);
      expect(r, JSON.stringify(r)).toMatchObject({ ok: true });
      const after = await L.counters('forward');
      const d = (k: string) => after[k]! - before[k]!;
      const seen = {
        shortWrites: r.partial_writes + r.eagain,
        fast: d('msg_fast'),
        slow: d('msg_slow'),
        resumed: d('msg_resumed'),
      };
      expect(seen.shortWrites, JSON.stringify(seen)).toBeGreaterThan(0);
      expect(seen.slow, JSON.stringify(seen)).toBeGreaterThan(0);
      expect(seen.fast, JSON.stringify(seen)).toBeGreaterThan(0);
    } finally {
      for (const [k, v] of saved) sysctl(k, v);
    }
  });

  it('1,000 concurrent connections are all accelerated and intact, and the entries go when they close', async () => {
    const before = await L.counters('haproxy');
    expect(await L.xfer('haproxy', ['--size', '4096', '--parallel', '1000'])).toMatchObject({ ok: true, n: 1000 });
    expect((await L.counters('haproxy')).accel_sockets! - before.accel_sockets!).toBe(2000);
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0);
    expect((await L.counters('haproxy')).accel_open).toBe(0);
  });

  it('RST from the application frees both entries', async () => {
    expect(await L.xfer('haproxy', ['--size', String(MiB), '--parallel', '20', '--rst'])).toMatchObject({
      ok: true,
      n: 20,
    });
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0);
  });

  it("RST from the proxy's side: the proxy's entry goes at once, the application's when it closes its socket", async () => {
    const p = L.pods.forward!;
    const x = L.started('forward', ['--size', String(64 * MiB), '--pace-ms', '20', '--hold']);
    await L.until('both ends on the fast path', async () => (await L.sockhash()) === 2);
    // The kernel aborts the proxy's accepted socket (SOCK_DESTROY): an RST goes to the application.
    sh('ip', ['netns', 'exec', p.ns, 'ss', '-K', 'state', 'established', '( sport = :15001 )']);
    const r = await x.result();
    expect(r.ok).toBe(false);
    expect(r.bad[0]).toMatchObject({ error: 'ECONNRESET' });
    expect(r.stalled).toEqual([]);
    // The kernel keeps a socket in a sockhash until it is closed (not merely reset): the application
    // still holds its reset socket, so exactly its entry is left…
    expect(x.proc.child.exitCode).toBeNull();
    await L.until('only the application entry left', async () => (await L.sockhash()) === 1, 5000);
    // …until it closes it.
    x.proc.child.stdin!.end();
    await x.proc.exited;
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0, 5000);
  });

  it('a proxy killed mid-transfer fails its connections cleanly (no hang); new ones are fast again', async () => {
    const p = L.pods.forward!;
    const running = L.started('forward', ['--size', String(512 * MiB)]);
    await L.until('transfer on the fast path', async () => (await L.sockhash()) === 2);
    await env.stop(p.proc!, 'SIGKILL');
    const cut = await running.result();
    expect(cut.ok).toBe(false); // cut, not hung: the deadline did not fire
    expect(cut.stalled).toEqual([]);
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0, 5000);
    p.proc = env.spawn(p.ns, p.proxy, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'forward']);
    await env.waitListening(p.ns, 15001, 'origdst-proxy', p.proc);
    const before = (await L.counters('forward')).msg_fast!;
    expect(await L.xfer('forward', ['--size', String(MiB)])).toMatchObject({ ok: true });
    expect((await L.counters('forward')).msg_fast!).toBeGreaterThan(before);
  });

  it('kTLS is refused on an accelerated socket (EPERM), and left to the kernel elsewhere', async () => {
    const ulp = async (pod: string) => {
      const p = L.pods[pod]!;
      return (
        JSON.parse(await env.run(p.ns, p.app, 'python3', [join(env.toolsDir, 'ulp.py'), UP, '7000'])) as { ulp: string }
      ).ulp;
    };
    const before = await L.counters('haproxy');
    expect(await ulp('haproxy')).toBe('EPERM');
    expect((await L.counters('haproxy')).ulp_refused! - before.ulp_refused!).toBe(1);
    // Not accelerated: the kernel answers (this kernel has no "tls" ULP: ENOENT; with one: ok).
    expect(['ENOENT', 'ok']).toContain(await ulp('plain'));
  });

  it('turning accelerate off applies to new connections; an open one stays on the fast path, intact', async () => {
    const p = L.pods.haproxy!;
    const before = await L.counters('haproxy');
    const long = L.started('haproxy', ['--size', String(24 * MiB), '--pace-ms', '10']);
    await L.until('the long transfer on the fast path', async () => {
      const c = await L.counters('haproxy');
      return c.accel_sockets! - before.accel_sockets! === 2 && c.msg_fast! - before.msg_fast! > 10;
    });
    writeFileSync(
      join(dir, 'haproxy.yaml'),
      policyYaml({
        name: 'haproxy',
        cgroup: `${env.cgRoot}/haproxy/pod`,
        outbound: '127.0.0.1:15001',
        bypassCgroups: [p.proxy],
        accelerate: false,
      }),
    );
    await L.until(
      'policy applied',
      async () => !(await L.status()).policies.find((x) => x.name === 'haproxy')!.accelerate,
    );
    const mid = await L.counters('haproxy');
    expect(await L.xfer('haproxy', ['--size', String(MiB)])).toMatchObject({ ok: true });
    expect((await L.counters('haproxy')).accel_sockets).toBe(mid.accel_sockets); // the new one: not accelerated
    expect(await long.result()).toMatchObject({ ok: true });
    expect((await L.counters('haproxy')).msg_fast!).toBeGreaterThan(mid.msg_fast!); // the open one kept going fast
  });

  it('cleanup while a transfer is on the fast path: it finishes intact, on the fast path; the next cleanup removes the rest', async () => {
    // Whatever else is on the fast path now (a connection still closing) must be gone by the end.
    const before = await L.counters('forward');
    const long = L.started('forward', ['--size', String(16 * MiB), '--pace-ms', '10']);
    await L.until(
      'the transfer on the fast path',
      async () => (await L.counters('forward')).accel_sockets! - before.accel_sockets! === 2,
    );
    expect(await env.stop(agent)).toBe(0);
    const open = await L.sockhash();
    const first = env.cli(env.cleanupArgs());
    expect(await first.exited).toBe(1);
    expect(first.err).toMatch(new RegExp(`kept .* for ${open} socket\\(s\\) still on the fast path`));
    // Kept: the kTLS guard, and the maps those sockets' programs use (a restart re-adopts them).
    expect(readdirSync(join(env.bpffs, 'links')).sort()).toEqual(['mr_setsockopt']);
    expect(readdirSync(join(env.bpffs, 'maps')).sort()).toEqual([
      'mr_fast',
      'mr_peers',
      'mr_sk',
      'mr_sockhash',
      'mr_stats',
    ]);
    // New connections are not redirected any more (they reach the upstream directly)…
    const plain = L.pods.forward!;
    expect(JSON.parse(await env.run(plain.ns, plain.app, XFER, [UP, '7000', '--size', '1024']))).toMatchObject({
      ok: true,
    });
    // …and the open one finishes intact, still on the fast path.
    const r = await long.result();
    expect(r).toMatchObject({ ok: true });
    await env.cliRun(env.cleanupArgs());
    expect(existsSync(env.bpffs)).toBe(false);
  });
});

kernelDescribe('sk_msg fast path: a full sockhash, and a listener that is not the proxy', () => {
  let env: Env;
  let dir: string;
  let L: ReturnType<typeof lab>;

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    L = lab(env, dir);
    await L.setup(
      [
        ['small', true, 'forward'],
        ['rogue', true, 'forward', false],
      ],
      20,
    );
    await env.agent(dir, ['--max-accelerated', '3']);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('a full sockhash leaves the other connections on TCP, every transfer intact', async () => {
    const before = await L.counters('small');
    const r = await L.xfer('small', ['--size', String(4 * MiB), '--parallel', '6']);
    expect(r).toMatchObject({ ok: true, n: 6 });
    const after = await L.counters('small');
    expect(after.accel_sockets! - before.accel_sockets!).toBeLessThanOrEqual(4); // 12 sockets, room for 4
    expect(after.msg_slow! - before.msg_slow!).toBeGreaterThan(0);
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0);
  });

  it("a listener outside the policy's bypass cgroups is given no destination and never accelerated", async () => {
    const before = await L.counters('rogue');
    // The forwarding proxy, not in a bypass cgroup, asks SO_ORIGINAL_DST and gets the kernel's answer:
    // it cannot forward, and closes the connection.
    expect(await L.xfer('rogue', ['--size', String(MiB)], 10)).toMatchObject({ ok: false });
    const after = await L.counters('rogue');
    expect(after.origdst_denied! - before.origdst_denied!).toBeGreaterThan(0);
    expect(after.origdst_served! - before.origdst_served!).toBe(0);
    expect(after.accel_sockets! - before.accel_sockets!).toBeLessThanOrEqual(1); // the application's side at most
    expect(after.msg_fast! - before.msg_fast!).toBe(0);
  });
});

kernelDescribe('sk_msg fast path: TCP Fast Open on the proxy, and an application bound to its pod address', () => {
  let env: Env;
  let dir: string;
  let L: ReturnType<typeof lab>;
  const nstat = (ns: string, name: string) =>
    Number(
      /\s(\d+)\s/.exec(
        sh('ip', ['netns', 'exec', ns, 'nstat', '-az', name])
          .split('\n')
          .find((l) => l.startsWith(name)) ?? '',
      )?.[1] ?? 0,
    );

  beforeAll(async () => {
    env = new Env();
    dir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    L = lab(env, dir);
    await L.setup(
      [
        ['tfo', true, 'forward'],
        ['bound', true, 'forward'],
      ],
      40,
      // Fast Open everywhere in that pod, without cookies (set before the proxy listens): the
      // application's first bytes ride in its SYN, and the proxy's kernel creates the accepted socket
      // when that SYN arrives.
      (name, ns) => {
        if (name === 'tfo') sh('ip', ['netns', 'exec', ns, 'sysctl', '-qw', 'net.ipv4.tcp_fastopen=0x607']);
      },
    );
    await env.agent(dir);
  });

  afterAll(async () => {
    const problems = await env?.teardown();
    rmSync(dir, { recursive: true, force: true });
    expect(problems).toEqual([]);
  });

  it('TCP Fast Open: both ends join the fast path, and every byte arrives', async () => {
    const ns = L.pods.tfo!.ns;
    const before = await L.counters('tfo');
    const passive = nstat(ns, 'TcpExtTCPFastOpenPassive');
    expect(await L.xfer('tfo', ['--tfo', '--size', String(MiB), '--parallel', '4'])).toMatchObject({ ok: true, n: 4 });
    expect(nstat(ns, 'TcpExtTCPFastOpenPassive') - passive).toBe(4); // the proxy's side really was Fast Open
    const after = await L.counters('tfo');
    expect(after.accel_sockets! - before.accel_sockets!).toBe(8); // the application's sockets and the proxy's
    expect(after.msg_fast! - before.msg_fast!).toBeGreaterThan(0);
    await L.until('sockhash empty', async () => (await L.sockhash()) === 0);
  });

  it('an application bound to its pod address (not loopback) finds the proxy on the fast path', async () => {
    const before = await L.counters('bound');
    expect(await L.xfer('bound', ['--bind', '10.203.0.41', '--size', String(MiB)])).toMatchObject({ ok: true });
    const after = await L.counters('bound');
    expect(after.accel_sockets! - before.accel_sockets!).toBe(2);
    // Each end finds the other: most messages go straight to the peer (a few may detour by TCP while
    // the other end joins, as for any connection).
    expect(after.msg_fast! - before.msg_fast!).toBeGreaterThan(after.msg_slow! - before.msg_slow!);
  });
});
