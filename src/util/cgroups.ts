// cgroups.ts — cgroup trees: from a cgroup id back to its path (status shows paths, the kernel speaks
// ids), and every process of a subtree.
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { cgroup2Mount } from './host.js';

/** Walks the cgroup2 tree (bounded) for the directory whose inode is `id`; "/" relative paths. */
export function cgroupPathById(id: bigint, maxDirs = 20_000): string | null {
  const mount = cgroup2Mount();
  if (!mount) return null;
  const stack = [mount];
  let seen = 0;
  while (stack.length && seen < maxDirs) {
    const dir = stack.pop()!;
    seen++;
    try {
      if (statSync(dir, { bigint: true }).ino === id) return dir === mount ? '/' : dir.slice(mount.length);
      for (const e of readdirSync(dir, { withFileTypes: true })) if (e.isDirectory()) stack.push(join(dir, e.name));
    } catch {
      // a cgroup removed while we walk
    }
  }
  return null;
}

/** Every pid in a cgroup subtree (a cgroup removed while we walk contributes nothing). */
export function subtreePids(dir: string): number[] {
  const out: number[] = [];
  const stack = [dir];
  while (stack.length) {
    const d = stack.pop()!;
    try {
      out.push(...readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean).map(Number));
      for (const e of readdirSync(d, { withFileTypes: true })) if (e.isDirectory()) stack.push(join(d, e.name));
    } catch {
      // gone meanwhile
    }
  }
  return out;
}
