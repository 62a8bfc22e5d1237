// iptables-cli.test.ts — `meshredir iptables-rules` as users run it (node dist/cli/main.js): it
// prints exactly the restore input the agent applies, jumps included, and refuses (stderr, exit 1)
// what the iptables mode would not apply. Needs `make build` (dist/) first; no root.
import { describe, expect, it, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { parsePolicyText } from '../../src/policy/load.js';
import { renderRestore } from '../../src/modes/iptables/rules.js';

const ROOT = join(import.meta.dirname, '..', '..');
const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const golden = join(ROOT, 'test', 'golden', 'iptables');

const run = (...args: string[]) => {
  const r = spawnSync(process.execPath, [CLI, 'iptables-rules', ...args], { encoding: 'utf8' });
  return { code: r.status, out: r.stdout, err: r.stderr };
};
const doc = (name: string, spec: string) =>
  `apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: ${name} }\nspec:\n${spec}`;

describe('meshredir iptables-rules', () => {
  let dir: string;
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is not built: run make build first`);
    dir = mkdtempSync(join(tmpdir(), 'meshredir-unit-'));
    return () => rmSync(dir, { recursive: true, force: true });
  });

  it('prints the restore input per family, with the jumps into our chains, and nothing for an unused family', () => {
    const r = run(join(golden, 'minimal.yaml'));
    expect(r.code).toBe(0);
    const body = r.out
      .split('\n')
      .filter((l) => !l.startsWith('#'))
      .join('\n');
    const p = parsePolicyText(
      doc('minimal', '  cgroup: /pods/a\n  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n'),
      'm.yaml',
    ).policies[0]!;
    expect(body).toBe(renderRestore(p, { family: 4 }).trimEnd() + '\n');
    expect(r.out).toMatch(/^-A OUTPUT -p tcp -m comment --comment meshredir -j MESHREDIR_OUTPUT$/m);
    expect(r.out).toMatch(
      /^# minimal \(.*minimal\.yaml\), IPv4: the agent runs `iptables-<nft\|legacy>-restore --noflush -w 10` in the pod netns/m,
    );
    expect(r.out).not.toMatch(/IPv6/);
    const inbound = run(join(golden, 'istio.yaml'));
    expect(inbound.out).toMatch(/^-A PREROUTING -p tcp -m comment --comment meshredir -j MESHREDIR_INBOUND$/m);
    expect(inbound.out).toMatch(/IPv6: the agent runs `ip6tables-<nft\|legacy>-restore/);
  });

  it('refuses an unsupported policy: reason on stderr, none of its rules on stdout, exit 1', () => {
    writeFileSync(
      join(dir, 'bad.yaml'),
      doc('far-proxy', '  cgroup: /pods/b\n  proxy:\n    outbound: 10.0.0.1:15001\n    bypass: { uids: [1337] }\n'),
    );
    const r = run(join(dir, 'bad.yaml'));
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /far-proxy: not applied in iptables mode: spec\.proxy\.outbound: 10\.0\.0\.1:15001 — iptables REDIRECT can only send to a proxy listening in the pod's own network namespace/,
    );
    expect(r.out).toBe('');
    writeFileSync(
      join(dir, 'bad.yaml'),
      doc('lo2', '  cgroup: /pods/b\n  proxy:\n    outbound: 127.0.0.2:15001\n    bypass: { uids: [1337] }\n'),
    );
    const lo2 = run(join(dir, 'bad.yaml'));
    expect(lo2.code).toBe(1);
    expect(lo2.err).toMatch(
      /lo2: not applied in iptables mode: spec\.proxy\.outbound: 127\.0\.0\.2:15001 — iptables REDIRECT in the nat OUTPUT chain always rewrites to 127\.0\.0\.1/,
    );
    rmSync(join(dir, 'bad.yaml'));
  });

  it('refuses policies that would share one network namespace (same spec.netns, or nested cgroups), and prints the others', () => {
    const d = mkdtempSync(join(dir, 'shared-'));
    const base = (cg: string, netns?: string) =>
      `  cgroup: ${cg}\n${netns ? `  netns: ${netns}\n` : ''}  proxy:\n    outbound: 127.0.0.1:15001\n    bypass: { uids: [1337] }\n`;
    writeFileSync(join(d, 'a.yaml'), doc('a', base('/pods/a', '/run/netns/x')));
    writeFileSync(join(d, 'b.yaml'), doc('b', base('/pods/b', '/run/netns/x')));
    writeFileSync(join(d, 'c.yaml'), doc('c', base('/pods/c')));
    writeFileSync(join(d, 'd.yaml'), doc('d', base('/pods/c/container')));
    writeFileSync(join(d, 'e.yaml'), doc('e', base('/pods/e')));
    const r = run(d);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(
      /a: not applied in iptables mode: one policy per network namespace: spec\.netns \/run\/netns\/x is also that of policy b/,
    );
    expect(r.err).toMatch(/b: not applied in iptables mode: one policy per network namespace/);
    expect(r.err).toMatch(
      /c: not applied in iptables mode: one policy per network namespace: cgroup \/pods\/c and cgroup \/pods\/c\/container of policy d are one subtree/,
    );
    expect(r.err).toMatch(/d: not applied in iptables mode/);
    expect(r.out).toMatch(/^# e \(/m);
    expect(r.out).not.toMatch(/^# [abcd] \(/m);
  });
});
