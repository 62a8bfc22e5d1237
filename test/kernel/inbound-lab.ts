// inbound-lab.ts — the minimal loader the inbound kernel tests drive mr_sklookup with: what the agent's
// eBPF inbound part will do, without the agent. Loads the object, attaches per netns (pinned links),
// writes a pod's entries, takes an unmodified proxy's listener and registers it, reads counters, and
// removes everything it made (also after a failure).
import { mkdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { BpfObject } from '../../src/bpf/object.js';
import { Link } from '../../src/bpf/link.js';
import { BpfMap } from '../../src/bpf/map.js';
import { INBOUND_MAPS, IN_STAT_FIELDS, STRUCT_CODECS, u32, inStatsValue, type InStatName } from '../../src/bpf/abi.js';
import { inboundEntries, type InboundSpec } from '../../src/policy/inbound.js';
import { registerListener, inSkMap, inSocksMap, runSkLookup, type Lookup } from '../../src/bpf/inbound.js';
import { findListeners, socketFacts, takeFd, type SocketFacts } from '../../src/bpf/listeners.js';
import { c } from '../../src/sys/libbpf.js';
import { OBJECT } from './harness.js';

type Entry<K, V> = [K, V];

export class InboundLab {
  readonly obj: BpfObject;
  readonly pinDir: string;
  private netnsLinks = new Map<string, string>(); // netns name → pin
  private cgLinks: string[] = [];
  readonly addrs;
  readonly ports;
  readonly srcs;
  readonly socks;
  readonly stats;
  readonly storage;

  constructor(pinDir: string) {
    this.pinDir = pinDir;
    this.obj = BpfObject.open(OBJECT);
    try {
      const drift = this.obj.checkAbi(STRUCT_CODECS);
      if (drift.length) throw new Error(`object does not match src/bpf/abi.ts: ${drift.join('; ')}`);
      this.obj.load();
      mkdirSync(pinDir, { recursive: true, mode: 0o700 });
      this.addrs = this.obj.map('mr_in_addrs', INBOUND_MAPS.mr_in_addrs.key, INBOUND_MAPS.mr_in_addrs.value);
      this.ports = this.obj.map('mr_in_ports', INBOUND_MAPS.mr_in_ports.key, INBOUND_MAPS.mr_in_ports.value);
      this.srcs = this.obj.map('mr_in_srcs', INBOUND_MAPS.mr_in_srcs.key, INBOUND_MAPS.mr_in_srcs.value);
      this.socks = this.obj.map('mr_in_socks', inSocksMap.key, inSocksMap.value);
      this.stats = this.obj.map('mr_in_stats', u32, inStatsValue);
      this.storage = this.obj.map('mr_in_sk', inSkMap.key, inSkMap.value);
    } catch (e) {
      this.obj.close();
      throw e;
    }
  }

  get progFd(): number {
    return this.obj.program('mr_sklookup').fd;
  }

  /** Attaches mr_sklookup to netns `ns` (ip netns name) through a pinned link; returns the link's id. */
  attach(ns: string): number {
    const pin = join(this.pinDir, `sklookup-${ns}`);
    const link = Link.attachNetns(this.obj.program('mr_sklookup'), `/run/netns/${ns}`);
    try {
      link.pin(pin);
      this.netnsLinks.set(ns, pin);
      return link.info().id;
    } finally {
      link.close(); // the pin keeps it attached; an unpinned one is detached by this close
    }
  }

  /** mr_getsockopt (outbound's) then mr_in_origdst, at a test cgroup: the order the agent would use. */
  attachOrigdst(cgroupDir: string): void {
    for (const name of ['mr_getsockopt', 'mr_in_origdst']) {
      const pin = join(this.pinDir, `cg-${name}`);
      const link = Link.attachCgroup(this.obj.program(name), cgroupDir);
      try {
        link.pin(pin);
      } finally {
        link.close();
      }
      this.cgLinks.push(pin);
    }
  }

  /** Replaces the entries with those of `specs`. */
  apply(specs: InboundSpec[]): string[] {
    const { entries, conflicts } = inboundEntries(specs);
    for (const m of [this.addrs, this.ports, this.srcs] as BpfMap<unknown, unknown>[]) m.deleteManyRaw(m.rawKeys());
    const put = <K, V>(m: BpfMap<K, V>, list: Entry<K, V>[]) => {
      for (const [k, v] of list) m.set(k, v);
    };
    put(this.addrs, entries.mr_in_addrs);
    put(this.ports, entries.mr_in_ports);
    put(this.srcs, entries.mr_in_srcs);
    return conflicts;
  }

  /** Takes fd `fd` of `pid`, checks it is a TCP listener in netns `ns`, registers it, closes the copy. */
  register(slot: number, pid: number, fd: number, families: (4 | 6)[], ns: string): SocketFacts {
    const copy = takeFd(pid, fd);
    try {
      const facts = socketFacts(copy);
      const st = statSync(`/run/netns/${ns}`, { bigint: true });
      if (facts.netnsId !== `${st.dev}:${st.ino}`)
        throw new Error(
          `fd ${fd} of pid ${pid} lives in netns ${facts.netnsId}, not in ${ns}: sk_lookup cannot use it`,
        );
      if (!facts.listening || !facts.tcp) throw new Error(`fd ${fd} of pid ${pid} is not a listening TCP socket`);
      registerListener(this.socks, this.storage, slot, families, copy);
      return facts;
    } finally {
      c.close(copy);
    }
  }

  /** Finds the listener on `port` (the pod netns's table, read through `tablePid`) held by `ownerPid`. */
  registerFound(o: { slot: number; tablePid: number; ownerPid: number; port: number; family: 4 | 6; ns: string }) {
    const found = findListeners({ tablePid: o.tablePid, ownerPids: [o.ownerPid], port: o.port }).filter(
      (l) => l.family === o.family,
    );
    if (found.length !== 1)
      throw new Error(
        `want one IPv${o.family} listener on port ${o.port} of pid ${o.ownerPid}: ${JSON.stringify(found)}`,
      );
    return this.register(o.slot, found[0]!.pid, found[0]!.fd, [o.family], o.ns);
  }

  counters(slot: number): Record<InStatName, number> {
    const per = this.stats.getPerCpu(slot) ?? [];
    return Object.fromEntries(IN_STAT_FIELDS.map((f) => [f, per.reduce((n, v) => n + Number(v[f]), 0)])) as Record<
      InStatName,
      number
    >;
  }

  lookup(l: Lookup) {
    return runSkLookup(this.progFd, l);
  }

  linkInfo(ns: string) {
    const l = Link.open(this.netnsLinks.get(ns)!);
    try {
      return l.info();
    } finally {
      l.close();
    }
  }

  /** Detaches and unpins one netns's link. */
  detach(ns: string): void {
    const pin = this.netnsLinks.get(ns);
    if (!pin) return;
    const l = Link.open(pin);
    try {
      l.detach();
      l.unpin();
    } finally {
      l.close();
    }
    this.netnsLinks.delete(ns);
  }

  close(): void {
    for (const ns of [...this.netnsLinks.keys()]) this.detach(ns);
    for (const pin of this.cgLinks) {
      const l = Link.open(pin);
      try {
        l.detach();
        l.unpin();
      } finally {
        l.close();
      }
    }
    this.cgLinks = [];
    this.obj.close();
    rmSync(this.pinDir, { recursive: true, force: true });
  }
}
