// iptables-golden.kernel.test.ts — every golden file is input the real iptables accepts: for both
// backends (nft, legacy) and both families, `*-restore --test` accepts it and a real restore in a
// throwaway netns loads every rule of it, table by table (none dropped or merged). Root; netns mr-* only.
// The kernel resolves a -m cgroup path when the rule is added, so the cgroups the golden files name (all
// under /meshredir-test-golden) are created first and removed afterwards.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync } from 'node:fs';
import { join } from 'node:path';
import { Env, kernelDescribe, sh, ROOT, cgroup2 } from './harness.js';

const dir = join(ROOT, 'test', 'golden', 'iptables');
const files = readdirSync(dir).filter((f) => f.endsWith('.rules'));
const paths = [
  ...new Set(
    files.flatMap((f) => [...readFileSync(join(dir, f), 'utf8').matchAll(/--path "([^"]+)"/g)].map((m) => m[1]!)),
  ),
];

kernelDescribe('golden files against the real iptables-restore', () => {
  let env: Env;
  let ns: string;
  const made: string[] = [];
  beforeAll(() => {
    env = new Env();
    ns = env.netns('golden');
    for (const p of paths) {
      // Never outside the test's own name space of cgroups.
      if (!p.startsWith('/meshredir-test-golden/'))
        throw new Error(`golden cgroup ${p} is not under /meshredir-test-golden`);
      let d = cgroup2()!;
      for (const part of p.split('/').filter(Boolean)) {
        d = join(d, part);
        if (!existsSync(d)) {
          mkdirSync(d);
          made.push(d);
        }
      }
    }
  });
  afterAll(async () => {
    const problems = await env?.teardown();
    // Rules that named them went with the netns; the cgroups are empty.
    for (const d of made.reverse()) rmdirSync(d);
    expect(problems).toEqual([]);
  });

  it('golden files name cgroups (cgroup bypass) and marks', () => {
    expect(paths.length).toBeGreaterThan(0);
    expect(files.some((f) => readFileSync(join(dir, f), 'utf8').includes('-m mark --mark'))).toBe(true);
  });

  it('there are golden files for both families', () => {
    expect(files.filter((f) => f.endsWith('.v4.rules')).length).toBeGreaterThan(5);
    expect(files.filter((f) => f.endsWith('.v6.rules')).length).toBeGreaterThan(5);
  });

  for (const backend of ['nft', 'legacy'] as const) {
    for (const file of files) {
      const family = file.endsWith('.v6.rules') ? 6 : 4;
      const tool = `${family === 4 ? 'iptables' : 'ip6tables'}-${backend}`;
      it(`${file}: ${tool}-restore --test accepts it, and a real restore loads every rule`, () => {
        const text = readFileSync(join(dir, file), 'utf8');
        const tables = text
          .split('\n')
          .filter((l) => l.startsWith('*'))
          .map((l) => l.slice(1));
        expect(tables.length).toBeGreaterThan(0);
        const clean = tables.map((t) => `*${t}\nCOMMIT\n`).join('');
        sh('ip', ['netns', 'exec', ns, `${tool}-restore`, '--test', '--noflush'], { input: text });
        // Clean tables, then the real thing (the netns is ours alone).
        sh('ip', ['netns', 'exec', ns, `${tool}-restore`], { input: clean });
        sh('ip', ['netns', 'exec', ns, `${tool}-restore`, '--noflush'], { input: text });
        for (const table of tables) {
          const section = text.split(`*${table}\n`)[1]!.split('COMMIT')[0]!;
          checkTable(sh('ip', ['netns', 'exec', ns, `${tool}-save`, '-t', table]), section);
        }
        sh('ip', ['netns', 'exec', ns, `${tool}-restore`], { input: clean });
      });
    }
  }
});

/** The rules of one table as saved against the section of the golden file that made them. */
function checkTable(saved: string, section: string): void {
  const want = section.split('\n').filter((l) => l.startsWith('-A '));
  const got = saved.split('\n').filter((l) => l.startsWith('-A '));
  expect(got.length, saved).toBe(want.length);
  // Per chain, the same rules in the same order (iptables-save spells matches its own way,
  // so compare each rule's target and its comment).
  const byChain = (ls: string[]) => {
    const m: Record<string, string[]> = {};
    for (const l of ls)
      (m[l.split(' ')[1]!] ??= []).push(
        // (TPROXY without --on-ip is saved with the family's unspecified address.)
        `${/--comment (\S+)/.exec(l)?.[1]?.replace(/"/g, '')} ${l.slice(l.lastIndexOf('-j ')).replace(/ --on-ip (0\.0\.0\.0|::)(?= )/, '')}`,
      );
    return m;
  };
  expect(byChain(got)).toEqual(byChain(want));
}
