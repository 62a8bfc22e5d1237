// policy-check.test.ts — `meshredir policy check` reads a directory as the agent does (limits, file kinds)
// and checks that the policies fit in the eBPF maps together (node dist/cli/main.js, no root).
import { afterAll, describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');
const doc = (name: string, uids: number[]) =>
  JSON.stringify({
    apiVersion: 'meshredir/v1',
    kind: 'RedirectPolicy',
    metadata: { name },
    spec: { cgroup: `/pods/${name}`, proxy: { outbound: '10.0.0.1:15001', bypass: { uids } } },
  });

describe('meshredir policy check', () => {
  const dir = mkdtempSync(join(tmpdir(), 'meshredir-unit-check-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('the same limits and file checks as the agent, and the capacity of the maps', () => {
    // 65 policies of 1,024 bypass uids: mr_owners (65,536) holds 64 of them.
    const uids = Array.from({ length: 1024 }, (_, i) => 1000 + i);
    for (let i = 0; i < 65; i++) writeFileSync(join(dir, `p${String(i).padStart(2, '0')}.yaml`), doc(`p${i}`, uids));
    execFileSync('mkfifo', [join(dir, 'fifo.yaml')]);
    symlinkSync('/dev/zero', join(dir, 'zero.yaml'));
    writeFileSync(join(dir, 'huge.yaml'), '');
    truncateSync(join(dir, 'huge.yaml'), 5 * 1024 * 1024);
    const r = spawnSync(process.execPath, [CLI, 'policy', 'check', dir, '--json'], {
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.status, r.stderr).toBe(1);
    const out = JSON.parse(r.stdout) as {
      policies: { name: string }[];
      errors: { file: string; message: string }[];
      warnings: { file: string; message: string }[];
    };
    expect(out.policies).toHaveLength(64);
    expect(out.errors).toEqual([
      {
        file: join(dir, 'huge.yaml'),
        path: '',
        message: '5 MiB: larger than the 4 MiB limit per policy file; not read',
      },
      {
        file: join(dir, 'p64.yaml'),
        path: '',
        message:
          'policy p64: does not fit in the eBPF maps: mr_owners would hold 66,560 entries, more than its 65,536 (this policy needs 1,024, the policies admitted before it 65,536); not applied',
      },
    ]);
    expect(out.warnings.map((w) => w.message)).toEqual([
      'skipped: a FIFO, not a regular file',
      'skipped: a symlink to /dev/zero, a character device, not a regular file',
    ]);
  });
});
