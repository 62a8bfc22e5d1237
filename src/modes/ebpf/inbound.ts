// inbound.ts — the eBPF mode's inbound part: mr_sklookup attached to each inbound pod's netns through a
// pinned link (links/sklookup-<slot>; re-adopted after a restart, replaced when the pod's netns changed,
// removed with the pod), the proxy's listener taken from its process (pidfd_getfd), checked and registered
// in mr_in_socks (the copy closed at once: a dead proxy leaves no live listener), and the pod's entries
// written by difference. The program is pinned (progs/mr_sklookup) so links can be made as pods come.
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import type { Policy } from '../../policy/schema.js';
import type { BpfObject } from '../../bpf/object.js';
import type { BpfMap } from '../../bpf/map.js';
import { Link } from '../../bpf/link.js';
import { BpfError } from '../../bpf/errors.js';
import { closeFd, openPinned, pinFd } from '../../bpf/fd.js';
import { progInfoById, progInfoByFd, progMapsById, progMapsByFd } from '../../bpf/prog.js';
import { AF_INET, AF_INET6, IN_STAT_FIELDS, type InStatName } from '../../bpf/abi.js';
import { registerListener, type SockKey } from '../../bpf/inbound.js';
import { socketFacts, tableListeners, takeFd } from '../../bpf/listeners.js';
import { NetnsHandle } from '../netns.js';
import type { Checks } from '../checks.js';
import type { Note, VerifyRequest } from '../mode.js';
import type { Desired } from './desired.js';
import { NETNS_LINK_PREFIX, type AnyMapName, type Pins } from './pins.js';
import { planInbound, type InboundPlan, type InboundTarget } from './inbound-plan.js';
import { inboundStatus } from './inbound-status.js';
import { inboundVerify } from './inbound-verify.js';
import type { Covered, EbpfPart, PartApply } from './part.js';

const PROG = 'mr_sklookup';
/** Policy entries, written before the addresses that point at them; removed in reverse. */
const ORDER: AnyMapName[] = ['mr_in_ports', 'mr_in_srcs', 'mr_in_addrs'];
const af = (f: 4 | 6) => (f === 4 ? AF_INET : AF_INET6);

/** What the pulse watches between reconciles (set by each apply). */
interface Watch {
  /** Registered listeners: gone from the sockhash when their socket closes (the proxy exited). */
  registered: { policy: string; key: SockKey }[];
  /** Links: defunct when their netns is destroyed. */
  links: { policy: string; slot: number }[];
  /** Families without a listener, and the listener inodes apply could not use (no retry for those). */
  missing: { policy: string; tablePid: number; port: number; tried: Set<number> }[];
}

export class InboundPart implements EbpfPart<InboundPlan> {
  readonly name = 'inbound';
  private watch: Watch = { registered: [], links: [], missing: [] };
  /** Set when the pulse asked for a reconcile; cleared by the next apply (one ask per apply). */
  private asked = false;

  constructor(private readonly pins: Pins) {}

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
    return existsSync(this.pins.progPin(PROG));
  }

  /** Pins the freshly loaded sk_lookup program and moves every netns link onto it (atomically, in place). */
  loaded(obj: BpfObject): string[] {
    const prog = obj.program(PROG);
    mkdirSync(this.pins.progsDir, { recursive: true, mode: 0o700 });
    const pin = this.pins.progPin(PROG);
    rmSync(pin, { force: true });
    pinFd(prog.fd, pin, `pin ${PROG} at ${pin}`);
    chmodSync(pin, 0o600);
    const tag = progInfoByFd(prog.fd, PROG).tag;
    // The tag hashes the instructions only: the same program bound to other maps (pins lost, maps made
    // anew) has the same tag, so the maps are compared too.
    const maps = JSON.stringify([...progMapsByFd(prog.fd, PROG)].filter(([n]) => n.startsWith('mr_')).sort());
    const updated: string[] = [];
    for (const l of this.pins.netnsLinks()) {
      if (!l.attached || l.progId === undefined) continue; // defunct: the next apply removes it
      const cur = [...(progMapsById(l.progId) ?? [])].filter(([n]) => n.startsWith('mr_')).sort();
      if (progInfoById(l.progId)?.tag === tag && JSON.stringify(cur) === maps) continue;
      const link = Link.open(l.pin);
      try {
        link.update(prog);
        updated.push(l.name);
      } finally {
        link.close();
      }
    }
    return updated;
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
    const watch: Watch = { registered: [], links: [], missing: [] };

    // 1. A link per pod netns (inert until the pod's addresses are in mr_in_addrs).
    const links = new Map(this.pins.netnsLinks().map((l) => [l.slot, l]));
    for (const t of plan.targets) {
      try {
        if (this.link(t, links.get(t.slot), out)) watch.links.push({ policy: t.policy, slot: t.slot });
      } catch (e) {
        note('error', 'inbound_attach_failed', `${t.policy}: ${(e as Error).message}`, { policy: t.policy });
        targets.delete(t.slot);
      }
    }

    this.pins.withMaps(['mr_in_socks', 'mr_in_addrs', 'mr_in_ports', 'mr_in_srcs', 'mr_in_stats'], (maps) => {
      const socks = maps.get('mr_in_socks') as BpfMap<SockKey, bigint>;
      const storage = this.pins.openStorage('mr_in_sk');
      try {
        // 2. The proxy's listener, before the addresses that send connections to it.
        for (const t of targets.values()) {
          for (const f of [4, 6] as const) {
            if (!t.addresses.some((a) => a.family === f)) continue;
            const r = register(t, f, socks, storage);
            out.writes += r.wrote ? 1 : 0;
            out.deletes += r.dropped ? 1 : 0;
            if (r.registered) watch.registered.push({ policy: t.policy, key: { slot: t.slot, family: af(f) } });
            else {
              note(
                'warn',
                'inbound_no_listener',
                `${t.policy}: ${noListener(t, f)}${r.why.length ? ` (${r.why.join('; ')})` : ''}`,
                {
                  policy: t.policy,
                  family: f,
                },
              );
              if (t.tablePid)
                watch.missing.push({ policy: t.policy, tablePid: t.tablePid, port: t.port, tried: r.tried });
            }
          }
        }
        // 3. The entries, by difference.
        const wd = writeByDifference(maps, plan, targets);
        out.writes += wd.writes;
        out.deletes += wd.deletes;
        // 4. What no policy wants any more: listeners, then links.
        for (const k of socks.keys() as SockKey[]) {
          if (targets.has(k.slot)) continue;
          socks.delete(k);
          out.deletes++;
        }
      } finally {
        storage.close();
      }
    });
    for (const [slot, l] of links) {
      if (targets.has(slot) || plan.targets.some((t) => t.slot === slot)) continue;
      detach(l.pin);
      out.deletes++;
      note(
        'info',
        'inbound_detached',
        `inbound link ${l.name} removed (${l.attached ? 'no policy wants it' : 'its netns is gone'})`,
        {
          link: l.name,
        },
      );
    }
    this.watch = watch;
    this.asked = false;
    return out;
  }

  /** Makes `t`'s link exist on its netns; true when it is in place. A new slot's counters start at zero. */
  private link(t: InboundTarget, cur: ReturnType<Pins['netnsLinks']>[number] | undefined, out: PartApply): boolean {
    if (cur?.attached && cur.netnsIno === t.netns.ino) return true;
    if (cur)
      detach(cur.pin); // defunct (netns gone) or on another netns (the pod was re-created)
    else zeroCounters(this.pins, t.slot);
    const progFd = openPinned(this.pins.progPin(PROG), `open pinned ${PROG}`);
    try {
      const ns = NetnsHandle.open(t.netns.path, t.netns.id);
      try {
        const pin = this.pins.linkPin(`${NETNS_LINK_PREFIX}${t.slot}`);
        Link.attachNetnsPinned(progFd, ns.fd, pin, t.netns.path);
        chmodSync(pin, 0o600);
      } finally {
        ns.close();
      }
    } finally {
      closeFd(progFd);
    }
    out.writes++;
    out.notes.push({
      level: 'info',
      event: 'inbound_attached',
      message: `${t.policy}: mr_sklookup attached to netns ${t.netns.path} (${t.netns.id})${cur ? ', replacing the link of its previous netns' : ''}`,
      fields: { policy: t.policy, netns: t.netns.id },
    });
    return true;
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

  pulse(): string | null {
    if (this.asked) return null;
    const why = this.look();
    if (why) this.asked = true;
    return why;
  }

  private look(): string | null {
    const w = this.watch;
    if (w.registered.length && this.pins.has('mr_in_socks')) {
      const gone = this.pins.withMaps(['mr_in_socks'], (m) => {
        const socks = m.get('mr_in_socks') as BpfMap<SockKey, bigint>;
        return w.registered.find((r) => socks.get(r.key) === undefined);
      });
      if (gone) return `inbound listener of ${gone.policy} closed`;
    }
    for (const l of w.links) {
      // One link's info (its netns inode: 0 once the netns is gone), not every link's, every second.
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
    for (const m of w.missing) {
      if (tableListeners(m.tablePid).some((x) => x.port === m.port && !m.tried.has(x.inode)))
        return `a listener on port ${m.port} appeared for ${m.policy}`;
    }
    return null;
  }
}

function noListener(t: InboundTarget, family?: 4 | 6): string {
  const where = t.listenAddress
    ? `the listener ${t.listenAddress.bytes.join('.')}:${t.port}`
    : `a listener on port ${t.port}`;
  const fam = family ? `IPv${family}: ` : '';
  return `${fam}no ${where.replace(/^a /, '')} in netns ${t.netns.path} held by a process of the policy's cgroups or bypass cgroups: inbound connections are ${t.spec.whenNoProxy === 'pass' ? 'passed to the app' : 'refused'} (whenNoProxy ${t.spec.whenNoProxy})`;
}

/** Takes and checks the family's best listener; registers it unless it already is. */
function register(
  t: InboundTarget,
  f: 4 | 6,
  socks: BpfMap<SockKey, bigint>,
  storage: BpfMap<number, { slot: number; flags: number }>,
): { registered: boolean; wrote: boolean; dropped: boolean; why: string[]; tried: Set<number> } {
  const key = { slot: t.slot, family: af(f) };
  const cur = socks.get(key);
  const why: string[] = [];
  const tried = new Set<number>();
  for (const l of t.candidates[f]) {
    tried.add(l.inode);
    let fd: number;
    try {
      fd = takeFd(l.pid, l.fd);
    } catch (e) {
      why.push((e as Error).message);
      continue;
    }
    try {
      const s = socketFacts(fd);
      const fits = f === 4 ? s.family === 4 || (s.family === 6 && !s.v6only) : s.family === 6;
      if (!s.tcp || !s.listening) why.push(`pid ${l.pid} fd ${l.fd} is not a listening TCP socket`);
      else if (s.netnsId !== t.netns.id)
        why.push(
          `pid ${l.pid} fd ${l.fd} lives in netns ${s.netnsId}, not the pod's: sk_lookup cannot hand it connections`,
        );
      else if (!fits) why.push(`pid ${l.pid} fd ${l.fd} is IPv6-only`);
      else if (cur === s.cookie) return { registered: true, wrote: false, dropped: false, why, tried };
      else {
        registerListener(socks, storage, t.slot, [f], fd);
        return { registered: true, wrote: true, dropped: false, why, tried };
      }
    } finally {
      closeFd(fd);
    }
  }
  // Nothing the policy names listens: an older socket (a port changed) must not keep taking connections.
  const dropped = cur !== undefined && socks.delete(key);
  return { registered: false, wrote: false, dropped, why, tried };
}

function writeByDifference(
  maps: Map<AnyMapName, BpfMap<unknown, unknown>>,
  plan: InboundPlan,
  targets: Map<number, InboundTarget>,
): { writes: number; deletes: number } {
  let writes = 0;
  let deletes = 0;
  const stale: [BpfMap<unknown, unknown>, Buffer[]][] = [];
  for (const name of ORDER) {
    const map = maps.get(name)!;
    const list = plan.entries[name as keyof typeof plan.entries] as [{ slot?: number }, unknown][];
    const want = new Map<string, [Buffer, Buffer]>();
    for (const [k, v] of list) {
      // A target whose link failed keeps nothing (no link: its entries would never be looked up anyway).
      const slot = name === 'mr_in_addrs' ? (v as { slot: number }).slot : k.slot!;
      if (!targets.has(slot)) continue;
      const kb = map.key.encode(k, Buffer.alloc(map.key.size));
      want.set(kb.toString('hex'), [kb, map.value.encode(v, Buffer.alloc(map.value.size))]);
    }
    const have = new Map(map.rawEntries().map(([k, v]) => [k.toString('hex'), v]));
    const changed = [...want.values()].filter(([kb, vb]) => !have.get(kb.toString('hex'))?.equals(vb));
    writes += map.setManyRaw(changed);
    const gone = [...have.keys()].filter((h) => !want.has(h)).map((h) => Buffer.from(h, 'hex'));
    if (gone.length) stale.push([map, gone]);
  }
  for (const [map, keys] of stale.reverse()) deletes += map.deleteManyRaw(keys);
  return { writes, deletes };
}

function detach(pin: string): void {
  try {
    const l = Link.open(pin);
    try {
      l.detach();
    } finally {
      l.close();
    }
  } catch (e) {
    if (!(e instanceof BpfError)) throw e; // already defunct or not a link: still ours to unpin
  }
  rmSync(pin, { force: true });
}

/** A slot's inbound counters back to zero (a new policy in a slot another used before). */
function zeroCounters(pins: Pins, slot: number): void {
  pins.withMaps(['mr_in_stats'], (m) => {
    const zero = Object.fromEntries(IN_STAT_FIELDS.map((f) => [f, 0n])) as Record<InStatName, bigint>;
    m.get('mr_in_stats')!.set(slot, zero);
  });
}
