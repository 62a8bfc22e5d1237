// policy-dir-fuzz.test.ts — a property test of the policy directory as the agent reads it (FileSource):
// seeded rounds of directories holding valid policies beside FIFOs, sockets, devices, symlinks (to
// devices, dangling, looping), directories named *.yaml, sparse files of up to a GiB, files others may
// write or own, junk — read while files are renamed and swapped under the reader. Every read finishes
// (nothing blocks), never throws, keeps every valid policy, and names every bad file with its reason.
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  mkdirSync,
  mkdtempSync,
  renameSync,
  rmSync,
  symlinkSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileSource } from '../../src/sources/files.js';
import { PolicyDirError, readPolicyDir } from '../../src/policy/read.js';
import type { Logger } from '../../src/util/log.js';
import type { PolicyOutcome } from '../../src/modes/mode.js';

/** mulberry32, as in policy-fuzz.test.ts. */
function prng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  return { next, int, pick };
}

/** Counts what the source logs by event (to show the renames did hit reads in progress). */
const seen = new Map<string, number>();
const count = (o: { event?: string }) => void seen.set(o.event ?? '', (seen.get(o.event ?? '') ?? 0) + 1);
const quiet = { debug: count, info: count, warn: count, error: count } as unknown as Logger;
const root = process.geteuid?.() === 0;

const policyText = (name: string) =>
  [
    'apiVersion: meshredir/v1',
    'kind: RedirectPolicy',
    `metadata: { name: ${name} }`,
    `spec: { cgroup: /pods/${name}, proxy: { outbound: "10.0.0.1:15001" } }`,
    '',
  ].join('\n');

/** Each bad kind: how to make it, and what the reader must say about it (level and a phrase). */
type Maker = (file: string, r: ReturnType<typeof prng>) => Promise<void> | void;
const servers: Server[] = [];
const BAD: Record<string, { make: Maker; level: 'warn' | 'error'; says: RegExp; rootOnly?: boolean }> = {
  fifo: { make: (f) => void execFileSync('mkfifo', [f]), level: 'warn', says: /skipped: a FIFO, not a regular file/ },
  socket: {
    make: (f) =>
      new Promise<void>((res) => {
        const s = createServer();
        servers.push(s);
        s.listen(f, () => res());
      }),
    level: 'warn',
    says: /skipped: a socket, not a regular file/,
  },
  zero: {
    make: (f) => symlinkSync('/dev/zero', f),
    level: 'warn',
    says: /skipped: a symlink to \/dev\/zero, a character device, not a regular file/,
  },
  null: {
    make: (f) => symlinkSync('/dev/null', f),
    level: 'warn',
    says: /a symlink to \/dev\/null, a character device/,
  },
  dir: { make: (f) => mkdirSync(f), level: 'warn', says: /skipped: a directory, not a regular file/ },
  dangling: {
    make: (f) => symlinkSync('/nonexistent/meshredir-fuzz', f),
    level: 'warn',
    says: /a symlink to \/nonexistent\/meshredir-fuzz, which does not exist/,
  },
  loop: { make: (f) => symlinkSync(f, f), level: 'error', says: /cannot read: ELOOP/ },
  huge: {
    make: (f, r) => {
      writeFileSync(f, '');
      truncateSync(f, 4 * 1024 * 1024 + r.int(1, 1024 * 1024 * 1024)); // sparse: costs nothing on disk
    },
    level: 'error',
    says: /MiB: larger than the 4 MiB limit per policy file; not read/,
  },
  writable: {
    make: (f, r) => {
      writeFileSync(f, policyText(`w${r.int(0, 1e6)}`));
      chmodSync(f, r.pick([0o666, 0o664, 0o646, 0o622]));
    },
    level: 'error',
    says: /refused: writable by (its group|others|its group and others) \(mode 06\d\d\)/,
  },
  foreign: {
    make: (f, r) => {
      writeFileSync(f, policyText(`f${r.int(0, 1e6)}`));
      chownSync(f, 65534, 65534);
    },
    level: 'error',
    says: /refused: owned by uid 65534, not by root/,
    rootOnly: true,
  },
  junk: {
    make: (f, r) =>
      writeFileSync(f, r.pick(['{', 'a: [', '\0\0\0', '- - -', 'kind: 5\n', `${'x'.repeat(r.int(1, 9000))}: `])),
    level: 'error',
    says: /./,
  },
};

describe('policy directory, property test', () => {
  const dirs: string[] = [];
  afterAll(() => {
    for (const s of servers) s.close();
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  it('rounds of hostile directories, read while files are renamed and swapped: every read ends, names every bad file, keeps every valid policy', async () => {
    const r = prng(0x5eed16);
    const kinds = Object.keys(BAD).filter((k) => root || !BAD[k]!.rootOnly);
    let swapsSeen = 0;
    for (let round = 0; round < 100; round++) {
      const dir = mkdtempSync(join(tmpdir(), 'meshredir-fuzz-dir-'));
      dirs.push(dir);
      const outside = mkdtempSync(join(tmpdir(), 'meshredir-fuzz-target-'));
      dirs.push(outside);
      const good = Array.from({ length: r.int(1, 5) }, (_, i) => `good${round}-${i}`);
      for (const n of good) writeFileSync(join(dir, `${n}.yaml`), policyText(n));
      // A symlink to a regular file elsewhere (a Kubernetes ConfigMap's layout) is a policy file like any.
      const linked = `linked${round}`;
      writeFileSync(join(outside, 'p.yaml'), policyText(linked));
      symlinkSync(join(outside, 'p.yaml'), join(dir, `${linked}.yaml`));
      const bad = new Map<string, string>();
      for (let i = r.int(2, 8); i > 0; i--) {
        const k = r.pick(kinds);
        const file = join(dir, `bad${i}-${k}.yaml`);
        await BAD[k]!.make(file, r);
        bad.set(file, k);
      }
      const src = new FileSource(dir, quiet, 0); // (settling has its own test)
      const within = <T>(p: Promise<T>, what: string) =>
        Promise.race([
          p,
          new Promise<never>((_, no) => setTimeout(() => no(new Error(`${what}: no answer in 10 s`)), 10_000).unref()),
        ]);
      const check = (read: Awaited<ReturnType<FileSource['read']>>, moving: Set<string>) => {
        const names = new Set(read.policies.map((p) => p.name));
        for (const n of [...good, linked]) if (!moving.has(n)) expect(names, `round ${round}: ${n}`).toContain(n);
        for (const [file, k] of bad) {
          const said = read.errors.filter((e) => e.object === file);
          expect(said.length, `round ${round}: ${file} named`).toBeGreaterThan(0);
          expect(
            said.some((e) => (e.level ?? 'error') === BAD[k]!.level && BAD[k]!.says.test(e.message)),
            `${file}: ${said.map((e) => e.message).join('; ')}`,
          ).toBe(true);
        }
        // A file caught mid-swap may be reported as what it was that instant (a FIFO): only moving ones.
        const movingFiles = [...moving].map((n) => join(dir, `${n.replace(/^tmp\d+$/, `tmp-${round}`)}.yaml`));
        for (const e of read.errors)
          expect([...bad.keys(), ...movingFiles], `round ${round}: unexpected ${e.message}`).toContain(e.object);
        for (const p of read.policies) expect(bad.has(p.file), `${p.file} applied`).toBe(false);
      };
      const first = await within(src.read(), 'first read');
      check(first, new Set());
      src.settled(first.policies.map((p): PolicyOutcome => ({ policy: p.name, file: p.file, state: 'applied' })));
      // Second read while files move: a good file renamed away and back, another replaced by a FIFO and
      // restored, a temporary file appearing and going.
      const moving = new Set<string>();
      let stop = false;
      const mover = (async () => {
        if (r.next() < 0.3) return;
        const victim = good[0]!;
        moving.add(victim);
        const swap = good.length > 1 ? good[1]! : undefined;
        if (swap) moving.add(swap);
        const f = join(dir, `${victim}.yaml`);
        const tmp = join(dir, `.${victim}.yaml.swp`);
        const fifo = join(dir, `.fifo-${round}`);
        execFileSync('mkfifo', [fifo]);
        for (let i = 0; !stop && i < 5000; i++) {
          renameSync(f, tmp);
          await new Promise((res) => setImmediate(res));
          renameSync(tmp, f);
          if (swap) {
            const s = join(dir, `${swap}.yaml`);
            renameSync(s, join(dir, `.${swap}.keep`));
            renameSync(fifo, s);
            await new Promise((res) => setImmediate(res));
            renameSync(s, fifo);
            renameSync(join(dir, `.${swap}.keep`), s);
          }
          writeFileSync(join(dir, `tmp-${round}.yaml`), policyText(`tmp${round}`));
          rmSync(join(dir, `tmp-${round}.yaml`));
          await new Promise((res) => setImmediate(res));
        }
        rmSync(fifo);
      })();
      const second = await within(src.read(), 'read while renaming');
      stop = true;
      await mover;
      check(second, new Set([...moving, `tmp${round}`]));
      // A moving file is either read whole, kept from what was applied, or not listed at that instant:
      // never half a policy, never an error.
      for (const p of second.policies.filter((x) => moving.has(x.name))) expect(p.cgroup).toBe(`/pods/${p.name}`);
      swapsSeen += second.errors.filter((e) => /a FIFO/.test(e.message) && !bad.has(e.object)).length;
      await src.stop();
    }
    // The renames did meet reads in progress: files gone between listing and opening, a FIFO swapped in.
    expect(seen.get('vanished') ?? 0).toBeGreaterThan(0);
    expect(swapsSeen + (seen.get('vanished') ?? 0)).toBeGreaterThan(5);
  }, 120_000);

  it('the directory itself: others may write to it, or it is not owned by root: refused whole, with the reason', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-fuzz-dir-'));
    dirs.push(dir);
    writeFileSync(join(dir, 'a.yaml'), policyText('a'));
    const src = new FileSource(dir, quiet);
    chmodSync(dir, 0o777);
    await expect(src.read()).rejects.toThrow(
      `policy directory ${dir} is writable by its group and others (mode 0777): refused, nothing was changed`,
    );
    chmodSync(dir, 0o1777); // sticky does not make it safe: others can still add files
    await expect(src.read()).rejects.toThrow(/writable by its group and others \(mode 1777\)/);
    chmodSync(dir, 0o755);
    if (root) {
      chownSync(dir, 65534, 65534);
      await expect(src.read()).rejects.toThrow(/is owned by uid 65534, not by root: refused/);
      chownSync(dir, 0, 0);
    }
    expect((await src.read()).policies.map((p) => p.name)).toEqual(['a']);
  });

  it('an edit written in place is read once it settles: a half-written file never replaces what is applied', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-fuzz-dir-'));
    dirs.push(dir);
    const f = join(dir, 'a.yaml');
    writeFileSync(f, policyText('a'));
    const src = new FileSource(dir, quiet, 500);
    const first = await src.read();
    src.settled(first.policies.map((p): PolicyOutcome => ({ policy: p.name, file: p.file, state: 'applied' })));
    // Truncated by the writer (as writeFileSync and most editors' in-place saves do first): still a.
    writeFileSync(f, '');
    expect((await src.read()).policies.map((p) => p.name)).toEqual(['a']);
    // Half-written, yet valid YAML (a policy cut short): still the applied a, not this b.
    writeFileSync(f, policyText('b').split('\n').slice(0, 4).join('\n'));
    const mid = await src.read();
    expect(mid.policies.map((p) => p.name)).toEqual(['a']);
    expect(mid.errors).toEqual([]);
    // Once it has been unchanged for the settle time, it is what the file says.
    writeFileSync(f, policyText('b'));
    await new Promise((r) => setTimeout(r, 600));
    expect((await src.read()).policies.map((p) => p.name)).toEqual(['b']);
    await src.stop();
  });

  it('limits per directory: bytes in all, and the number of files', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-fuzz-dir-'));
    dirs.push(dir);
    for (const n of ['a', 'b', 'c']) writeFileSync(join(dir, `${n}.yaml`), policyText(n).padEnd(900, '\n'));
    const r = await readPolicyDir(dir, { fileBytes: 1000, dirBytes: 2000, files: 10 });
    expect(r.files.map((f) => f.file)).toEqual([join(dir, 'a.yaml'), join(dir, 'b.yaml')]);
    expect(r.issues).toEqual([
      {
        file: join(dir, 'c.yaml'),
        level: 'error',
        message: `not read: with its 900 bytes the policy files of ${dir} would exceed 2 KiB in all (the limit per directory)`,
      },
    ]);
    await expect(readPolicyDir(dir, { fileBytes: 1000, dirBytes: 9000, files: 2 })).rejects.toThrow(PolicyDirError);
    await expect(readPolicyDir(dir, { fileBytes: 1000, dirBytes: 9000, files: 2 })).rejects.toThrow(
      `policy directory ${dir} has more than 2 policy files: refused, nothing was changed (at most 2)`,
    );
  });
});
