// on-demand.ts — a cgroup program kept pinned (progs/) and attached at the cgroup root only while a part needs
// it (ulp-guard.ts: mr_setsockopt; release.ts: mr_dns_release), because its hook costs every socket below the
// root even when the program does nothing: its link as the kernel reports it, the attach that goes before the
// entries needing it are written, and the detach once nothing needs it any more and a grace has passed.
//
// The grace: a hook that read a policy entry just before it was rewritten may still act on it (a connect()
// that has not published its record yet), so what needs the program is counted as present for GRACE_MS
// after it was last seen. A new process counts its own start (it cannot know when the previous agent
// rewrote the entries).
import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import type { BpfObject } from '../../bpf/object.js';
import { Link, detachPinned, type OnDemandHook } from '../../bpf/link.js';
import { BpfError } from '../../bpf/errors.js';
import { closeFd, openPinned, pinFd } from '../../bpf/fd.js';
import type { Note } from '../mode.js';
import { faultAt } from '../../util/faults.js';
import type { Pins } from './pins.js';

/** How long the program outlives the last entry needing it that was seen, at least. */
export const GRACE_MS = 1000;

/** Whether the program is needed, and why. */
export interface Need {
  needed: boolean;
  why: string;
}

/** The link: absent, or attached (or not: defunct) with its program id. */
export interface OnDemandState {
  pin: string;
  attached: boolean;
  cgroupId?: bigint;
  progId?: number;
}

export interface OnDemandWords {
  /** What it does, for the attach note: "it refuses kTLS on fast-path sockets". */
  does: string;
  /** The notes' event prefix: `${event}_attached`, `_kept`, `_detached`. */
  event: string;
  /** Why it is not needed (the detach note, status). */
  nothing: string;
}

export class OnDemandLink {
  /** When something needing it was last seen (in the plan, or in the maps before a rewrite). */
  private seenAt = Date.now();
  /** Attached while nothing in the plan needs it: the pulse looks for what still needs it to go. */
  private draining = false;

  constructor(
    private readonly pins: Pins,
    readonly program: string,
    private readonly hook: OnDemandHook,
    /** Where it attaches (the cgroup root). */
    private readonly root: () => string,
    private readonly words: OnDemandWords,
  ) {}

  state(): OnDemandState | null {
    const pin = this.pins.linkPin(this.program);
    if (!existsSync(pin)) return null;
    try {
      const l = Link.open(pin);
      try {
        const i = l.info();
        return {
          pin,
          attached: (i.cgroupId ?? 0n) !== 0n,
          progId: i.progId,
          ...(i.cgroupId ? { cgroupId: i.cgroupId } : {}),
        };
      } finally {
        l.close();
      }
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      return { pin, attached: false }; // not a link any more: replaced when needed, removed otherwise
    }
  }

  attached(): boolean {
    return this.state()?.attached ?? false;
  }

  /** Whether its program is pinned (loaded here), ready to attach. */
  hasProgram(): boolean {
    return existsSync(this.pins.progPin(this.program));
  }

  /** After a load: pins the freshly loaded program (attach.ts re-adopted a pinned link already); a program
   * the load left out (its hook missing here) has no pin. Returns whether it is pinned. */
  pinProgram(obj: BpfObject): boolean {
    const pin = this.pins.progPin(this.program);
    rmSync(pin, { force: true });
    const fd = obj.program(this.program).fd;
    if (fd < 0) return false;
    mkdirSync(this.pins.progsDir, { recursive: true, mode: 0o700 });
    pinFd(fd, pin, `pin ${this.program} at ${pin}`);
    chmodSync(pin, 0o600);
    return true;
  }

  graceLeftMs(): number {
    return Math.max(0, this.seenAt + GRACE_MS - Date.now());
  }

  /** Before entries that need it are rewritten into ones that do not: the grace starts from the rewrite. */
  rewriting(stillInMaps: () => boolean): void {
    if (this.attached() && stillInMaps()) this.seenAt = Date.now();
  }

  /** Attaches it (if it is not) before the entries that need it are written, so that none is without it.
   * Throws (a BpfError) when the kernel refuses: the part decides what goes without it. */
  attachFor(why: string, fields: Note['fields']): Note[] {
    this.seenAt = Date.now();
    this.draining = false;
    const link = this.state();
    if (link?.attached) return [];
    this.attachNow(link);
    return [
      {
        level: 'info',
        event: `${this.words.event}_attached`,
        message: `${this.program} attached at ${this.root()} (${this.words.does}): ${why}`,
        fields,
      },
    ];
  }

  /** Attaches and pins it, replacing a defunct link (detached behind our back). */
  private attachNow(link: OnDemandState | null): void {
    if (faultAt('fail-attach', this.program))
      throw new BpfError(
        `attach ${this.program} to ${this.root()} (injected: MESHREDIR_FAULT=fail-attach:${this.program})`,
        'bpf_link_create',
        1, // EPERM
      );
    if (link) detachPinned(link.pin);
    const progFd = openPinned(this.pins.progPin(this.program), `open pinned ${this.program}`);
    try {
      const pin = this.pins.linkPin(this.program);
      Link.attachCgroupPinned(progFd, this.hook, this.root(), pin, this.program);
      chmodSync(pin, 0o600);
    } finally {
      closeFd(progFd);
    }
  }

  /** After the entries are written, with nothing in the plan needing it: detached once `drained` says nothing
   * else does (and the grace is over); else kept — said once — and the pulse watches for the drain. A link
   * detached behind our back while something still needs it is attached again (the entries its hook deletes
   * would stay forever otherwise), as the agent repairs its other links. */
  settle(drained: () => boolean, keptWhy: () => string): Note[] {
    const link = this.state();
    if (!link && !this.draining) return [];
    // Not attached (defunct, or its pin gone since it was kept: a repair refused) spares nothing during the
    // grace (its hook runs no more): only what is left counts.
    const attached = link?.attached ?? false;
    if (attached ? this.drained(drained) : drained()) {
      this.draining = false;
      if (!link) return [];
      detachPinned(link.pin);
      return [
        {
          level: 'info',
          event: `${this.words.event}_detached`,
          message: `${this.program} detached: ${attached ? this.words.nothing : 'its link was defunct'}`,
        },
      ];
    }
    const notes: Note[] = attached ? [] : [this.repair(link, keptWhy())];
    if (!this.draining)
      notes.push({
        level: 'info',
        event: `${this.words.event}_kept`,
        message: `${this.program} stays attached: ${keptWhy()}; detached once nothing needs it`,
      });
    this.draining = true;
    return notes;
  }

  /** The link is defunct (or gone) while still needed: attached again (or, refused, left to the next pass to
   * retry: it stays draining). */
  private repair(link: OnDemandState | null, why: string): Note {
    const what = `${this.program} was detached behind the agent's back (not by this agent) while still needed (${why})`;
    try {
      this.attachNow(link);
    } catch (e) {
      if (!(e instanceof BpfError)) throw e;
      return {
        level: 'warn',
        event: `${this.words.event}_repair_failed`,
        message: `${what}; attaching it again failed: ${e.message}; tried again at the next pass`,
      };
    }
    return { level: 'warn', event: 'repaired', message: `${what}: attached again at ${this.root()}` };
  }

  /** Cheap first: the pulse asks each second while draining. */
  private drained(drained: () => boolean): boolean {
    return this.graceLeftMs() === 0 && drained();
  }

  /** Between reconciles, while draining: a reason to reconcile (and detach) now, or null. */
  pulse(drained: () => boolean, why: string): string | null {
    if (!this.draining) return null;
    return this.drained(drained) ? `${why}: ${this.program} can be detached` : null;
  }

  /** Its status line's state: attached or not, against whether it is needed. */
  describe(need: Need, idle: string): { attached: boolean; state: string } {
    const attached = this.attached();
    const state = attached
      ? need.needed
        ? `attached: ${need.why}`
        : `attached, no longer needed (${need.why}): the agent detaches it`
      : need.needed
        ? `NOT attached, though needed: ${need.why}`
        : `not attached: ${need.why} (${idle})`;
    return { attached, state };
  }
}
