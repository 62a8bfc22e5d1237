// inbound.test.ts — inbound interception's pure parts: map entries of a pod, the sk_lookup test-run
// context's layout, and reading a netns's TCP listeners from /proc text.
import { describe, expect, it } from 'vitest';
import { inboundEntries, inboundFlags, type InboundSpec } from '../../src/policy/inbound.js';
import { parseCidr, type Cidr } from '../../src/policy/addr.js';
import { skLookupCtx } from '../../src/bpf/inbound.js';
import { parseTcpTable } from '../../src/bpf/listeners.js';
import { Action, InFlag, inAddrKey, inStatsValue, INBOUND_MAPS } from '../../src/bpf/abi.js';

const spec = (over: Partial<InboundSpec> = {}): InboundSpec => ({
  slot: 3,
  name: 'b',
  addresses: [
    { family: 4, bytes: [10, 200, 0, 12] },
    { family: 6, bytes: [0xfd, 0, 0, 0x12, ...new Array<number>(12).fill(0)] },
  ],
  includePorts: [],
  excludePorts: [9090],
  bypassSources: [],
  whenNoProxy: 'reject',
  ...over,
});

describe('inbound map entries', () => {
  it('one mr_in_addrs entry per pod address, with the slot and flags', () => {
    const { entries, conflicts } = inboundEntries([spec()]);
    expect(conflicts).toEqual([]);
    expect(entries.mr_in_addrs.map(([k, v]) => [k.family, [...k.addr], v])).toEqual([
      [2, [10, 200, 0, 12, ...new Array<number>(12).fill(0)], { slot: 3, flags: 0 }],
      [10, [0xfd, 0, 0, 0x12, ...new Array<number>(12).fill(0)], { slot: 3, flags: 0 }],
    ]);
    expect(entries.mr_in_ports).toEqual([[{ slot: 3, port: 9090, pad: 0 }, Action.EXCLUDE]]);
    expect(entries.mr_in_srcs).toEqual([]);
  });

  it('flags: pass when no proxy, include-only ports, bypass sources', () => {
    const src = parseCidr('10.200.0.1/32') as Cidr;
    const s = spec({ whenNoProxy: 'pass', includePorts: [8080], bypassSources: [src] });
    expect(inboundFlags(s)).toBe(InFlag.PASS | InFlag.INCLUDE_PORTS | InFlag.BYPASS_SRCS);
    const { entries } = inboundEntries([s]);
    expect(entries.mr_in_ports).toContainEqual([{ slot: 3, port: 8080, pad: 0 }, Action.INCLUDE]);
    expect(entries.mr_in_srcs).toHaveLength(1);
    const [k, v] = entries.mr_in_srcs[0]!;
    expect([k.prefixlen, k.slot, k.family, [...k.addr.subarray(0, 4)], v]).toEqual([
      72,
      3,
      2,
      [10, 200, 0, 1],
      Action.EXCLUDE,
    ]);
  });

  it('an address is one pod only; loopback is never a pod address', () => {
    const { entries, conflicts } = inboundEntries([
      spec(),
      spec({ slot: 4, name: 'c', addresses: [{ family: 4, bytes: [10, 200, 0, 12] }] }),
      spec({ slot: 5, name: 'd', addresses: [{ family: 4, bytes: [127, 0, 0, 1] }] }),
    ]);
    expect(entries.mr_in_addrs.filter(([, v]) => v.slot !== 3)).toEqual([]);
    expect(conflicts).toEqual([
      "policy c: address 10.200.0.12 is already policy b's",
      'policy d: 127.0.0.1 is not a pod address (loopback/unspecified)',
    ]);
  });
});

describe('ABI layouts', () => {
  it('struct bpf_sk_lookup as the kernel has it (UAPI; 72 bytes)', () => {
    const off = Object.fromEntries(skLookupCtx.fields.map((f) => [f.name, f.offset]));
    expect(skLookupCtx.size).toBe(72);
    expect(off).toMatchObject({
      cookie: 0,
      family: 8,
      protocol: 12,
      remote_ip4: 16,
      remote_ip6: 20,
      remote_port: 36,
      local_ip4: 40,
      local_ip6: 44,
      local_port: 60,
      ingress_ifindex: 64,
    });
  });

  it('inbound structs', () => {
    expect(inAddrKey.size).toBe(20);
    expect(inStatsValue.size).toBe(64);
    expect(Object.keys(INBOUND_MAPS).every((n) => n.length <= 15 && n.startsWith('mr_'))).toBe(true);
  });
});

describe('/proc/net/tcp listeners', () => {
  it('reads LISTEN rows (host-order words) of tcp and tcp6', () => {
    const v4 = [
      '  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 0100007F:3A9E 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 142702 1 0 100 0 0 10 0',
      '   1: 0C00C80A:1F90 0B00C80A:B3A2 01 00000000:00000000 00:00000000 00000000     0        0 142800 1 0 20 4 30 10 -1',
    ].join('\n');
    expect(parseTcpTable(v4, 4)).toEqual([{ family: 4, bytes: [127, 0, 0, 1], port: 15006, inode: 142702 }]);
    const v6 = [
      '  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode',
      '   0: 00000000000000000000000001000000:3A9E 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5150 1 0 100 0 0 10 0',
      '   1: 000000FD000000000000000012000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5151 1 0 100 0 0 10 0',
    ].join('\n');
    expect(parseTcpTable(v6, 6)).toEqual([
      { family: 6, bytes: [...new Array<number>(15).fill(0), 1], port: 15006, inode: 5150 },
      { family: 6, bytes: [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12], port: 8080, inode: 5151 },
    ]);
  });
});
