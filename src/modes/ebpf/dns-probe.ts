// dns-probe.ts — the throwaway process's part of `verify --dns` (it runs in verify-child.ts, moved into the
// pod's cgroup and netns): per captured nameserver, a connect that sends nothing (UDP: a connect sets the
// peer only; TCP: in TCP_REPAIR mode) runs the real hooks; then what the application sees (getpeername),
// where the socket really points (its line in /proc/self/net, by inode), the socket's entry in
// mr_dns_socks (by SO_COOKIE) and, after close, that the release hook deleted it. No query is sent.
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { enterNetns, quietConnect } from '../../sys/socket.js';
import { accepts, listenersOf, socketsOf, udpServersOf } from '../../util/proc-net.js';
import { AF_INET, DnsSockFlag, dnsEp } from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import { Pins } from './pins.js';

export interface Ep {
  family: 4 | 6;
  bytes: number[];
  port: number;
}

export interface DnsChildRequest {
  kind: 'dns';
  cgroupDir: string;
  netns: string | null;
  bpffs: string;
  targets: { dest: Ep; proto: 'udp' | 'tcp' }[];
  /** The proxies, for whether something listens on them in this netns (UDP and TCP). */
  proxies: Ep[];
}

export interface DnsTargetResult {
  /** "ok" or the errno name connect() failed with. */
  connect: string;
  /** getpeername() as the application sees it. */
  peer?: string;
  /** The socket's real peer, from /proc/self/net (null: its line was not found). */
  real?: string | null;
  /** The socket's entry in mr_dns_socks while open: its connected peer (null: no entry). */
  entry?: string | null;
  /** Whether the entry was still there after close (the release hook deletes it). */
  leftAfterClose?: boolean;
}

export interface DnsChildResult {
  results: DnsTargetResult[];
  /** Per proxy: a UDP socket and a TCP listener take it in this netns. */
  listening: { udp: boolean; tcp: boolean }[];
}

export const epText = (e: { family: 4 | 6; bytes: number[]; port: number }): string => {
  const a = ipaddr.fromByteArray(e.bytes).toString();
  return e.family === 4 ? `${a}:${e.port}` : `[${a}]:${e.port}`;
};

/** An IPv4-mapped address as /proc and the hooks show it for an IPv6 socket is kept as it is. */
const lineText = (l: { bytes: number[]; port: number }) => epText({ family: l.bytes.length === 4 ? 4 : 6, ...l });

export function dnsProbe(req: DnsChildRequest): DnsChildResult {
  if (req.netns) enterNetns(req.netns);
  writeFileSync(join(req.cgroupDir, 'cgroup.procs'), String(process.pid));
  const pins = new Pins(req.bpffs);
  const results = pins.withMaps(['mr_dns_socks'], (m) => {
    const socks = m.get('mr_dns_socks')! as BpfMap<bigint, { flags: number; conn: Buffer }>;
    return req.targets.map((t): DnsTargetResult => {
      let cookie = 0n;
      const { result, seen } = quietConnect(t.dest, t.proto, (r) => {
        cookie = r.cookie;
        const line = socketsOf('/proc/self/net', t.proto).find((s) => s.inode === r.inode);
        const v = socks.get(r.cookie);
        let entry: string | null = null;
        if (v && v.flags & DnsSockFlag.CONNECTED) {
          const e = dnsEp.decode(v.conn);
          const bytes = [...(e.family === AF_INET ? e.addr.subarray(0, 4) : e.addr)];
          entry = epText({ family: e.family === AF_INET ? 4 : 6, bytes, port: e.port });
        }
        return { real: line ? lineText(line.remote) : null, entry };
      });
      if (result.connect !== 'ok') return { connect: result.connect };
      return {
        connect: 'ok',
        peer: result.peer!.text,
        real: seen!.real,
        entry: seen!.entry,
        leftAfterClose: socks.get(cookie) !== undefined,
      };
    });
  });
  const udp = udpServersOf('/proc/self/net');
  const tcp = listenersOf('/proc/self/net');
  return {
    results,
    listening: req.proxies.map((p) => ({ udp: accepts(udp, p.bytes, p.port), tcp: accepts(tcp, p.bytes, p.port) })),
  };
}
