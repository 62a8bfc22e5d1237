// host.ts — where things are on this host: the cgroup2 and bpffs mounts (from /proc/mounts,
// never assumed), cgroup ids, and mounting bpffs when it is missing.
import { readFileSync, statSync, existsSync, mkdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join, resolve } from 'node:path';

interface Mount {
  source: string;
  target: string;
  type: string;
}

function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** Whether `path` is `dir` or below it (both absolute and normalised). */
export function within(path: string, dir: string): boolean {
  return dir === '/' || path === dir || path.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

export function mounts(): Mount[] {
  return readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => {
      const [source = '', target = '', type = ''] = l.split(' ');
      return { source, target: unescapeMount(target), type };
    });
}

export function cgroup2Mount(): string | null {
  return mounts().find((m) => m.type === 'cgroup2')?.target ?? null;
}

export function bpffsMount(): string | null {
  return mounts().find((m) => m.type === 'bpf')?.target ?? null;
}

/** Makes sure a bpffs is mounted at or above `dir`; mounts one at /sys/fs/bpf if none exists. */
export function ensureBpffs(dir: string): void {
  const abs = resolve(dir);
  const bpf = mounts().filter((m) => m.type === 'bpf' && within(abs, m.target));
  if (bpf.length > 0) return;
  if (!abs.startsWith('/sys/fs/bpf'))
    throw new Error(`${dir} is not on a bpffs mount (mount one, or use a directory under /sys/fs/bpf)`);
  mkdirSync('/sys/fs/bpf', { recursive: true });
  execFileSync('mount', ['-t', 'bpf', 'bpf', '/sys/fs/bpf'], { stdio: 'pipe' });
}

/** The cgroup2 mount, or an error saying there is none. */
export function requireCgroup2(): string {
  const m = cgroup2Mount();
  if (!m) throw new Error('no cgroup2 filesystem is mounted (see /proc/mounts); meshredir needs cgroup v2');
  return m;
}

/** A policy's cgroup path ("/pods/a") as a directory under the cgroup2 mount. */
export function cgroupDir(cgroupPath: string, mount = requireCgroup2()): string {
  return cgroupPath === '/' ? mount : join(mount, cgroupPath);
}

/** The reverse of cgroupDir: a directory under the cgroup2 mount as a policy path ("/pods/a"). */
export function cgroupPathOf(dir: string, mount = requireCgroup2()): string {
  const abs = resolve(dir);
  if (abs === mount) return '/';
  if (!within(abs, mount)) throw new Error(`${dir} is not under the cgroup2 mount ${mount}`);
  return abs.slice(mount.length);
}

/** The cgroup id (the kernfs inode number) of a cgroup directory, or null if it does not exist. */
export function cgroupId(dir: string): bigint | null {
  try {
    return statSync(dir, { bigint: true }).ino;
  } catch {
    return null;
  }
}

/** A cgroup argument (a path under the cgroup2 mount, or a policy path such as /pods/a or pods/a) as
 * its directory under the mount; the directory may not exist. */
export function cgroupArgDir(arg: string, mount = requireCgroup2()): string {
  return within(arg, mount) ? arg : cgroupDir(arg.startsWith('/') ? arg : `/${arg}`, mount);
}

/** Accepts either a path under the cgroup2 mount or a path relative to it; returns the directory. */
export function resolveCgroupArg(arg: string): string {
  const dir = cgroupArgDir(arg);
  if (!existsSync(dir)) throw new Error(`cgroup ${arg} does not exist (looked for ${dir})`);
  return dir;
}
