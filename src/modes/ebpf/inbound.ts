// inbound.ts — the eBPF mode's inbound part: mr_sklookup attached to each inbound pod's netns through a
// pinned link (inbound-links.ts), the proxy's listener taken from its process and registered in mr_in_socks
// (inbound-listeners.ts), the pod's entries written by difference (inbound-entries.ts), and what changes
// between reconciles told by the kernel (inbound-watch.ts). The programs are pinned (progs/) so that links
// can be made as pods come.
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import type { Policy } from '../../policy/schema.js';
import type { BpfObject } from '../../bpf/object.js';
import type { BpfMap } from '../../bpf/map.js';
import { pinFd } from '../../bpf/fd.js';
import type { SockKey } from '../../bpf/inbound.js';
import type { Checks } from '../checks.js';
import type { Note, VerifyRequest } from '../mode.js';
import type { MetricFamily } from '../metrics.js';
import type { Desired } from './desired.js';
import { NETNS_LINK_PREFIX, type Pins } from './pins.js';
import { planInbound, type InboundPlan } from './inbound-plan.js';
import { inboundStatus } from './inbound-status.js';
import { inboundVerify } from './inbound-verify.js';
import { SKLOOKUP, ensureLink, removeLinks, updateLinks } from './inbound-links.js';
import { af, noListener, register } from './inbound-listeners.js';
import { writeEntries, writeWatch } from './inbound-entries.js';
import { InboundWatch, emptyWatch } from './inbound-watch.js';
import type { Covered, EbpfPart, PartApply } from './part.js';

export class InboundPart implements EbpfPart<InboundPlan> {
  readonly name = 'inbound';
  readonly watch: InboundWatch;
  /** Each served pod netns's cookie (by slot, with the netns inode it was read for): mr_in_watch's keys. */
  private cookies = new Map<number, { ino: number; cookie: bigint }>();

  constructor(private readonly pins: Pins) {
    this.watch = new InboundWatch(pins);
  }

  plan(base: Desired, _policies: Policy[]): InboundPlan {
    return planInbound(base.keep, base.slots);
  }

  render(plan: InboundPlan) {
    return {
      json: {
        targets: plan.targets.map((t) => ({
          policy: t.policy,
          slot: t.slot,
          netns: `${t.netns.path} (${t.netns.id})`,
          link: this.pins.linkPin(`${NETNS_LINK_PREFIX}${t.slot}`),
          addresses: t.addresses.map((a) => a.text),
          listeners: ([4, 6] as const).map((f) => ({
            family: f,
            take: t.candidates[f][0]
              ? { pid: t.candidates[f][0].pid, fd: t.candidates[f][0].fd, inode: t.candidates[f][0].inode }
              : null,
          })),
        })),
        skipped: plan.skipped,
        conflicts: plan.conflicts,
        entries: plan.entries,
      },
      messages: [
        ...plan.skipped.map((s) => `${s.policy}: inbound not intercepted: ${s.reason}`),
        ...plan.conflicts,
        ...plan.targets.flatMap((t) =>
          t.addresses.some((a) => t.candidates[a.family].length === 0) ? [`${t.policy}: ${noListener(t)}`] : [],
        ),
      ],
    };
  }

  intact(): boolean {
    return existsSync(this.pins.progPin(SKLOOKUP));
  }

  /** Pins the freshly loaded programs and moves every netns link onto the new sk_lookup (in place). */
  loaded(obj: BpfObject): string[] {
    mkdirSync(this.pins.progsDir, { recursive: true, mode: 0o700 });
    const pin = this.pins.progPin(SKLOOKUP);
    rmSync(pin, { force: true });
    pinFd(obj.program(SKLOOKUP).fd, pin, `pin ${SKLOOKUP} at ${pin}`);
    chmodSync(pin, 0o600);
    this.watch.reset();
    return updateLinks(obj, this.pins);
  }

  apply(plan: InboundPlan): PartApply {
    const out: PartApply = { writes: 0, deletes: 0, notes: [], outcomes: new Map() };
    const note = (level: Note['level'], event: string, message: string, fields: Record<string, unknown> = {}) =>
      out.notes.push({ level, event, message, fields });
    for (const s of plan.skipped) {
      note('warn', 'inbound_skipped', `${s.policy}: inbound not intercepted: ${s.reason}`, { policy: s.policy });
      if (s.inboundOnly) out.outcomes.set(s.policy, { state: 'waiting', reason: s.reason });
    }
    for (const c of plan.conflicts) note('error', 'inbound_conflict', c);
    const targets = new Map(plan.targets.map((t) => [t.slot, t]));
    const watch = emptyWatch();

    // 1. A link per pod netns (inert until the pod's addresses are in mr_in_addrs).
    const links = new Map(this.pins.netnsLinks().map((l) => [l.slot, l]));
    for (const t of plan.targets) {
      try {
        const attached = ensureLink(this.pins, t, links.get(t.slot));
        if (attached) {
          out.writes++;
          out.notes.push(attached);
        }
        watch.links.push({ policy: t.policy, slot: t.slot });
      } catch (e) {
        note('error', 'inbound_attach_failed', `${t.policy}: ${(e as Error).message}`, { policy: t.policy });
        targets.delete(t.slot);
      }
    }

    const names = ['mr_in_socks', 'mr_in_addrs', 'mr_in_ports', 'mr_in_srcs', 'mr_in_stats', 'mr_in_watch'] as const;
    this.pins.withMaps(names, (maps) => {
      // 2. What the kernel tells the agent about, before the listeners it would tell of change.
      for (const [slot, c] of this.cookies) if (targets.get(slot)?.netns.ino !== c.ino) this.cookies.delete(slot);
      const cookies = () => new Map([...this.cookies].map(([slot, c]) => [slot, c.cookie]));
      let ww = writeWatch(maps, targets.values(), cookies());
      out.writes += ww.writes;
      out.deletes += ww.deletes;
      const socks = maps.get('mr_in_socks') as BpfMap<SockKey, bigint>;
      const storage = this.pins.openStorage('mr_in_sk');
      try {
        // 3. The proxy's listener, before the addresses that send connections to it.
        for (const t of targets.values()) {
          for (const f of [4, 6] as const) {
            if (!t.addresses.some((a) => a.family === f)) continue;
            const r = register(t, f, socks, storage);
            if (r.netnsCookie) this.cookies.set(t.slot, { ino: t.netns.ino, cookie: r.netnsCookie });
            out.writes += r.wrote ? 1 : 0;
            out.deletes += r.dropped ? 1 : 0;
            if (r.registered) watch.registered.push({ policy: t.policy, key: { slot: t.slot, family: af(f) } });
            else {
              const why = r.why.length ? ` (${r.why.join('; ')})` : '';
              note('warn', 'inbound_no_listener', `${t.policy}: ${noListener(t, f)}${why}`, {
                policy: t.policy,
                family: f,
              });
              if (t.tablePid)
                watch.missing.push({ policy: t.policy, tablePid: t.tablePid, port: t.port, tried: r.tried });
            }
          }
        }
        // A netns cookie learnt from its listener: its other listeners closing tell too.
        ww = writeWatch(maps, targets.values(), cookies());
        out.writes += ww.writes;
        out.deletes += ww.deletes;
        // 4. The entries, by difference.
        const wd = writeEntries(maps, plan, targets);
        out.writes += wd.writes;
        out.deletes += wd.deletes;
        // 5. What no policy wants any more: listeners, then links.
        for (const k of socks.keys() as SockKey[]) {
          if (targets.has(k.slot)) continue;
          socks.delete(k);
          out.deletes++;
        }
      } finally {
        storage.close();
      }
    });
    const gone = removeLinks(links, (slot) => targets.has(slot) || plan.targets.some((t) => t.slot === slot));
    out.deletes += gone.length;
    out.notes.push(...gone);
    this.watch.set(watch);
    return out;
  }

  status() {
    return inboundStatus(this.pins);
  }

  covers(slot: number): boolean {
    return existsSync(this.pins.linkPin(`${NETNS_LINK_PREFIX}${slot}`));
  }

  verify(c: Checks, cov: Covered, req: VerifyRequest): Promise<void> {
    return inboundVerify(this.pins, c, cov, req);
  }

  /** Why to reconcile now (the kernel told of a listener or netns change), or null: read each second. */
  pulse(): string | null {
    return this.watch.pulse();
  }

  metrics(): MetricFamily[] {
    return this.watch.metrics();
  }
}
