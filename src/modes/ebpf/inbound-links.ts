// inbound-links.ts — the inbound part's sk_lookup links, one per pod netns (links/sklookup-<slot>): attached
// from the pinned program, replaced when the pod's netns changed, moved onto a reloaded program in place.
import { chmodSync } from 'node:fs';
import type { BpfObject } from '../../bpf/object.js';
import { Link, detachPinned } from '../../bpf/link.js';
import { closeFd, openPinned } from '../../bpf/fd.js';
import { progInfoById, progInfoByFd, progMapsById, progMapsByFd } from '../../bpf/prog.js';
import { IN_STAT_FIELDS, type InStatName } from '../../bpf/abi.js';
import { NetnsHandle } from '../netns.js';
import type { Note } from '../mode.js';
import { NETNS_LINK_PREFIX, type Pins } from './pins.js';
import type { InboundTarget } from './inbound-plan.js';

export const SKLOOKUP = 'mr_sklookup';
type NetnsLink = ReturnType<Pins['netnsLinks']>[number];

/** Moves every netns link onto the freshly loaded (and pinned) sk_lookup program, atomically, in place. */
export function updateLinks(obj: BpfObject, pins: Pins): string[] {
  const prog = obj.program(SKLOOKUP);
  const tag = progInfoByFd(prog.fd, SKLOOKUP).tag;
  // The tag hashes the instructions only: the same program bound to other maps (pins lost, maps made
  // anew) has the same tag, so the maps are compared too.
  const maps = JSON.stringify([...progMapsByFd(prog.fd, SKLOOKUP)].filter(([n]) => n.startsWith('mr_')).sort());
  const updated: string[] = [];
  for (const l of pins.netnsLinks()) {
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

/**
 * Makes `t`'s link exist on its netns (a new slot's counters start at zero). Returns the note of an attach,
 * or null when the link was in place already.
 */
export function ensureLink(pins: Pins, t: InboundTarget, cur: NetnsLink | undefined): Note | null {
  if (cur?.attached && cur.netnsIno === t.netns.ino) return null;
  if (cur)
    detachPinned(cur.pin); // defunct (netns gone) or on another netns (the pod was re-created)
  else zeroCounters(pins, t.slot);
  const progFd = openPinned(pins.progPin(SKLOOKUP), `open pinned ${SKLOOKUP}`);
  try {
    const ns = NetnsHandle.open(t.netns.path, t.netns.id);
    try {
      const pin = pins.linkPin(`${NETNS_LINK_PREFIX}${t.slot}`);
      Link.attachNetnsPinned(progFd, ns.fd, pin, t.netns.path);
      chmodSync(pin, 0o600);
    } finally {
      ns.close();
    }
  } finally {
    closeFd(progFd);
  }
  return {
    level: 'info',
    event: 'inbound_attached',
    message: `${t.policy}: ${SKLOOKUP} attached to netns ${t.netns.path} (${t.netns.id})${cur ? ', replacing the link of its previous netns' : ''}`,
    fields: { policy: t.policy, netns: t.netns.id },
  };
}

/** Removes the links no target wants (their policy went, or their netns is gone). */
export function removeLinks(links: Map<number, NetnsLink>, keep: (slot: number) => boolean): Note[] {
  const notes: Note[] = [];
  for (const [slot, l] of links) {
    if (keep(slot)) continue;
    detachPinned(l.pin);
    notes.push({
      level: 'info',
      event: 'inbound_detached',
      message: `inbound link ${l.name} removed (${l.attached ? 'no policy wants it' : 'its netns is gone'})`,
      fields: { link: l.name },
    });
  }
  return notes;
}

/** A slot's inbound counters back to zero (a new policy in a slot another used before). */
function zeroCounters(pins: Pins, slot: number): void {
  pins.withMaps(['mr_in_stats'], (m) => {
    const zero = Object.fromEntries(IN_STAT_FIELDS.map((f) => [f, 0n])) as Record<InStatName, bigint>;
    m.get('mr_in_stats')!.set(slot, zero);
  });
}
