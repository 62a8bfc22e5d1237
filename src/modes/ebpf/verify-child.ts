// verify-child.ts — the throwaway process behind the eBPF verify (started by verify.ts with fork(), never
// through the CLI): it moves itself into the cgroup and the network namespace being checked — which the
// verifying process must not do to itself — makes a TCP_REPAIR connect that runs the real hooks without
// sending a packet, reads the record the proxy would read, and answers over the IPC channel. (`verify
// --dns`: dns-probe.ts, the same way.)
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import ipaddr from 'ipaddr.js';
import { enterNetns, repairConnect, type SockAddr } from '../../sys/socket.js';
import { accepts, listenersOf } from '../../util/proc-net.js';
import { AF_INET, AF_INET6 } from '../../bpf/abi.js';
import { Pins } from './pins.js';
import { dnsProbe, type DnsChildRequest } from './dns-probe.js';

export interface ChildRequest {
  cgroupDir: string;
  netns: string | null;
  bpffs: string;
  dest: { family: 4 | 6; bytes: number[]; port: number };
  proxy: { family: 4 | 6; bytes: number[]; port: number };
  proxyLoopback: boolean;
}

export interface ChildResult {
  /** "ok" or the errno name connect() failed with. */
  connect: string;
  local?: string;
  peer?: string;
  /** The record the proxy's SO_ORIGINAL_DST would read, or null when there is none. */
  record?: { family: number; port: number; addr: string } | null;
  /** A socket listens on the proxy address in this (the pod's) netns. */
  proxyListening: boolean;
}

/** An address as it is stored in a tuple key: IPv4 (and v4-mapped) in the first 4 bytes. */
function keyAddr(b: number[]): Buffer {
  const out = Buffer.alloc(16);
  const mapped = b.length === 16 && (ipaddr.fromByteArray(b) as ipaddr.IPv6).isIPv4MappedAddress();
  Buffer.from(mapped ? b.slice(12) : b).copy(out);
  return out;
}

function recordFor(req: ChildRequest, local: SockAddr, cookie: bigint): ChildResult['record'] {
  const pins = new Pins(req.bpffs);
  return pins.withMaps(['mr_orig'], (maps) => {
    const v = maps.get('mr_orig')!.get({
      netns: req.proxyLoopback ? cookie : 0n,
      saddr: keyAddr(local.bytes),
      daddr: keyAddr(req.proxy.bytes),
      sport: local.port,
      dport: req.proxy.port,
      family: req.proxy.family === 4 ? AF_INET : AF_INET6,
      pad: Buffer.alloc(3),
    }) as { family: number; port: number; addr: Buffer } | undefined;
    if (!v) return null;
    const addr = [...(v.family === AF_INET ? v.addr.subarray(0, 4) : v.addr)];
    return { family: v.family, port: v.port, addr: ipaddr.fromByteArray(addr).toString() };
  });
}

export function probe(req: ChildRequest): ChildResult {
  if (req.netns) enterNetns(req.netns);
  writeFileSync(join(req.cgroupDir, 'cgroup.procs'), String(process.pid));
  // The record is read before the socket closes: closing a repair-mode socket deletes it (and sends nothing).
  const { result: r, seen: record } = repairConnect(req.dest, (open) => recordFor(req, open.local, open.netnsCookie));
  // Whether the proxy listens is read from this netns's socket table: connecting to it would make a
  // transparent proxy with no record for the connection forward it to itself.
  const proxyListening = accepts(listenersOf('/proc/self/net'), req.proxy.bytes, req.proxy.port);
  if (r.connect !== 'ok') return { connect: r.connect, proxyListening };
  return { connect: 'ok', local: r.local!.text, peer: r.peer!.text, record: record ?? null, proxyListening };
}

if (process.send) {
  process.once('message', (req: ChildRequest | DnsChildRequest) => {
    let reply: { ok: unknown } | { error: string };
    try {
      reply = { ok: 'kind' in req ? dnsProbe(req) : probe(req) };
    } catch (e) {
      reply = { error: (e as Error).message };
    }
    process.send!(reply, () => process.exit(0));
  });
}
