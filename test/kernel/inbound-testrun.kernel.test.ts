// inbound-testrun.kernel.test.ts — mr_sklookup's decisions as a table, run with BPF_PROG_TEST_RUN (no
// packet is sent): verdict, the socket chosen (by SO_COOKIE) and the counter that moved, per lookup.
// The listeners are real sockets, taken from the processes that opened them, as the agent would.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { Env, kernelDescribe, waitFor, type Proc } from './harness.js';
import { InboundLab } from './inbound-lab.js';
import { SK_DROP, SK_PASS } from '../../src/bpf/inbound.js';
import { parseCidr, type Cidr } from '../../src/policy/addr.js';
import type { InboundSpec } from '../../src/policy/inbound.js';
import type { InStatName } from '../../src/bpf/abi.js';
import { findListeners } from '../../src/bpf/listeners.js';

const v4 = (s: string) => s.split('.').map(Number);
const v6 = (s: string) => {
  const [head = '', tail = ''] = s.split('::');
  const words = (x: string) => (x ? x.split(':').map((w) => parseInt(w, 16)) : []);
  const h = words(head);
  const t = words(tail);
  const all = [...h, ...new Array<number>(8 - h.length - t.length).fill(0), ...t];
  return all.flatMap((w) => [w >> 8, w & 0xff]);
};
const cidr = (s: string) => parseCidr(s) as Cidr;

const spec = (slot: number, over: Partial<InboundSpec>): InboundSpec => ({
  slot,
  name: `t${slot}`,
  addresses: [],
  includePorts: [],
  excludePorts: [],
  bypassSources: [],
  whenNoProxy: 'reject',
  ...over,
});

kernelDescribe('mr_sklookup decisions (BPF_PROG_TEST_RUN)', () => {
  let env: Env;
  let lab: InboundLab;
  let ns: string;
  const cookies: Record<'L4' | 'L6' | 'LD', bigint> = { L4: 0n, L6: 0n, LD: 0n };

  /** A listening socket opened by a process of its own (v6only as asked); its cookie, once registered. */
  async function listener(host: string, port: number, v6only: boolean): Promise<Proc> {
    const code = `require('net').createServer().listen({ host: process.argv[1], port: +process.argv[2], ipv6Only: process.argv[3] === '1' }, () => console.log('ready'))`;
    const p = env.spawn(ns, null, process.execPath, ['-e', code, host, String(port), v6only ? '1' : '0']);
    await waitFor(() => p.out.includes('ready'), `listener ${host}:${port}`, p);
    return p;
  }
  function register(slot: number, p: Proc, port: number, families: (4 | 6)[]): bigint {
    const [l] = findListeners({ tablePid: p.child.pid!, ownerPids: [p.child.pid!], port });
    if (!l) throw new Error(`no listener on ${port}`);
    return lab.register(slot, l.pid, l.fd, families, ns).cookie;
  }

  beforeAll(async () => {
    env = new Env();
    ns = env.netns('t');
    lab = new InboundLab(`/sys/fs/bpf/meshredir-test-${env.id}-testrun`);
    // Documentation addresses: a test run sends nothing anywhere.
    expect(
      lab.apply([
        spec(10, {
          addresses: [
            { family: 4, bytes: v4('198.51.100.10') },
            { family: 6, bytes: v6('2001:db8::10') },
          ],
          excludePorts: [9090],
          bypassSources: [cidr('198.51.100.99/32'), cidr('2001:db8::99/128')],
        }),
        spec(11, {
          addresses: [
            { family: 4, bytes: v4('198.51.100.11') },
            { family: 6, bytes: v6('2001:db8::11') },
          ],
          includePorts: [8080],
          whenNoProxy: 'pass',
        }),
        spec(12, { addresses: [{ family: 4, bytes: v4('198.51.100.12') }] }),
        spec(13, { addresses: [{ family: 4, bytes: v4('198.51.100.13') }], whenNoProxy: 'pass' }),
        spec(14, { addresses: [{ family: 4, bytes: v4('198.51.100.14') }] }),
      ]),
    ).toEqual([]);
    const l4 = await listener('127.0.0.1', 20001, false);
    const l6 = await listener('::1', 20002, true);
    const ld = await listener('::', 20003, false);
    cookies.L4 = register(10, l4, 20001, [4]);
    cookies.L6 = register(10, l6, 20002, [6]);
    cookies.LD = register(11, ld, 20003, [4, 6]); // dual-stack: one socket for both families
    register(12, l6, 20002, [4]); // an IPv6-only socket cannot take IPv4: the assign fails
  });

  afterAll(async () => {
    let labError: unknown;
    try {
      lab?.close();
    } catch (e) {
      labError = e;
    }
    const problems = await env?.teardown();
    expect(labError).toBeUndefined();
    expect(problems).toEqual([]);
  });

  type Row = [
    what: string,
    family: 4 | 6,
    remote: string,
    local: string,
    port: number,
    verdict: number,
    socket: 'L4' | 'L6' | 'LD' | null,
    slot: number | null,
    counters: InStatName[],
    protocol?: number,
  ];
  const client = '203.0.113.5';
  const client6 = '2001:db8:ffff::5';
  const rows: Row[] = [
    ['TCP to the pod', 4, client, '198.51.100.10', 8080, SK_PASS, 'L4', 10, ['intercepted']],
    ['any other port', 4, client, '198.51.100.10', 41234, SK_PASS, 'L4', 10, ['intercepted']],
    ['excluded port', 4, client, '198.51.100.10', 9090, SK_PASS, null, 10, ['bypass_port']],
    ['bypassed source', 4, '198.51.100.99', '198.51.100.10', 8080, SK_PASS, null, 10, ['bypass_source']],
    ["from the pod's own address", 4, '198.51.100.10', '198.51.100.10', 8080, SK_PASS, null, 10, ['bypass_local']],
    ['from 127.0.0.6', 4, '127.0.0.6', '198.51.100.10', 8080, SK_PASS, null, 10, ['bypass_local']],
    ["from another pod's address", 4, '198.51.100.11', '198.51.100.10', 8080, SK_PASS, 'L4', 10, ['intercepted']],
    ['UDP', 4, client, '198.51.100.10', 8080, SK_PASS, null, null, [], 17],
    ['not a pod address', 4, client, '198.51.100.200', 8080, SK_PASS, null, null, []],
    ['loopback destination', 4, '127.0.0.1', '127.0.0.1', 8080, SK_PASS, null, null, []],
    ['IPv6 to the pod', 6, client6, '2001:db8::10', 8080, SK_PASS, 'L6', 10, ['intercepted']],
    ['IPv6 bypassed source', 6, '2001:db8::99', '2001:db8::10', 8080, SK_PASS, null, 10, ['bypass_source']],
    ['IPv6 from ::1', 6, '::1', '2001:db8::10', 8080, SK_PASS, null, 10, ['bypass_local']],
    ["IPv6 from the pod's own address", 6, '2001:db8::10', '2001:db8::10', 8080, SK_PASS, null, 10, ['bypass_local']],
    ['dual-stack socket takes IPv4', 4, client, '198.51.100.11', 8080, SK_PASS, 'LD', 11, ['intercepted']],
    ['dual-stack socket takes IPv6', 6, client6, '2001:db8::11', 8080, SK_PASS, 'LD', 11, ['intercepted']],
    ['port not included', 4, client, '198.51.100.11', 9999, SK_PASS, null, 11, ['bypass_port']],
    [
      'IPv6-only socket for IPv4: refused',
      4,
      client,
      '198.51.100.12',
      8080,
      SK_DROP,
      null,
      12,
      ['err_assign', 'no_proxy_refused'],
    ],
    ['no proxy, pass', 4, client, '198.51.100.13', 8080, SK_PASS, null, 13, ['no_proxy_passed']],
    ['no proxy, reject', 4, client, '198.51.100.14', 8080, SK_DROP, null, 14, ['no_proxy_refused']],
  ];

  it.each(rows)('%s', (_what, family, remote, local, port, verdict, socket, slot, moved, protocol) => {
    const addr = family === 4 ? v4 : v6;
    const before = slot === null ? null : lab.counters(slot);
    const r = lab.lookup({
      family,
      ...(protocol ? { protocol } : {}),
      remote: addr(remote),
      remotePort: 40000,
      local: addr(local),
      localPort: port,
    });
    expect({ verdict: r.verdict, cookie: r.cookie }).toEqual({ verdict, cookie: socket ? cookies[socket] : 0n });
    if (slot === null) return;
    const after = lab.counters(slot);
    const changed = Object.keys(after).filter((k) => after[k as InStatName] !== before![k as InStatName]);
    expect(changed.sort()).toEqual([...moved].sort());
    for (const k of moved) expect(after[k] - before![k]).toBe(1);
  });
});
