// expected.ts — what this process attached and pinned at its last load, to notice a change made behind
// its back (a link detached, moved or running another program, a pin deleted or replaced): the agent then
// loads again and says what it found (the `repaired` warning).
import { ON_DEMAND_PROGRAMS } from '../../bpf/abi.js';
import { cgroupId } from '../../util/host.js';
import type { Pins } from './pins.js';

export class Expected {
  private progs = new Map<string, number>();
  private maps = new Map<string, number | undefined>();

  constructor(
    private readonly pins: Pins,
    /** Where the links attach (the cgroup root). */
    private readonly root: () => string,
  ) {}

  /** Whether this process has loaded yet. */
  get known(): boolean {
    return this.progs.size > 0;
  }

  /** After a load: its links' programs and its maps are what later checks compare with. */
  remember(): void {
    this.progs = new Map(this.links().map((l) => [l.name, l.progId ?? -1]));
    this.maps = this.pins.mapIds();
  }

  /**
   * What differs from the last load: every pinned link attached at the root (or to its map) with the program
   * put there, and every map pin the map loaded with. Empty: intact (a deleted or replaced map pin needs a
   * load: the policy maps are written through their pins).
   */
  damage(): string[] {
    const out: string[] = [];
    const rootId = String(cgroupId(this.root()));
    const links = new Map(this.links().map((l) => [l.name, l]));
    for (const [name, prog] of this.progs) {
      const l = links.get(name);
      if (!l) out.push(`link pin ${name} deleted`);
      else if (!l.attached) out.push(`link ${name} detached`);
      else if (l.progId !== prog) out.push(`link ${name} runs another program (id ${l.progId}, not ${prog})`);
      else if (l.mapId === undefined && l.cgroupId !== rootId) out.push(`link ${name} attached elsewhere`);
    }
    for (const name of links.keys()) if (!this.progs.has(name)) out.push(`unknown link pin ${name}`);
    const maps = this.pins.mapIds();
    for (const [name, id] of this.maps) {
      const cur = maps.get(name);
      if (cur === undefined) out.push(`map pin ${name} deleted`);
      else if (cur !== id) out.push(`map pin ${name} replaced by another map (id ${cur}, not ${id})`);
    }
    return out;
  }

  /** The pinned links every load attaches (an on-demand program's link is its part's to check). */
  private links() {
    return this.pins.links().filter((l) => !(ON_DEMAND_PROGRAMS as readonly string[]).includes(l.name));
  }
}
