// attach.ts — every program's link, in attach order: a pinned link that is ours is re-adopted (or its
// program swapped in place when it changed), a defunct one replaced, a missing one attached and pinned
// (but an on-demand program's: its part attaches it when needed).
// A load whose attach fails detaches what it attached, and never leaves a connect hook without what
// answers for its connections.
import { chmodSync, existsSync } from 'node:fs';
import { basename } from 'node:path';
import type { BpfObject } from '../../bpf/object.js';
import { mapInfo } from '../../bpf/map.js';
import { Link, detachPinned } from '../../bpf/link.js';
import { progInfoById, progInfoByFd, progMapsById, progMapsByFd } from '../../bpf/prog.js';
import { BpfError } from '../../bpf/errors.js';
import {
  DNS_NEEDS,
  DNS_PROGRAMS,
  ON_DEMAND_PROGRAMS,
  OPTIONAL_PROGRAMS,
  PROGRAMS,
  programFor,
  REDIRECTING,
  REDIRECT_NEEDS,
  type ProgramName,
} from '../../bpf/abi.js';
import { crashAfterAttach, failAttach } from '../../util/faults.js';
import type { Pins } from './pins.js';
import type { LoadReport } from './load.js';

/** Compares the meshredir maps two programs use (name → id); a description of the difference or null. */
function mapsDiffer(cur: Map<string, number> | null, next: Map<string, number>): string | null {
  const diffs: string[] = [];
  for (const [name, id] of next) {
    if (!name.startsWith('mr_')) continue; // .rodata/.bss are per load
    const had = cur?.get(name);
    if (had !== id) diffs.push(`${name} ${had ?? 'none'} → ${id}`);
  }
  return diffs.length ? `uses map ids ${diffs.join(', ')}` : null;
}

/** `fast`: the object was loaded with the fast path (else mr_sockops_base runs under mr_sockops' link, and
 * mr_skmsg is not attached: the load said why). */
export function attachLinks(
  obj: BpfObject,
  pins: Pins,
  cgroupRoot: string,
  rootId: bigint,
  rep: LoadReport,
  fast = true,
): void {
  const sockhashId = fast ? mapInfo(obj.mapFd('mr_sockhash'), 'mr_sockhash').id : -1;
  const attachedNow: string[] = [];
  try {
    for (const name of Object.keys(PROGRAMS) as ProgramName[]) {
      const pin = pins.linkPin(name);
      // Not loaded (autoload off: this kernel lacks the hook), or a DNS hook whose prerequisites are
      // missing (a sendmsg hook never runs without the release and recvmsg hooks): not attached, and a
      // link left from an earlier load goes.
      const missing = name in DNS_PROGRAMS ? DNS_NEEDS.filter((n) => n !== name && n in rep.unavailable) : [];
      if (name in rep.unavailable || missing.length) {
        if (!(name in rep.unavailable)) rep.unavailable[name] = `needs ${missing.join(', ')}`;
        if (existsSync(pin)) rollback([pin]);
        continue;
      }
      const skmsg = PROGRAMS[name].attach === 'sk_msg';
      const prog = obj.program(programFor(name, fast)); // without the fast path, mr_skmsg is unavailable (above)
      if (existsSync(pin) && readopt(prog, pin, skmsg ? { mapId: sockhashId } : { cgroupId: rootId }, pins, rep)) {
        continue;
      }
      if (ON_DEMAND_PROGRAMS.includes(name)) continue; // attached by its part while needed (ulp-guard.ts)
      failAttach(name, attachedNow.length);
      if (skmsg) {
        try {
          Link.attachSkMsgPinned(prog, obj.mapFd('mr_sockhash'), pin);
        } catch (e) {
          // sk_msg links need kernel 6.10; without them accelerate stays off, and status says so.
          if (!(e instanceof BpfError)) throw e;
          rep.unavailable[name] = e.message;
          continue;
        }
      } else {
        let link: Link;
        try {
          link = Link.attachCgroup(prog, cgroupRoot);
        } catch (e) {
          // An optional hook that loads but does not attach: its feature is off (status says why).
          if (!(e instanceof BpfError) || !OPTIONAL_PROGRAMS.includes(name)) throw e;
          rep.unavailable[name] = e.message;
          continue;
        }
        try {
          link.pin(pin);
        } catch (e) {
          link.detach(); // never attached without a pin: nobody could find it to detach it
          throw e;
        } finally {
          link.close();
        }
      }
      attachedNow.push(pin);
      chmodSync(pin, 0o600);
      rep.attachedLinks.push(name);
      crashAfterAttach(attachedNow.length);
    }
  } catch (e) {
    const undone = rollback(attachedNow);
    throw new Error(
      `${(e as Error).message}; ${undone.length ? `detached what this load had attached (${undone.join(', ')})` : 'nothing had been attached by this load'}${enforceDependencies(pins)}`,
      { cause: e },
    );
  }
}

/**
 * A pinned link: kept when it is attached where ours belongs (its program swapped in place when the
 * program or its maps changed); true when it is in place now. A defunct one is unpinned (to be replaced);
 * one attached to another cgroup is refused.
 */
function readopt(
  prog: { name: string; fd: number; ptr: Buffer },
  pin: string,
  where: { mapId?: number; cgroupId?: bigint },
  pins: Pins,
  rep: LoadReport,
): boolean {
  const link = Link.open(pin);
  try {
    const info = link.info();
    const ours = where.mapId !== undefined ? info.mapId === where.mapId : info.cgroupId === where.cgroupId;
    if (ours) {
      const cur = progInfoById(info.progId);
      const next = progInfoByFd(prog.fd, prog.name);
      // The tag hashes the instructions only: the same program bound to other maps (pins lost and
      // maps recreated) has the same tag, so the maps are compared too.
      const maps = cur ? mapsDiffer(progMapsById(cur.id), progMapsByFd(prog.fd, prog.name)) : null;
      if (!cur || cur.tag !== next.tag || maps) {
        link.update(prog);
        rep.updatedLinks.push(prog.name);
        if (maps) rep.rebound[prog.name] = maps;
      } else rep.adoptedLinks.push(prog.name);
      return true;
    }
    if (where.cgroupId !== undefined && info.cgroupId && info.cgroupId !== 0n) {
      throw new Error(
        `link ${pin} is attached to another cgroup (id ${info.cgroupId}); run 'meshredir cleanup --bpffs ${pins.bpffs}' first`,
      );
    }
    link.unpin(); // defunct (its cgroup is gone or it was detached): replace it
    return false;
  } finally {
    link.close();
  }
}

/** Detaches and unpins the given link pins (what a failed load attached). Returns their names. */
export function rollback(linkPins: string[]): string[] {
  const done: string[] = [];
  for (const pin of [...linkPins].reverse()) {
    detachPinned(pin);
    done.push(basename(pin));
  }
  return done;
}

/**
 * A connect hook without sockops and getsockopt redirects connections that the proxy cannot resolve;
 * if that is what is left (e.g. adopted connect links while a dependency failed to attach), the
 * connect hooks go too, so connections go direct instead. Returns a note for the error message.
 */
function enforceDependencies(pins: Pins): string {
  const attached = new Set(
    pins
      .links()
      .filter((l) => l.attached)
      .map((l) => l.name),
  );
  const missing = REDIRECT_NEEDS.filter((n) => !attached.has(n));
  const redirecting = REDIRECTING.filter((n) => attached.has(n));
  if (missing.length === 0 || redirecting.length === 0) return '';
  rollback(redirecting.map((n) => pins.linkPin(n)));
  return `; detached ${redirecting.join(', ')} too: without ${missing.join(', ')} redirected connections could not be resolved by the proxy`;
}
