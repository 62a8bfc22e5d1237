// probe.kernel.test.ts — `meshredir probe` on the real kernel: here it must choose ebpf because
// meshredir's own programs load and attach; without CAP_BPF/CAP_SYS_ADMIN it must say bpf is unusable
// and choose iptables; an object the verifier rejects must not give a half-working eBPF mode.
import { afterAll, beforeAll, expect, it } from 'vitest';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { tmpdir, release } from 'node:os';
import { Env, kernelDescribe, sh, cgroup2, CLI, ROOT, ORIGDST_PROXY, policyYaml } from './harness.js';
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

  /** meshredir.bpf.o built from the same sources with `insert` put before `anchor` in `file`, by the
   * project's own Makefile rules (the same clang flags per object, bpftool gen object), in a copy. */
  const variant = (dir: string, file: string, anchor: string, insert: string): string => {
    sh('cp', ['-r', join(ROOT, 'bpf'), join(dir, 'bpf')]);
    const src = join(dir, 'bpf', file);
    const text = readFileSync(src, 'utf8');
    expect(text).toContain(anchor);
    writeFileSync(src, text.replace(anchor, `${insert}${anchor}`));
    sh('make', ['-s', '-C', dir, '-f', join(ROOT, 'Makefile'), 'build/meshredir.bpf.o']);
    return join(dir, 'build', 'meshredir.bpf.o');
  };

  it('an object the verifier rejects gives mode iptables, naming the program and the verdict', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-test-obj-'));
    try {
      // The same sources, with one program calling a helper its program type may not use.
      const obj = variant(
        dir,
        'getsockopt.bpf.c',
        '\tstruct bpf_sock *sk = ctx->sk;',
        '\tchar b[4];\n\tbpf_skb_load_bytes((void *)ctx, 0, b, sizeof(b));\n',
      );
      const r = await probe(['--object', obj]);
      for (const f of EBPF_REQUIRED) expect(r.features[f]).toBe(true); // the hooks themselves work…
      expect(r.object).toMatchObject({ loads: false, attaches: false }); // …the programs do not
      expect(r.object!.why).toMatch(/mr_getsockopt.*failed to load.*cannot use helper bpf_skb_load_bytes/);
      expect(r.mode).toBe('iptables');
      expect(r.reason).toMatch(/^eBPF mode unavailable: /);
      expect(r.reason).toContain(obj);
      nothingLeft();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an object whose fast path the verifier rejects still gives mode ebpf, without the fast path, and says why', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-test-obj-'));
    try {
      const obj = variant(
        dir,
        'skmsg.bpf.c',
        '\tstruct bpf_sock *sk = msg->sk;',
        '\tchar b[4];\n\tbpf_skb_load_bytes((void *)msg, 0, b, sizeof(b));\n',
      );
      const r = await probe(['--object', obj]);
      expect(r.object, r.object?.why).toMatchObject({ loads: true, attaches: true });
      expect(r.object!.fastPath).toMatchObject({
        loads: false,
        why: expect.stringMatching(/mr_skmsg.*failed to load.*cannot use helper bpf_skb_load_bytes/),
      });
      expect(r.mode).toBe('ebpf');
      expect(r.reason).toMatch(/without the sk_msg fast path/);
      nothingLeft();
      // The agent with that object: redirection works, the fast path is off and says why.
      const pod = env.netns('fp');
      const app = env.cgroup('fp/app');
      const bypass = env.cgroup('fp/proxy');
      const px = env.spawn(pod, bypass, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'report']);
      await env.waitListening(pod, 15001, 'proxy', px);
      const pdir = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
      try {
        writeFileSync(
          join(pdir, 'fp.yaml'),
          policyYaml({
            name: 'fp',
            cgroup: `${env.cgRoot}/fp`,
            outbound: '127.0.0.1:15001',
            bypassCgroups: [bypass],
            accelerate: true,
          }),
        );
        const agent = await env.agent(pdir, ['--object', obj]);
        expect(agent.err).toMatch(/mr_skmsg not attached \(the fast path does not load here: .*mr_skmsg/);
        const c = await env.client(pod, app, ['connect', '10.9.9.9', '80']);
        expect(c.data).toMatch(/^ORIGDST 10\.9\.9\.9 80 PEER 127\.0\.0\.1 \d+$/);
        const st = JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as {
          fastPath: string;
          links: { name: string }[];
          maps: { map: string }[];
          policies: { accelerate: boolean }[];
        };
        expect(st.fastPath).toMatch(/^unavailable: /);
        expect(st.links.map((l) => l.name)).not.toContain('mr_skmsg');
        expect(st.maps.map((m) => m.map)).not.toContain('mr_sockhash');
        expect(st.policies[0]!.accelerate).toBe(false);
        await env.stop(agent);
        await env.cliRun(env.cleanupArgs());
      } finally {
        rmSync(pdir, { recursive: true, force: true });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
