// cleanup.ts — detaches every pinned link, removes every pin and the directories (idempotent); words the report.
//
// In order: the connect hooks first (nothing new is redirected), then a bounded wait for the handshakes
// already redirected to be claimed by their proxy's socket (so none reaches the proxy without the record
// it reads), then the rest. A socket on the fast path keeps it until it closes (the kernel gives each
// socket its own hold on the sk_msg program and its maps); while such sockets exist, unless `force`, the
// setsockopt link (which refuses kTLS on them) and the maps they use stay pinned, so that they keep that
// guard and a restarted agent re-adopts the same maps; another cleanup once they have closed removes the
// rest. DNS capture likewise: its sendmsg hooks go right after the connect hooks (nothing new is
// captured), and while captured connected UDP sockets are open (c-ares keeps one per nameserver for
// long) their replies still come from the DNS proxy: unless `force`, the hooks that show those replies as
// from the nameserver (recvmsg, getpeername) and delete their entries (sock_release) stay, with
// mr_dns_socks. The rest is detached in reverse attach order.
import { existsSync, readdirSync, rmSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { Link } from '../../bpf/link.js';
import { BpfError } from '../../bpf/errors.js';
import { DnsSockFlag, PROGRAMS, REDIRECTING, type ProgramName } from '../../bpf/abi.js';
import type { BpfMap } from '../../bpf/map.js';
import { pending } from './counters.js';
import type { Pins } from './pins.js';
import type { CleanupReport, Note } from '../mode.js';

export interface EbpfCleanup {
  detached: string[];
  unpinned: string[];
  kept: string[];
  openAccelerated: number;
  undrained: number;
  /** Captured connected UDP sockets open when DNS capture was removed (their replies still need relabelling). */
  openDnsConnected: number;
}

/** What the fast path's open sockets still use: their kTLS guard and their maps. */
const FAST_PATH_LINKS = ['mr_setsockopt'];
const FAST_PATH_MAPS = ['mr_sockhash', 'mr_sk', 'mr_fast', 'mr_peers', 'mr_stats'];
/** What captured connected UDP sockets still use: their replies relabelled, their peer named, their entry
 * deleted when they close. */
const DNS_KEEP_LINKS = ['mr_dns_recv4', 'mr_dns_recv6', 'mr_getpeername4', 'mr_getpeername6', 'mr_dns_release'];
const DNS_KEEP_MAPS = ['mr_dns_socks', 'mr_dns_stats'];

/** Captured connected UDP sockets open now (mr_dns_socks entries with a captured connect). */
function dnsConnected(pins: Pins): number {
  if (!pins.has('mr_dns_socks')) return 0;
  return pins.withMaps(
    ['mr_dns_socks'],
    (m) =>
      (m.get('mr_dns_socks')! as BpfMap<bigint, { flags: number }>)
        .entries()
        .filter(([, v]) => v.flags & DnsSockFlag.CONNECTED && !(v.flags & DnsSockFlag.TCP)).length,
  );
}

export function cleanupPins(pins: Pins, opts: { force?: boolean; drainMs?: number } = {}): EbpfCleanup {
  const out: EbpfCleanup = {
    detached: [],
    unpinned: [],
    kept: [],
    openAccelerated: 0,
    undrained: 0,
    openDnsConnected: 0,
  };
  const detach = (name: string) => {
    const pin = pins.linkPin(name);
    if (!existsSync(pin)) return;
    try {
      const l = Link.open(pin);
      try {
        l.detach();
        out.detached.push(name);
      } finally {
        l.close();
      }
    } catch (e) {
      // A pin that is not a link (or already defunct) is still ours to remove.
      if (!(e instanceof BpfError)) throw e;
    }
    rmSync(pin, { force: true });
    out.unpinned.push(pin);
  };
  for (const name of REDIRECTING) detach(name);
  for (const name of ['mr_dns_send4', 'mr_dns_send6']) detach(name);
  // Counted once nothing new can be captured (connect4/6 and sendmsg are detached).
  out.openDnsConnected = dnsConnected(pins);
  const keepDns = out.openDnsConnected > 0 && !opts.force;
  if (pins.has('mr_gauges')) {
    const end = Date.now() + (opts.drainMs ?? 5000);
    // A synchronous wait (cleanup is a last step, and callers are synchronous): Atomics.wait sleeps.
    const nap = new Int32Array(new SharedArrayBuffer(4));
    while ((out.undrained = pending(pins).pending) > 0 && Date.now() < end) Atomics.wait(nap, 0, 0, 50);
  }
  if (existsSync(pins.linksDir)) {
    // Ours in reverse attach order, then anything else (the inbound part's netns links).
    const order = (Object.keys(PROGRAMS) as ProgramName[]).reverse() as string[];
    const names = readdirSync(pins.linksDir).sort(
      (a, b) => (order.indexOf(a) + 1 || order.length + 1) - (order.indexOf(b) + 1 || order.length + 1),
    );
    for (const name of names) {
      if (FAST_PATH_LINKS.includes(name)) continue;
      if (keepDns && DNS_KEEP_LINKS.includes(name)) {
        out.kept.push(pins.linkPin(name));
        continue;
      }
      detach(name);
    }
  }
  // Counted once nothing can join the fast path any more (sockops is detached).
  out.openAccelerated = pins.acceleratedSockets();
  const keep = new Set<string>([
    ...(out.openAccelerated > 0 && !opts.force
      ? [...FAST_PATH_LINKS.map((l) => pins.linkPin(l)), ...FAST_PATH_MAPS.map((m) => pins.mapPin(m))]
      : []),
    ...(keepDns ? [...DNS_KEEP_LINKS.map((l) => pins.linkPin(l)), ...DNS_KEEP_MAPS.map((m) => pins.mapPin(m))] : []),
  ]);
  for (const name of FAST_PATH_LINKS) {
    if (!existsSync(pins.linkPin(name))) continue;
    if (keep.has(pins.linkPin(name))) out.kept.push(pins.linkPin(name));
    else detach(name);
  }
  if (existsSync(pins.mapsDir)) {
    for (const name of readdirSync(pins.mapsDir)) {
      const pin = pins.mapPin(name);
      if (keep.has(pin)) {
        out.kept.push(pin);
        continue;
      }
      rmSync(pin, { force: true });
      out.unpinned.push(pin);
    }
  }
  // Programs pinned to attach later (the inbound part's): nothing runs them once their links are gone.
  if (existsSync(pins.progsDir)) {
    for (const name of readdirSync(pins.progsDir)) {
      const pin = pins.progPin(name);
      rmSync(pin, { force: true });
      out.unpinned.push(pin);
    }
  }
  const dirs = [pins.linksDir, pins.mapsDir, pins.progsDir, pins.bpffs];
  for (const d of dirs) {
    try {
      if (existsSync(d) && statSync(d).isDirectory() && readdirSync(d).length === 0) rmdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOTEMPTY') throw e;
    }
  }
  const foreign = dirs.filter(
    (d) =>
      existsSync(d) &&
      readdirSync(d).some((n) => !keep.has(join(d, n)) && n !== 'links' && n !== 'maps' && n !== 'progs'),
  );
  if (foreign.length) throw new Error(`${foreign.join(', ')} hold files meshredir did not make; left in place`);
  return out;
}

/** What a cleanup did, kept and could not drain, in the words `meshredir cleanup` prints. */
export function cleanupReport(r: EbpfCleanup, bpffs: string): CleanupReport {
  const dnsKept = r.kept.filter((k) => /\/(mr_dns_|mr_getpeername)/.test(k));
  const fastKept = r.kept.filter((k) => !dnsKept.includes(k));
  const kept = [
    ...(fastKept.length
      ? [
          `kept ${fastKept.join(', ')} for ${r.openAccelerated} socket(s) still on the fast path: the kernel keeps their fast path until they close, and these pins keep refusing kTLS on them. ` +
            'Redirection has stopped; run cleanup again once they have closed, or use --force (they then keep the fast path, without the kTLS guard).',
        ]
      : []),
    ...(dnsKept.length
      ? [
          `kept ${dnsKept.join(', ')} for ${r.openDnsConnected} captured DNS socket(s) still connected to the DNS proxy: their replies are still shown as from the nameserver, and their entries go when they close. ` +
            'Nothing new is captured; run cleanup again once they have closed, or use --force (a resolver that checks the source, such as c-ares, then drops their replies until it opens new sockets).',
        ]
      : []),
  ];
  const notes: Note[] =
    r.undrained > 0
      ? [
          {
            level: 'warn',
            event: 'undrained',
            message: `${r.undrained} redirected handshake(s) were still in flight after 5 s: their proxy may not find their original destination`,
          },
        ]
      : [];
  const removed =
    r.detached.length || r.unpinned.length
      ? [`detached ${r.detached.length} link(s), removed ${r.unpinned.length} pin(s) under ${bpffs}`]
      : [];
  return { mode: 'ebpf', removed, kept, failed: [], notes, json: { ...r } };
}
