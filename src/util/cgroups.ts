// cgroups.ts — from a cgroup id back to its path (status shows paths, the kernel speaks ids).
import { readdirSync, statSync } from 'node:fs';
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
