// iptables-golden.kernel.test.ts — every golden file is input the real iptables accepts: for both
// backends (nft, legacy) and both families, `*-restore --test` accepts it and a real restore in a
// throwaway netns loads every rule of it, table by table (none dropped or merged). Root; netns mr-* only.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Env, kernelDescribe, sh, ROOT } from './harness.js';

const dir = join(ROOT, 'test', 'golden', 'iptables');
const files = readdirSync(dir).filter((f) => f.endsWith('.rules'));

kernelDescribe('golden files against the real iptables-restore', () => {
  let env: Env;
  let ns: string;
  beforeAll(() => {
    env = new Env();
    ns = env.netns('golden');
  });
  afterAll(async () => {
    const problems = await env?.teardown();
    expect(problems).toEqual([]);
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
