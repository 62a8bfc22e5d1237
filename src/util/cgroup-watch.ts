// cgroup-watch.ts — tells when cgroups appear or go below given parents (inotify on cgroupfs, which
// reports mkdir and rmdir), so that a new pod or container cgroup gets its policy within milliseconds.
// A parent that does not exist yet is waited for on its nearest existing ancestor.
import { watch, statSync, type FSWatcher } from 'node:fs';
import { dirname } from 'node:path';
import { cgroupDir, cgroupPathOf } from './host.js';

export interface CgroupChange {
  /** 'rename': an entry was created or removed (mkdir, rmdir); 'change': a file changed (kernfs
   * notifies cgroup.events when a cgroup's populated state changes); 'armed': a directory is watched
   * from now on (a wanted parent appeared, or was set): what happened in it before is unknown, so the
   * caller should look (an mkdir between its last look and this watch would be missed otherwise). */
  event: 'rename' | 'change' | 'armed';
  /** The watched directory (policy path) where something appeared or went. */
  parent: string;
  /** The entry's name (a cgroup directory, or a file such as cgroup.procs), when inotify gave one. */
  name: string | null;
}

interface Armed {
  watcher: FSWatcher;
  ino: bigint;
}

export class CgroupWatch {
  private wanted: string[] = [];
  private armed = new Map<string, Armed>();
  private retry?: NodeJS.Timeout;
  private closed = false;

  /**
   * `mount`: the cgroup2 mount. `onChange` is called for every entry created or removed in a watched
   * directory (synchronously from the event; it should be cheap). `onError`: a watch failed (e.g. the
   * kernel's inotify watch limit); it is armed again a second later.
   */
  constructor(
    private readonly mount: string,
    private readonly onChange: (c: CgroupChange) => void,
    private readonly onError: (e: Error, dir: string) => void = () => {},
  ) {}

  /** Watches the children of these cgroups (policy paths, such as "/kubepods.slice"). */
  set(parents: string[]): void {
    this.wanted = [...new Set(parents)];
    this.rearm();
  }

  /** The directories watched now (policy paths): each wanted parent, or its nearest existing ancestor. */
  watching(): string[] {
    return [...this.armed.keys()].sort();
  }

  private ino(dir: string): bigint | null {
    try {
      return statSync(dir, { bigint: true }).ino;
    } catch {
      return null;
    }
  }

  /** The nearest existing directory at or above a policy path (the mount itself at worst). */
  private nearest(path: string): string {
    let dir = cgroupDir(path, this.mount);
    while (dir !== this.mount && dir.startsWith(this.mount) && this.ino(dir) === null) dir = dirname(dir);
    return dir.startsWith(this.mount) ? dir : this.mount;
  }

  /** Makes the watch set match the wanted parents as the tree is now. Idempotent and cheap. */
  rearm(): void {
    if (this.closed) return;
    const want = new Set(this.wanted.map((p) => this.nearest(p)));
    for (const [dir, a] of this.armed) {
      // A directory removed (or removed and made again) is another inode: its old watch is dead.
      if (!want.has(dir) || this.ino(dir) !== a.ino) {
        a.watcher.close();
        this.armed.delete(dir);
      }
    }
    for (const dir of want) {
      if (this.armed.has(dir)) continue;
      const ino = this.ino(dir);
      if (ino === null) continue; // gone meanwhile: the next event or retry arms its ancestor
      try {
        const parent = cgroupPathOf(dir, this.mount);
        const watcher = watch(dir, { persistent: false }, (event, name) => {
          this.onChange({ parent, event, name: name ? String(name) : null });
          // Something appeared or went: a wanted parent may now exist (or be gone).
          if (event === 'rename') this.rearm();
        });
        watcher.on('error', (e) => this.failed(e, dir));
        this.armed.set(dir, { watcher, ino });
        this.onChange({ parent, event: 'armed', name: null });
      } catch (e) {
        this.failed(e as Error, dir);
      }
    }
  }

  private failed(e: Error, dir: string): void {
    const a = this.armed.get(dir);
    a?.watcher.close();
    this.armed.delete(dir);
    this.onError(e, dir);
    if (!this.retry && !this.closed)
      this.retry = setTimeout(() => {
        this.retry = undefined;
        this.rearm();
      }, 1000);
  }

  close(): void {
    this.closed = true;
    if (this.retry) clearTimeout(this.retry);
    for (const a of this.armed.values()) a.watcher.close();
    this.armed.clear();
  }
}
