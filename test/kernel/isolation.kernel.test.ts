// isolation.kernel.test.ts — pods must not reach each other through the record path: a stalled pod
// exhausts its own budget of handshakes in flight, never another pod's; a process that gives its own
// netns a victim's address and the proxy's can neither claim, read, overwrite nor delete the victim's
// record; a socket outside the policy's bypass cgroups asking SO_ORIGINAL_DST gets the kernel's answer;
// walking mr_orig while records come and go (what the agent's count did) repeats keys; MPTCP connects.
import { expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { pendingDrift } from '../../src/modes/ebpf/counters.js';
import { lib, NULL } from '../../src/sys/libbpf.js';
import { Env, kernelDescribe, policyYaml, waitFor, sh, ORIGDST_PROXY, ROOT, type Proc } from './harness.js';
import { useLab } from './lab.js';

interface Status {
  records: { pending: number; limit: number; inTable: number };
  policies: { name: string; counters: Record<string, number>; pending?: { now: number; limit: number } }[];
}

const PROXY = '10.210.0.1';
const UP = '10.210.0.100';

kernelDescribe('isolation between pods on the record path (node proxy on a routable address)', () => {
  let env: Env;
  let node: string, podA: string, podB: string, podE: string, podV: string, up: string;
  let cgA: string, cgB: string, cgE: string, cgV: string, cgProxy: string, cgEvil: string;
  let proxy: Proc;

  const status = async (): Promise<Status> =>
    JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const counters = async (name: string) => (await status()).policies.find((p) => p.name === name)!.counters;
  const pins = () => new Pins(env.bpffs);
  /** The records now in mr_orig, by the application's source port. */
  const records = () => {
    const m = pins().openMap('mr_orig');
    try {
      return (m.entries() as [{ sport: number; saddr: Buffer }, { addr: Buffer; port: number; flags: number }][]).map(
        ([k, v]) => ({
          sport: k.sport,
          from: [...k.saddr.subarray(0, 4)].join('.'),
          to: `${[...v.addr.subarray(0, 4)].join('.')}:${v.port}`,
          flags: v.flags,
        }),
      );
    } finally {
      m.close();
    }
  };
  /** SYNs from `src` to the proxy are dropped while fn runs: its connects wait in SYN_SENT with their records. */
  const synsDropped = async <T>(src: string, fn: () => Promise<T>): Promise<T> => {
    const rule = ['INPUT', '-s', src, '-p', 'tcp', '--syn', '--dport', '15001', '-j', 'DROP'];
    sh('ip', ['netns', 'exec', node, 'iptables', '-I', ...rule]);
    try {
      return await fn();
    } finally {
      sh('ip', ['netns', 'exec', node, 'iptables', '-D', ...rule]);
    }
  };
  /** A TCP_REPAIR connect (hooks run, no packet) held until released. */
  const repair = async (ns: string, cg: string, dest: string, port: number, lport: number, src?: string) => {
    const p = env.spawn(
      ns,
      cg,
      'python3',
      [join(env.toolsDir, 'repair.py'), dest, String(port), String(lport), ...(src ? [src] : [])],
      { stdin: true },
    );
    await waitFor(() => p.out.includes('\n'), 'repair-mode connect', p);
    return {
      result: JSON.parse(p.out.trim()) as { error?: string; peer?: [string, number] },
      close: async () => {
        p.child.stdin!.end();
        await p.exited;
      },
    };
  };
  /** A netns the attacker owns, holding the victim pod's address and the proxy's on its loopback. */
  const spoofingNetns = (name: string) => {
    const ns = env.netns(name);
    for (const a of ['10.210.0.14/32', `${PROXY}/32`]) env.ip(ns, 'addr', 'add', a, 'dev', 'lo');
    return ns;
  };
  const until = async (what: string, cond: () => Promise<boolean> | boolean, ms = 15_000) => {
    const end = Date.now() + ms;
    while (!(await cond())) {
      if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  useLab(
    {
      bridge: [`${PROXY}/24`],
      pods: {
        a: ['10.210.0.11/24'],
        b: ['10.210.0.12/24'],
        e: ['10.210.0.13/24'],
        v: ['10.210.0.14/24'],
        up: [`${UP}/24`],
      },
      cgroups: ['pod-a', 'pod-b', 'pod-e', 'pod-v', 'proxy', 'evil'], // evil: under the attach point, no policy
    },
    async (lab) => {
      ({ env, node } = lab);
      ({ a: podA, b: podB, e: podE, v: podV, up } = lab.ns);
      ({ 'pod-a': cgA, 'pod-b': cgB, 'pod-e': cgE, 'pod-v': cgV, proxy: cgProxy, evil: cgEvil } = lab.cg);
      await env.server(up, UP, 8080, 'up');
      // The node proxy answers each connection with what SO_ORIGINAL_DST gave it ("ORIGDST a p PEER b q",
      // or "ERR <errno>"): what a forwarding proxy would have done with the connection, without doing it.
      proxy = env.spawn(node, cgProxy, ORIGDST_PROXY, ['--listen', `${PROXY}:15001`, '--mode', 'report']);
      await env.waitListening(node, 15001, 'node proxy', proxy);
      const pol = (name: string, cg: string, netns?: string) =>
        lab.policy(
          name,
          policyYaml({
            name,
            cgroup: cg,
            outbound: `${PROXY}:15001`,
            bypassCgroups: [cgProxy],
            ...(netns ? { netns } : {}),
          }),
        );
      pol('a', cgA);
      pol('b', cgB);
      pol('e', cgE, `/run/netns/${podE}`);
      pol('v', cgV, `/run/netns/${podV}`);
      // 256 handshakes in flight on the node; each policy gets a quarter of that by default.
      await lab.agent(['--max-connections', '256']);
    },
  );

  it("a pod whose proxy path drops SYNs exhausts its own budget; another pod's connects all go through", async () => {
    const [a0, b0] = [await counters('a'), await counters('b')];
    const stalled = await synsDropped('10.210.0.11', async () => {
      const stalled = env.holdLater(podA, cgA, UP, 8080, 400);
      // A's connects wait in SYN_SENT with their records until its budget is used up; the rest are refused.
      let last = -1;
      await until('pod A stalled at its budget', async () => {
        const now = (await status()).records.pending;
        const stable = now > 0 && now === last;
        last = now;
        return stable;
      });
      // Pod B, meanwhile: every connect reaches its proxy with its own destination.
      const r = await env.client<{ ok: number; failed: number; firstError: string | null }>(podB, cgB, [
        'loop',
        UP,
        '8080',
        '50',
        `ORIGDST ${UP} 8080 PEER 10.210.0.12 `,
      ]);
      expect(r).toMatchObject({ ok: 50, failed: 0 });
      const s = await status();
      expect(s.policies.find((p) => p.name === 'a')!.pending).toEqual({ now: 64, limit: 64 });
      expect(s.policies.find((p) => p.name === 'b')!.pending).toEqual({ now: 0, limit: 64 });
      return stalled;
    });
    // A's SYNs are let through: its waiting connects complete, each with its own destination.
    const lines = await stalled.lines();
    const right = lines.filter((l) => l.startsWith(`ORIGDST ${UP} 8080 PEER 10.210.0.11 `));
    const refused = lines.filter((l) => l === 'ERROR EPERM');
    expect([right.length, refused.length], lines.slice(0, 5).join('\n')).toEqual([64, 336]);
    await stalled.release();
    const [a1, b1] = [await counters('a'), await counters('b')];
    expect(a1.err_full! - a0.err_full!).toBe(336);
    expect(b1.err_full! - b0.err_full!).toBe(0);
    await until('no handshake in flight', async () => (await status()).records.pending === 0);
  });

  it("a forged claim from another netns gets nothing, and the real proxy still gets the victim's destination", async () => {
    const evil = spoofingNetns('evil');
    const v = await synsDropped('10.210.0.14', async () => {
      const v = env.holdLater(podV, cgV, UP, 8080, 1, 42001);
      await until('the victim record', () => records().some((r) => r.sport === 42001));
      // The attacker's own listener on "the proxy's address", connected from "the victim's address and
      // port": the same tuple the victim's record is published under.
      const out = JSON.parse(
        await env.run(evil, cgEvil, 'python3', [
          join(env.toolsDir, 'forge.py'),
          'claim',
          PROXY,
          '15001',
          '10.210.0.14',
          '42001',
        ]),
      ) as { origdst?: string; error?: string };
      expect(out).toEqual({ error: 'ENOENT' }); // the kernel's own answer: no NAT entry
      expect(records().filter((r) => r.sport === 42001)).toHaveLength(1);
      return v;
    });
    // The victim's SYN is retransmitted and now answered: its proxy reads its destination.
    expect(await v.lines()).toEqual([`ORIGDST ${UP} 8080 PEER 10.210.0.14 42001`]);
    await v.release();
  });

  it("a policy's connect from a netns other than its pod's is refused: no forged record", async () => {
    const evil = spoofingNetns('evil-e');
    const before = await counters('e');
    const v = await synsDropped('10.210.0.14', async () => {
      const v = env.holdLater(podV, cgV, UP, 8080, 1, 42002);
      await until('the victim record', () => records().some((r) => r.sport === 42002));
      // Pod E's process in a netns of its own (an unprivileged user namespace is enough) publishes the
      // victim's tuple with a destination of its choosing.
      const forged = await repair(evil, cgE, '10.210.0.99', 9999, 42002, '10.210.0.14');
      try {
        expect(forged.result).toEqual({ error: 'EPERM' });
        expect(
          records()
            .filter((r) => r.sport === 42002)
            .map((r) => r.to),
        ).toEqual([`${UP}:8080`]);
      } finally {
        await forged.close();
      }
      expect(
        records()
          .filter((r) => r.sport === 42002)
          .map((r) => r.to),
      ).toEqual([`${UP}:8080`]);
      return v;
    });
    expect(await v.lines()).toEqual([`ORIGDST ${UP} 8080 PEER 10.210.0.14 42002`]);
    await v.release();
    expect((await counters('e')).err_netns! - (before.err_netns ?? 0)).toBe(1);
  });

  it("a colliding record (a pod whose netns the agent does not know) never gives the victim's connection another destination", async () => {
    const evil = spoofingNetns('evil-b');
    // The victim first: the forger's publish collides with a record in flight and spoils it for both.
    const v = await synsDropped('10.210.0.14', async () => {
      const v = env.holdLater(podV, cgV, UP, 8080, 1, 42003);
      await until('the victim record', () => records().some((r) => r.sport === 42003));
      const forged = await repair(evil, cgB, '10.210.0.99', 9999, 42003, '10.210.0.14');
      try {
        expect(forged.result.error).toBeUndefined();
        expect(
          records()
            .filter((r) => r.sport === 42003)
            .map((r) => r.to),
        ).toEqual([`${UP}:8080`]);
      } finally {
        await forged.close();
      }
      // The forger's close deletes only a record it published: the victim's is still there.
      expect(records().filter((r) => r.sport === 42003)).toHaveLength(1);
      return v;
    });
    const got = await v.lines();
    expect(got[0]).not.toMatch(/10\.210\.0\.99/);
    expect(got).toEqual(['ERR ENOENT']);
    await v.release();
    // The forger first (squatting the victim's next port): the victim's publish collides; again nobody
    // is given the forger's destination.
    const forged = await repair(evil, cgB, '10.210.0.99', 9999, 42004, '10.210.0.14');
    try {
      const v2 = env.holdLater(podV, cgV, UP, 8080, 1, 42004);
      const lines = await v2.lines();
      expect(lines).toEqual(['ERR ENOENT']);
      await v2.release();
    } finally {
      await forged.close();
    }
    expect(records().filter((r) => r.sport === 42003 || r.sport === 42004)).toEqual([]);
    expect((await counters('b')).err_conflict ?? 0).toBeGreaterThan(0);
  });

  it('walking mr_orig key by key while records are deleted repeats keys (why the agent no longer counts that way)', async () => {
    // Three records held by repair-mode connects of pod B.
    const held = await Promise.all([43001, 43002, 43003].map((p) => repair(podB, cgB, '10.210.0.99', 80, p)));
    try {
      const m = pins().openMap('mr_orig');
      try {
        const size = m.key.size;
        const next = (prev: Buffer | null) => {
          const out = Buffer.alloc(size);
          return lib.bpf_map_get_next_key(m.fd, prev ?? NULL, out) === 0 ? out : null;
        };
        const sport = (k: Buffer) => k.readUInt16BE(8 + 16 + 16);
        const seen: number[] = [];
        const k1 = next(null)!;
        seen.push(sport(k1));
        const k2 = next(k1)!;
        seen.push(sport(k2));
        // The record under the walk's cursor goes (its application closes): the next step starts over.
        await held.find((_, i) => 43001 + i === sport(k2))!.close();
        for (let k = next(k2); k; k = next(k)) seen.push(sport(k));
        expect(seen.length).toBeGreaterThan(new Set(seen).size);
        // The count status and the agent use now goes by bucket (BPF_MAP_LOOKUP_BATCH): exact.
        expect(pendingDrift(pins()).records).toBe(2);
      } finally {
        m.close();
      }
    } finally {
      for (const h of held) await h.close();
    }
  });

  it('MPTCP connects are redirected like TCP: the proxy reads the destination and getpeername shows it', async () => {
    sh('ip', ['netns', 'exec', podB, 'sysctl', '-qw', 'net.mptcp.enabled=1']);
    const out = await env.run(podB, cgB, 'python3', [
      '-c',
      [
        'import socket, json',
        's = socket.socket(socket.AF_INET, socket.SOCK_STREAM, 262)',
        `s.connect(("${UP}", 8080))`,
        'peer = s.getpeername()',
        "data = b''",
        'while not data.endswith(b"\\n"):',
        '    d = s.recv(100)',
        '    if not d: break',
        '    data += d',
        'print(json.dumps({"peer": peer, "data": data.decode().strip(), "proto": s.getsockopt(socket.SOL_SOCKET, 38)}))',
      ].join('\n'),
    ]);
    const r = JSON.parse(out) as { peer: [string, number]; data: string; proto: number };
    expect(r.proto).toBe(262);
    expect(r.data).toMatch(new RegExp(`^ORIGDST ${UP.replace(/\./g, '\\.')} 8080 PEER 10\\.210\\.0\\.12 \\d+$`));
    expect(r.peer).toEqual([UP, 8080]);
  });
});

kernelDescribe('isolation: a listener outside the policy bypass cgroups (sidecar on loopback)', () => {
  let env: Env;
  let pod: string;
  let app: string;

  useLab({ cgroups: ['r/app', 'r/proxy', 'elsewhere'] }, async (lab) => {
    env = lab.env;
    pod = env.netns('r');
    app = lab.cg['r/app'];
    // The listener on the proxy's address is not the policy's proxy: it lives in no bypass cgroup.
    const p = env.spawn(pod, lab.cg.elsewhere, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'report']);
    await env.waitListening(pod, 15001, 'listener', p);
    lab.policy(
      'r',
      policyYaml({
        name: 'r',
        cgroup: `${env.cgRoot}/r`,
        outbound: '127.0.0.1:15001',
        bypassCgroups: [lab.cg['r/proxy']],
      }),
    );
    await lab.agent();
  });

  it("asking SO_ORIGINAL_DST gets the kernel's answer, not the record", async () => {
    const r = await env.client(pod, app, ['connect', '10.211.0.5', '8080']);
    expect(r.data).toBe('ERR ENOENT');
  });
});

kernelDescribe("isolation: mr_orig's elements are reused at once, and a copy is checked", () => {
  it('a deleted element is reused by the next insert, a copy from it is refused (both checks), an undisturbed one accepted', () => {
    // BPF_PROG_TEST_RUN of test/tools/elemreuse.bpf.c on mr_orig's map type (see there): on one CPU, in
    // program order, what a delete + publish on another CPU does to a claim between lookup and copy.
    const pins = `/sys/fs/bpf/meshredir-test-${process.pid}-reuse`;
    const data = join(tmpdir(), `meshredir-test-${process.pid}-pkt`);
    writeFileSync(data, Buffer.alloc(64));
    try {
      sh('bpftool', ['prog', 'loadall', join(ROOT, 'build', 'elemreuse.bpf.o'), pins]);
      const out = sh('bpftool', ['prog', 'run', 'pinned', join(pins, 'mr_t_reuse'), 'data_in', data, 'repeat', '1']);
      expect(out).toMatch(/Return value: 15\b/);
    } finally {
      rmSync(pins, { recursive: true, force: true });
      rmSync(data, { force: true });
    }
  });
});
