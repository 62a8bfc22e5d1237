// options.test.ts — every numeric option has bounds, checked before anything runs (node dist/cli/main.js,
// no root): out of bounds is a usage error (exit 2) naming the flag and the bound. Needs `make build`.
import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });
  return { code: r.status, err: r.stderr };
};

describe('option bounds', () => {
  const agent = (...extra: string[]) => run('agent', '--policies', '/nonexistent', '--mode', 'iptables', ...extra);
  it.each([
    [['--interval', '0.001'], '--interval: must be at least 1 s (changes apply through the directory watch at once)'],
    [['--interval', '0'], '--interval: must be at least 1 s'],
    [['--interval', '-5'], '--interval: must be at least 1 s'],
    [['--interval', '86401'], '--interval: must be at most 86400 s (a day)'],
    [['--interval', 'soon'], '--interval: '],
    [['--max-connections', '0'], '--max-connections: '],
    [['--max-connections', '2000000'], '--max-connections: '],
    [['--max-accelerated', '1'], '--max-accelerated: '],
    [['--max-accelerated', '99999999'], '--max-accelerated: '],
    [['--lock-wait', '601'], '--lock-wait: '],
    [['--lock-wait', '-1'], '--lock-wait: '],
  ])('agent %j is refused', (args, message) => {
    const r = agent(...args);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toContain(message);
  });

  it('other commands: verify --dest port, bench --rounds/--duration, iptables-rules --lock-wait', () => {
    for (const [args, message] of [
      [['verify', '--cgroup', '/a', '--dest', '10.0.0.1:99999'], '--dest: the port must be 1-65535'],
      [['verify', '--cgroup', '/a', '--dest', '10.0.0.1:0'], '--dest: the port must be 1-65535'],
      [['bench', '--rounds', '0'], '--rounds: '],
      [['bench', '--duration', '1000'], '--duration: '],
      [['iptables-rules', '/nonexistent', '--lock-wait', '100000'], '--lock-wait: '],
    ] as const) {
      const r = run(...args);
      expect(r.code, `${args.join(' ')}: ${r.err}`).toBe(2);
      expect(r.err).toContain(message);
    }
  });

  it('--interval 1 (the floor) is accepted', () => {
    // Gets past option parsing: fails later, on the missing directory, with exit 1.
    const r = agent('--interval', '1', '--dry-run');
    expect(r.err).not.toContain('--interval');
  });
});
