// probe.kernel.test.ts — `meshredir probe` on the real kernel: here it must choose ebpf because
// meshredir's own programs load and attach; without CAP_BPF/CAP_SYS_ADMIN it must say bpf is unusable
// and choose iptables; an object the verifier rejects must not give a half-working eBPF mode.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync, copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir, release } from 'node:os';
import { Env, kernelDescribe, sh, cgroup2, CLI, ROOT } from './harness.js';
import { EBPF_REQUIRED, type ProbeReport } from '../../src/probe/probe.js';

kernelDescribe('probe', () => {
  let env: Env;
  const probe = async (extra: string[] = []) =>
    JSON.parse(await env.cliRun(['probe', '--json', '--cgroup-parent', env.cgRoot, ...extra])) as ProbeReport;
  const nothingLeft = () => {
    expect(readdirSync(env.cgRootDir).filter((n) => n.startsWith('meshredir-probe-'))).toEqual([]);
    expect(sh('bpftool', ['cgroup', 'tree', env.cgRootDir])).not.toMatch(/ mr_|mr_probe/);
  };

  beforeAll(() => {
    env = new Env();
  });
  afterAll(async () => {
    expect(await env?.teardown()).toEqual([]);
  });

  it("here: mode ebpf, because every hook it needs and meshredir's own programs load and attach", async () => {
    const r = await probe();
    expect(r.kernel).toBe(release());
    expect(r.cgroup2).toBe(cgroup2());
    for (const f of EBPF_REQUIRED) expect(r.features[f], `${f}: ${r.why[f]}`).toBe(true);
    expect(r.object, r.object?.why).toMatchObject({ loads: true, attaches: true });
    expect(r.features.iptables.nft || r.features.iptables.legacy).toBe(true);
    expect(r.mode).toBe('ebpf');
    nothingLeft();
  });

  it('without CAP_BPF and CAP_SYS_ADMIN: bpf false, mode iptables, with the failing operation', async () => {
    const out = await env.run(null, null, 'capsh', [
      '--drop=cap_bpf,cap_sys_admin,cap_perfmon',
      '--',
      '-c',
      `exec ${process.execPath} ${CLI} probe --json --cgroup-parent ${env.cgRoot}`,
    ]);
    const r = JSON.parse(out) as ProbeReport;
    expect(r.features.bpf).toBe(false);
    expect(r.why.bpf).toMatch(/bpf_map_create: EPERM/);
    expect(r.object).toMatchObject({ loads: false, attaches: false });
    expect(r.mode).toBe('iptables');
    expect(r.reason).toMatch(/^eBPF mode unavailable: bpf \(bpf_map_create: EPERM\)/);
    nothingLeft();
  });

  it('an object the verifier rejects gives mode iptables, naming the program and the verdict', async () => {
    // The same sources, with one program calling a helper its program type may not use.
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-test-obj-'));
    try {
      for (const f of readdirSync(join(ROOT, 'bpf'))) copyFileSync(join(ROOT, 'bpf', f), join(dir, f));
      const src = join(dir, 'getsockopt.bpf.c');
      const text = readFileSync(src, 'utf8');
      const anchor = '\tstruct bpf_sock *sk = ctx->sk;';
      expect(text).toContain(anchor);
      writeFileSync(
        src,
        text.replace(anchor, `\tchar b[4];\n\tbpf_skb_load_bytes((void *)ctx, 0, b, sizeof(b));\n${anchor}`),
      );
      const objs = readdirSync(dir)
        .filter((f) => f.endsWith('.bpf.c'))
        .map((f) => {
          const o = join(dir, f.replace(/\.c$/, '.o'));
          sh('clang', [
            '-g',
            '-O2',
            '-target',
            'bpf',
            '-D__TARGET_ARCH_x86',
            '-Wall',
            '-Werror',
            `-I${join(ROOT, 'build')}`,
            `-I${dir}`,
            '-c',
            join(dir, f),
            '-o',
            o,
          ]);
          return o;
        });
      sh('bpftool', ['gen', 'object', join(dir, 'variant.bpf.o'), ...objs]);
      const r = await probe(['--object', join(dir, 'variant.bpf.o')]);
      for (const f of EBPF_REQUIRED) expect(r.features[f]).toBe(true); // the hooks themselves work…
      expect(r.object).toMatchObject({ loads: false, attaches: false }); // …the programs do not
      expect(r.object!.why).toMatch(/mr_getsockopt.*failed to load.*cannot use helper bpf_skb_load_bytes/);
      expect(r.mode).toBe('iptables');
      expect(r.reason).toMatch(/^eBPF mode unavailable: .*variant\.bpf\.o/);
      nothingLeft();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
