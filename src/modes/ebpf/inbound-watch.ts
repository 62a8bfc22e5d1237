// inbound-watch.ts — how the agent learns between reconciles that a proxy's listener closed or came back:
// the kernel tells it that a listener appeared (bpf/mr_inwatch.h: sockops' listen callback writes
// mr_in_ring), so no pod's socket table is read each second. That a listener closed, the ring tells only
// while mr_dns_release runs (sock_release, attached only while DNS capture needs it: release.ts); so each
// second the watch also looks at what a close changes — each registered listener's mr_in_socks entry (the
// kernel removes it as the socket closes) and each netns link — a few syscalls per served policy, instead of
// a program on every socket close of the host. Where sockops is not attached, the whole scan instead.
import type { BpfMap } from '../../bpf/map.js';
import { Link } from '../../bpf/link.js';
import { BpfError } from '../../bpf/errors.js';
import { closeFd, openPinned } from '../../bpf/fd.js';
import { IN_RING, InEvent, inEvent } from '../../bpf/abi.js';
import type { SockKey } from '../../bpf/inbound.js';
import { tableListeners } from '../../bpf/listeners.js';
import { errno, ringBuffer } from '../../sys/libbpf.js';
import { Families, type FamilyDef, type MetricFamily } from '../metrics.js';
import { NETNS_LINK_PREFIX, type Pins } from './pins.js';
import type { InboundTarget } from './inbound-plan.js';

/** The hook that tells (attached at the cgroup root with the rest). */
const TELLERS = ['mr_sockops'];
const KIND: Record<number, 'listen' | 'close'> = { [InEvent.LISTEN]: 'listen', [InEvent.CLOSE]: 'close' };

/** What a reconcile leaves to watch (set by each apply). */
export interface Watch {
  /** Registered listeners: gone from the sockhash when their socket closes (the proxy exited). */
  registered: { policy: string; key: SockKey }[];
  /** Links: defunct when their netns is destroyed. */
  links: { policy: string; slot: number }[];
  /** Families without a listener, and the listener inodes apply could not use (no retry for those). */
  missing: { policy: string; tablePid: number; port: number; tried: Set<number> }[];
}
export const emptyWatch = (): Watch => ({ registered: [], links: [], missing: [] });

const WATCH_KERNEL: FamilyDef = {
  name: 'meshredir_inbound_watch_kernel',
  type: 'gauge',
  help: "Whether the kernel tells the agent when an inbound proxy's listener opens (1: closes are then looked up each second in mr_in_socks and the netns links, or told too while DNS capture's sock_release is attached), or the agent scans each second (0); absent while no inbound policy is served.",
  labelNames: [],
};
const PULSES: FamilyDef = {
  name: 'meshredir_inbound_watch_pulses_total',
  type: 'counter',
  help: 'Times the agent looked for a change of the inbound listeners between reconciles (each second while an inbound policy is served): a read of the ring the kernel writes, or a scan where it cannot.',
  labelNames: [],
};
const SCANS: FamilyDef = {
  name: 'meshredir_inbound_scans_total',
  type: 'counter',
  help: "Scans of the inbound policies' listeners, links and pod socket tables between reconciles: once when the agent starts reading the kernel's notifications, each second where it cannot.",
  labelNames: [],
};
const EVENTS: FamilyDef = {
  name: 'meshredir_inbound_watch_events_total',
  type: 'counter',
  help: 'Kernel notifications of a listener opened (kind listen) or closed (kind close) on an inbound proxy port or in a pod netns.',
  labelNames: ['kind'],
};
const CLOSES_FOUND: FamilyDef = {
  name: 'meshredir_inbound_watch_closes_found_total',
  type: 'counter',
  help: "Closes the agent found while the kernel tells it of listeners (a registered listener gone from mr_in_socks, a netns link defunct), by its per-second lookup: each starts a reconcile. The kernel tells closes itself only while DNS capture's sock_release is attached.",
  labelNames: [],
};
export const INBOUND_WATCH_FAMILIES: readonly FamilyDef[] = [WATCH_KERNEL, PULSES, SCANS, EVENTS, CLOSES_FOUND];

export class InboundWatch {
  private watch = emptyWatch();
  /** Set when a scan asked for a reconcile; cleared by the next apply (one ask per apply). */
  private asked = false;
  private kernel: { ringFd: number; ring: NonNullable<ReturnType<typeof ringBuffer>> } | null = null;
  /** Why the kernel cannot tell us (then we scan); null while it can, or before the first try. */
  private unavailable: string | null = null;
  readonly counts = { pulses: 0, scans: 0, listen: 0, close: 0, closesFound: 0 };

  constructor(private readonly pins: Pins) {}

  /** What to watch from now; the kernel's entries (mr_in_watch) are written by apply, before the listeners. */
  set(w: Watch): void {
    this.watch = w;
    this.asked = false;
  }

  /** The programs were loaded anew (the ring may be another map): open it again at the next pulse. */
  reset(): void {
    this.close();
    this.unavailable = null;
  }

  close(): void {
    if (!this.kernel) return;
    this.kernel.ring.free();
    closeFd(this.kernel.ringFd);
    this.kernel = null;
  }

  /** Called each second by the agent: why to reconcile now, or null. */
  pulse(): string | null {
    if (!this.watch.links.length) {
      this.close(); // nothing inbound served: nothing to watch
      return null;
    }
    this.counts.pulses++;
    if (!this.kernel && this.unavailable === null) {
      try {
        this.start();
      } catch (e) {
        this.unavailable = (e as Error).message;
      }
      // What changed before the ring was open is in it, or (an earlier agent's records) was read by no one:
      // one scan covers it.
      if (this.kernel) return this.scan();
    }
    if (this.kernel) return this.read() ?? (this.asked ? null : this.closed());
    return this.asked ? null : this.scan();
  }

  /** Why the kernel cannot tell (the agent scans each second then); null when it can, or not tried yet. */
  get scanning(): string | null {
    return this.unavailable;
  }

  /** Opens the ring when the hooks that write it are attached. */
  private start(): void {
    const links = new Map(this.pins.links().map((l) => [l.name, l]));
    const off = TELLERS.filter((n) => !links.get(n)?.attached);
    if (off.length) throw new Error(`${off.join(', ')} not attached`);
    const ringFd = openPinned(this.pins.mapPin(IN_RING), `open ${IN_RING}`);
    const ring = ringBuffer(ringFd, (data) => this.pending.push(inEvent.decode(data)));
    if (!ring) {
      closeFd(ringFd);
      throw new BpfError(`read ${IN_RING}`, 'ring_buffer__new', -errno());
    }
    this.kernel = { ringFd, ring };
    ring.consume();
    this.pending = [];
  }
  private pending: ReturnType<typeof inEvent.decode>[] = [];

  /** The ring's new records (a read of shared memory, no system call when there are none). */
  private read(): string | null {
    const r = this.kernel!.ring.consume();
    if (r < 0) throw new BpfError(`read ${IN_RING}`, 'ring_buffer__consume', r);
    const events = this.pending.splice(0);
    const why = new Set<string>();
    for (const e of events) {
      const kind = KIND[e.kind];
      if (!kind) continue;
      this.counts[kind]++;
      const policy = this.watch.links.find((l) => l.slot === e.slot)?.policy ?? `slot ${e.slot}`;
      why.add(
        kind === 'listen'
          ? `a listener on port ${e.port} appeared for ${policy}`
          : `a listener closed in the netns of ${policy}`,
      );
    }
    return why.size ? [...why].join('; ') : null;
  }

  /** The scan the kernel's notifications replace: each registered listener, each link, each missing one. */
  private scan(): string | null {
    this.counts.scans++;
    const why = this.look();
    if (why) this.asked = true;
    return why;
  }

  /** What a listener's close or a netns's end changes (the ring does not tell closes without sock_release). */
  private closed(): string | null {
    const why = this.lookClosed();
    if (why) {
      this.asked = true;
      this.counts.closesFound++;
    }
    return why;
  }

  private look(): string | null {
    return this.lookClosed() ?? this.lookMissing();
  }

  private lookClosed(): string | null {
    const w = this.watch;
    if (w.registered.length && this.pins.has('mr_in_socks')) {
      const gone = this.pins.withMaps(['mr_in_socks'], (m) => {
        const socks = m.get('mr_in_socks') as BpfMap<SockKey, bigint>;
        return w.registered.find((r) => socks.get(r.key) === undefined);
      });
      if (gone) return `inbound listener of ${gone.policy} closed`;
    }
    for (const l of w.links) {
      let ino = 0;
      try {
        const link = Link.open(this.pins.linkPin(`${NETNS_LINK_PREFIX}${l.slot}`));
        try {
          ino = link.info().netnsIno ?? 0;
        } finally {
          link.close();
        }
      } catch (e) {
        if (!(e instanceof BpfError)) throw e;
        return `inbound link of ${l.policy} gone`;
      }
      if (ino === 0) return `netns of ${l.policy} gone`;
    }
    return null;
  }

  private lookMissing(): string | null {
    for (const m of this.watch.missing) {
      if (tableListeners(m.tablePid).some((x) => x.port === m.port && !m.tried.has(x.inode)))
        return `a listener on port ${m.port} appeared for ${m.policy}`;
    }
    return null;
  }

  metrics(): MetricFamily[] {
    const out = new Families();
    if (!this.watch.links.length) return out.list();
    out.add(WATCH_KERNEL, {}, this.kernel ? 1 : 0);
    out.add(PULSES, {}, this.counts.pulses);
    out.add(SCANS, {}, this.counts.scans);
    for (const k of ['listen', 'close'] as const) out.add(EVENTS, { kind: k }, this.counts[k]);
    if (this.kernel) out.add(CLOSES_FOUND, {}, this.counts.closesFound);
    return out.list();
  }
}

type WatchKey = { netns: bigint; port: number; pad: number };

/**
 * mr_in_watch's entries for these targets: the proxy's port (in any netns: a new pod's cookie is not known
 * before its first listener), and the pod netns by cookie where one was read (any listener of the pod
 * closing, the app's too, tells that the pod may be going).
 */
export function watchEntries(targets: Iterable<InboundTarget>, cookies: Map<number, bigint>): [WatchKey, number][] {
  const out = new Map<string, [WatchKey, number]>();
  for (const t of targets) {
    out.set(`p${t.port}`, [{ netns: 0n, port: t.port, pad: 0 }, t.slot]);
    const c = cookies.get(t.slot);
    if (c) out.set(`n${c}`, [{ netns: c, port: 0, pad: 0 }, t.slot]);
  }
  return [...out.values()];
}
