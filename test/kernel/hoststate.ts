// hoststate.ts — facts about the test host (can the kernel tests run, what is left behind) with no
// vitest import, so the global setup can use them too.
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

export const ROOT = resolve(import.meta.dirname, '..', '..');
export const CLI = join(ROOT, 'dist', 'cli', 'main.js');
export const OBJECT = join(ROOT, 'build', 'meshredir.bpf.o');
export const ORIGDST_PROXY = join(ROOT, 'build', 'origdst-proxy');
export const XFER = join(ROOT, 'build', 'xfer');
export const TOOLS = join(ROOT, 'test', 'tools');
export const CI = process.env.CI === 'true';

export function cgroup2(): string | null {
  const line = readFileSync('/proc/mounts', 'utf8')
    .split('\n')
    .find((l) => l.split(' ')[2] === 'cgroup2');
  return line?.split(' ')[1] ?? null;
}

function has(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
  }
}

/** Why the kernel tests cannot run here, or null. */
export function cannotRun(): string | null {
  if (process.getuid?.() !== 0) return 'kernel tests need root';
  if (!cgroup2()) return 'no cgroup2 mount in /proc/mounts';
  for (const f of [CLI, OBJECT, ORIGDST_PROXY, XFER]) if (!existsSync(f)) return `${f} is not built (run make build)`;
  for (const b of ['ip', 'haproxy', 'bpftool']) if (!has(b)) return `${b} is not installed (run make deps)`;
  return null;
}

export function sh(cmd: string, args: string[], opts: { input?: string; allowFail?: boolean } = {}): string {
  try {
    return execFileSync(cmd, args, { stdio: 'pipe', encoding: 'utf8', input: opts.input ?? '' });
  } catch (e) {
    if (opts.allowFail) return '';
    const err = e as { stderr?: string; message: string };
    throw new Error(`${cmd} ${args.join(' ')}: ${err.stderr?.trim() || err.message}`);
  }
}

/** What meshredir's names say is still on the host (the rules of shared/tools/leftovers). */
export function leftovers(): string[] {
  const out: string[] = [];
  const mount = cgroup2();
  if (existsSync('/sys/fs/bpf'))
    for (const n of readdirSync('/sys/fs/bpf'))
      if (n.startsWith('meshredir') || n.startsWith('mr-')) out.push(`bpffs pin /sys/fs/bpf/${n}`);
  if (mount) {
    // Test and probe cgroups at any depth (a probe's throwaway cgroup lives under a test root).
    const walk = (dir: string, depth: number) => {
      if (depth > 6) return;
      for (const e of readdirSync(dir, { withFileTypes: true })) {
        if (!e.isDirectory()) continue;
        if (e.name.startsWith('meshredir-test-') || e.name.startsWith('meshredir-probe-'))
          out.push(`cgroup ${join(dir, e.name)}`);
        else walk(join(dir, e.name), depth + 1);
      }
    };
    walk(mount, 1);
    let path = '';
    for (const l of sh('bpftool', ['cgroup', 'tree', mount], { allowFail: true }).split('\n')) {
      if (l.startsWith('/')) path = l.trim();
      else if (/ mr_/.test(l)) out.push(`attached at ${path}: ${l.trim()}`);
    }
  }
  for (const l of sh('ip', ['netns', 'list'], { allowFail: true }).split('\n'))
    if (l.startsWith('mr-')) out.push(`netns ${l.split(' ')[0]}`);
  for (const l of sh('bpftool', ['prog', 'show'], { allowFail: true }).split('\n'))
    if (/ name mr_/.test(l)) out.push(`loaded program ${l.trim()}`);
  for (const t of ['iptables-save', 'ip6tables-save', 'iptables-legacy-save', 'ip6tables-legacy-save']) {
    if (sh(t, [], { allowFail: true }).includes('MESHREDIR')) out.push(`MESHREDIR chains in ${t}`);
  }
  return out;
}
