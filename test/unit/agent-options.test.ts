// agent-options.test.ts — `meshredir agent`'s Kubernetes and --trace-ring-bytes options as users pass them
// (node dist/cli/main.js): validated before anything is loaded or pinned, each error naming its flag (exit 2).
// Needs `make build`; no root (every case fails before the agent touches the kernel).
import { describe, expect, it, beforeAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';

const CLI = join(import.meta.dirname, '..', '..', 'dist', 'cli', 'main.js');

describe('meshredir agent --kubernetes options', () => {
  let dir: string;
  beforeAll(() => {
    if (!existsSync(CLI)) throw new Error(`${CLI} is not built: run make build first`);
    dir = mkdtempSync(join(tmpdir(), 'meshredir-unit-'));
    return () => rmSync(dir, { recursive: true, force: true });
  });
  const run = (args: string[], env: Record<string, string> = {}) => {
    const base = { ...process.env };
    delete base.NODE_NAME;
    delete base.KUBERNETES_SERVICE_HOST;
    const r = spawnSync(process.execPath, [CLI, 'agent', '--policies', dir, '--state-dir', join(dir, 's'), ...args], {
      encoding: 'utf8',
      env: { ...base, ...env },
    });
    return { code: r.status, err: r.stderr };
  };

  it('the Kubernetes flags need --kubernetes', () => {
    const r = run(['--kubeconfig', '/x', '--kubelet-cgroup-root', '/k', '--no-kubernetes-guard']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--kubeconfig: needs --kubernetes/);
    expect(r.err).toMatch(/--kubelet-cgroup-root: needs --kubernetes/);
    expect(r.err).toMatch(/--kubernetes-guard: needs --kubernetes/);
  });

  it('a node name is required (flag or NODE_NAME) and must be one', () => {
    expect(run(['--kubernetes'])).toMatchObject({
      code: 2,
      err: expect.stringMatching(/--node-name: is required with --kubernetes \(or NODE_NAME/),
    });
    expect(run(['--kubernetes', '--node-name', 'Node_1'])).toMatchObject({
      code: 2,
      err: expect.stringMatching(/--node-name: is not a node name/),
    });
    expect(run(['--kubernetes'], { NODE_NAME: 'Bad Name' }).err).toMatch(/--node-name: is not a node name/);
  });

  it('paths are absolute, the driver one of auto|systemd|cgroupfs, the stall bounded', () => {
    const r = run(['--kubernetes', '--node-name', 'n1', '--kubelet-cgroup-root', 'kubelet', '--kubernetes-stall', '0']);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/--kubelet-cgroup-root: must be an absolute path/);
    expect(r.err).toMatch(/--kubernetes-stall: /);
    expect(run(['--kubernetes', '--node-name', 'n1', '--cgroup-driver', 'docker']).err).toMatch(
      /--cgroup-driver.*docker.*(systemd|cgroupfs)/s,
    );
  });

  it(
    'without --kubeconfig outside a cluster: says what is missing, before anything is loaded',
    { timeout: 20_000 },
    () => {
      const r = run(['--kubernetes', '--mode', 'iptables'], { NODE_NAME: 'n1' });
      expect(r.code).toBe(2);
      expect(r.err).toMatch(/KUBERNETES_SERVICE_HOST is not set.*pass --kubeconfig FILE/);
      const bad = run(['--kubernetes', '--mode', 'iptables', '--kubeconfig', join(dir, 'none')], { NODE_NAME: 'n1' });
      expect(bad).toMatchObject({ code: 2, err: expect.stringMatching(/--kubeconfig .*none: /) });
    },
  );

  it('--trace-ring-bytes: a power of two from a page (4096) to 64 MiB', () => {
    for (const [v, why] of [
      ['5000', /--trace-ring-bytes: must be a power of two/],
      ['2048', /--trace-ring-bytes: must be at least 4096/],
      ['134217728', /--trace-ring-bytes: must be at most 67108864/],
      ['1e4x', /--trace-ring-bytes: /],
    ] as const)
      expect(run(['--trace-ring-bytes', v]), v).toMatchObject({ code: 2, err: expect.stringMatching(why) });
  });
});
