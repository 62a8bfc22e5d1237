// agent.kernel.test.ts — the agent unattended: SIGKILL under load, a crash between load and attach,
// apply/apply/cleanup/apply, drift repaired within an interval, invalid files never break what works.
import { expect, it } from 'vitest';
import {
  mkdtempSync,
  rmSync,
  writeFileSync,
  statSync,
  readdirSync,
  readFileSync,
  existsSync,
  renameSync,
} from 'node:fs';
import { join } from 'node:path';
import { tmpdir } from 'node:os';
import { Env, kernelDescribe, policyYaml, sh, waitFor, OBJECT, type Proc } from './harness.js';
import { useLab } from './lab.js';
import { Pins } from '../../src/modes/ebpf/pins.js';
import { PROGRAMS, ON_DEMAND_PROGRAMS, type ProgramName, POLICY_MAPS } from '../../src/bpf/abi.js';
import { BpfObject } from '../../src/bpf/object.js';

kernelDescribe('node agent', () => {
  let env: Env;
  let dir: string;
  let node: string, podA: string, up: string;
  let cgA: string, cgProxy: string;
  const agents: Proc[] = [];

  const startAgent = async (extra: string[] = []) => {
    const a = await env.agent(dir, extra);
    agents.push(a);
    return a;
  };
  const mode = () => new Pins(env.bpffs);
  /** Everything the agent wrote, as bytes, plus which programs are attached where. */
  const snapshot = () => {
    const m = mode();
    const maps = Object.fromEntries(
      POLICY_MAPS.map((n) => {
        const map = m.openMap(n);
        try {
          return [
            n,
            map
              .rawEntries()
              .map(([k, v]) => `${k.toString('hex')}=${v.toString('hex')}`)
              .filter((e) => !/=0+$/.test(e))
              .sort(),
          ];
        } finally {
          map.close();
        }
      }),
    );
    return { maps, links: m.links().map((l) => ({ name: l.name, attached: l.attached, cgroupId: l.cgroupId })) };
  };
  /** The agent's log messages (one JSON object per line on stderr). */
  const messages = (a: Proc): string[] =>
    a.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => (JSON.parse(l) as { msg: string }).msg);
  const viaProxy = async () => (await env.client(podA, cgA, ['connect', '10.200.0.100', '8080'])).data ?? '';

  useLab(
    {
      bridge: ['10.200.0.1/24'],
      pods: { a: ['10.200.0.11/24'], up: ['10.200.0.100/24'] },
      cgroups: ['pod-a', 'proxy'],
      beforeTeardown: async () => {
        for (const a of agents) await env.stop(a, 'SIGKILL');
      },
    },
    async (lab) => {
      ({ env, dir, node } = lab);
      ({ a: podA, up } = lab.ns);
      ({ 'pod-a': cgA, proxy: cgProxy } = lab.cg);
      await env.server(up, '10.200.0.100', 8080, 'up');
      await env.haproxy(node, cgProxy, '10.200.0.1:15001', 15001);
      lab.policy(
        'a',
        policyYaml({
          name: 'pod-a',
          cgroup: cgA,
          outbound: '10.200.0.1:15001',
          bypassCgroups: [cgProxy],
          outboundSpec: { excludePorts: [9090] },
        }),
      );
    },
  );

  it('pins are root-owned, 0600 (directories 0700); an in-sync reconcile writes nothing', async () => {
    const a = await startAgent(['--interval', '1']); // the floor
    await new Promise((r) => setTimeout(r, 2500)); // two periodic reconciles
    expect(messages(a).filter((m) => m === 'reconciled')).toHaveLength(1); // only the start wrote
    for (const sub of ['maps', 'links']) {
      expect(statSync(join(env.bpffs, sub)).mode & 0o777).toBe(0o700);
      for (const f of readdirSync(join(env.bpffs, sub))) {
        const st = statSync(join(env.bpffs, sub, f));
        expect([st.mode & 0o777, st.uid]).toEqual([0o600, 0]);
      }
    }
    await env.stop(a);
  });

  it('SIGKILL and restart under load: thousands of connections, none fails or goes unredirected', async () => {
    let a = await startAgent();
    const loop = env.spawn(
      podA,
      cgA,
      process.execPath,
      [join(env.toolsDir, 'client.mjs'), 'until-stdin', '10.200.0.100', '8080', 'up 10.200.0.1 '],
      { stdin: true },
    );
    const done = () => Number([...loop.err.matchAll(/progress (\d+)/g)].pop()?.[1] ?? 0);
    // Phases by count, not by time: ≥ 700 connections before the kill, while no agent runs, and after
    // the restart (which itself happens under load).
    await waitFor(() => done() >= 700, 'connections before the kill', loop, 60_000);
    await env.stop(a, 'SIGKILL');
    const atKill = done();
    await waitFor(() => done() >= atKill + 700, 'connections while the agent is dead', loop, 60_000);
    a = await startAgent();
    const atStart = done();
    await waitFor(() => done() >= atStart + 700, 'connections after the restart', loop, 60_000);
    loop.child.stdin!.end();
    await loop.exited;
    const r = JSON.parse(loop.out) as {
      total: number;
      ok: number;
      failed: number;
      unexpected: number;
      firstError: string | null;
      firstUnexpected: string | null;
    };
    expect(r.failed, r.firstError ?? '').toBe(0);
    expect(r.unexpected, r.firstUnexpected ?? '').toBe(0);
    expect(r.total).toBeGreaterThanOrEqual(2000);
    expect(r.ok).toBe(r.total);
    await env.stop(a);
  });

  /** An agent on the lab's policies with MESHREDIR_FAULT set (src/util/faults.ts). */
  const faultyAgent = (fault: string, extra: string[] = []) =>
    env.spawn(null, null, process.execPath, [env.cliPath, ...env.agentArgs(dir, extra)], {
      env: { MESHREDIR_FAULT: fault },
    });

  it('a crash between loading and attaching converges to the same state as a clean start', async () => {
    const clean = snapshot();
    await env.cliRun(env.cleanupArgs());
    const faulty = faultyAgent('after-load');
    await faulty.exited;
    expect(faulty.child.signalCode).toBe('SIGKILL');
    expect(readdirSync(join(env.bpffs, 'links'))).toEqual([]); // died before attaching
    const a = await startAgent();
    expect(snapshot()).toEqual({ ...clean, links: clean.links });
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
  });

  /** Names of meshredir programs attached at the test root, as the kernel reports them (bpftool). */
  const attachedAtRoot = () =>
    sh('bpftool', ['cgroup', 'show', env.cgRootDir])
      .split('\n')
      .map((l) => / (mr_\w+)\s*$/.exec(l)?.[1])
      .filter((x): x is string => Boolean(x))
      .sort();
  it('a crash between attaches never leaves a connect hook without sockops and getsockopt; a restart converges', async () => {
    await env.stop(await startAgent());
    const clean = snapshot();
    // Attach order (PROGRAMS): everything that answers for a redirected connection, then the connect hooks
    // (not mr_setsockopt: no policy here accelerates, so no load attaches it).
    const order = (Object.keys(PROGRAMS) as ProgramName[]).filter((x) => !ON_DEMAND_PROGRAMS.includes(x));
    const cgroupPrograms = order.filter((x) => PROGRAMS[x].attach !== 'sk_msg');
    for (let n = 1; n < order.length; n++) {
      await env.cliRun(env.cleanupArgs());
      const faulty = faultyAgent(`between-attach:${n}`);
      await faulty.exited;
      expect(faulty.child.signalCode, faulty.err).toBe('SIGKILL');
      const names = attachedAtRoot();
      expect(names).toEqual(
        order
          .slice(0, n)
          .filter((x) => PROGRAMS[x].attach !== 'sk_msg')
          .sort(),
      );
      if (names.some((x) => x.startsWith('mr_connect')))
        expect(names).toEqual(expect.arrayContaining(['mr_sockops', 'mr_getsockopt']));
      const a = await startAgent();
      expect(snapshot()).toEqual(clean);
      expect(attachedAtRoot()).toEqual([...cgroupPrograms].sort());
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      await env.stop(a);
    }
  });

  it('an attach that fails undoes what that load attached, and never leaves a connect hook without its dependencies', async () => {
    await env.cliRun(env.cleanupArgs());
    let p = faultyAgent('fail-attach:mr_connect6');
    expect(await p.exited).toBe(1);
    const before6 = (Object.keys(PROGRAMS) as ProgramName[])
      .slice(0, Object.keys(PROGRAMS).indexOf('mr_connect6'))
      .filter((x) => !ON_DEMAND_PROGRAMS.includes(x))
      .reverse();
    expect(p.err).toContain(`attach mr_connect6: injected failure`);
    expect(p.err).toContain(`; detached what this load had attached (${before6.join(', ')})`);
    expect(attachedAtRoot()).toEqual([]);
    expect(readdirSync(join(env.bpffs, 'links'))).toEqual([]);
    // Installed and working; then getsockopt's link is detached behind our back and cannot be re-attached:
    // the adopted connect hooks must go too, so connections go direct rather than to a proxy that
    // cannot learn their destination.
    let a = await startAgent();
    await env.stop(a);
    sh('bpftool', [
      'link',
      'detach',
      'id',
      String(
        mode()
          .links()
          .find((l) => l.name === 'mr_getsockopt')!.id,
      ),
    ]);
    p = faultyAgent('fail-attach:mr_getsockopt');
    expect(await p.exited).toBe(1);
    expect(p.err).toMatch(
      /nothing had been attached by this load; detached mr_connect4, mr_connect6 too: without mr_getsockopt redirected connections could not be resolved/,
    );
    expect(attachedAtRoot().filter((x) => x.startsWith('mr_connect'))).toEqual([]);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /); // direct, not broken
    a = await startAgent();
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
  });

  it('apply, apply, cleanup, apply: the same state each time; cleanup leaves nothing', async () => {
    const states = [];
    for (let i = 0; i < 2; i++) {
      const a = await startAgent();
      states.push(snapshot());
      await env.stop(a);
    }
    await env.cliRun(env.cleanupArgs());
    expect(
      sh('bpftool', ['cgroup', 'show', env.cgRootDir])
        .trim()
        .split('\n')
        .filter((l) => / mr_/.test(l)),
    ).toEqual([]);
    expect(sh('sh', ['-c', `ls -A ${env.bpffs} 2>/dev/null || true`]).trim()).toBe('');
    expect(existsSync(env.stateDir)).toBe(false); // agent.json too
    const a = await startAgent();
    states.push(snapshot());
    expect(states[1]).toEqual(states[0]);
    expect(states[2]!.maps).toEqual(states[0]!.maps);
    await env.stop(a);
  });

  it('a detached link and a deleted policy entry are restored within one interval', async () => {
    const a = await startAgent(['--interval', '1']);
    const before = snapshot();
    const link = mode()
      .links()
      .find((l) => l.name === 'mr_connect4')!;
    sh('bpftool', ['link', 'detach', 'id', String(link.id)]);
    const cg = mode().openMap('mr_cgroups');
    try {
      for (const k of cg.keys()) cg.delete(k);
    } finally {
      cg.close();
    }
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /); // broken: goes direct
    await waitFor(
      () => {
        const s = snapshot();
        return JSON.stringify(s.maps) === JSON.stringify(before.maps) && s.links.every((l) => l.attached);
      },
      'drift repaired',
      a,
      5000,
    );
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
  });

  it('a changed object replaces the program inside the existing link (bpf_link_update), nothing else', async () => {
    let a = await startAgent();
    const before = mode().links();
    await env.stop(a);
    // The same sources built for BPF ISA v3 (ALU32, JMP32): a different mr_connect4, identical everything
    // else. (-O1 was used before; since the parent-pointer cgroup walk its code is refused by the verifier.)
    const out = mkdtempSync(join(tmpdir(), 'meshredir-test-obj-'));
    const build = join(env.rootDir, 'build');
    sh('clang', [
      '-g',
      '-O2',
      '-mcpu=v3',
      '-target',
      'bpf',
      '-D__TARGET_ARCH_x86',
      '-Wall',
      '-Werror',
      `-I${build}`,
      `-I${join(env.rootDir, 'bpf')}`,
      '-c',
      join(env.rootDir, 'bpf', 'connect4.bpf.c'),
      '-o',
      join(out, 'connect4.bpf.o'),
    ]);
    // The object's parts are those of bpf/*.bpf.c (build/ also holds test and profiling objects).
    const others = readdirSync(join(env.rootDir, 'bpf'))
      .filter((n) => n.endsWith('.bpf.c') && n !== 'connect4.bpf.c')
      .map((n) => join(build, n.replace(/\.c$/, '.o')));
    sh('bpftool', ['gen', 'object', join(out, 'variant.bpf.o'), join(out, 'connect4.bpf.o'), ...others]);
    try {
      a = await startAgent(['--object', join(out, 'variant.bpf.o')]);
      const after = mode().links();
      const c4 = (l: typeof after) => l.find((x) => x.name === 'mr_connect4')!;
      expect(c4(after).id).toBe(c4(before).id); // same link: never detached
      expect(c4(after).progTag).not.toBe(c4(before).progTag);
      for (const l of after.filter((x) => x.name !== 'mr_connect4'))
        expect(l.progId).toBe(before.find((x) => x.name === l.name)!.progId);
      expect(messages(a).join('\n')).toMatch(/programs loaded and attached/);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      await env.stop(a);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
  });

  const pinnedId = (name: string) =>
    (JSON.parse(sh('bpftool', ['map', 'show', 'pinned', join(env.bpffs, 'maps', name), '-j'])) as { id: number }).id;
  /** The meshredir maps a program uses, name → id, as the kernel reports them (bpftool). */
  const progMaps = (progId: number) =>
    Object.fromEntries(
      (
        (JSON.parse(sh('bpftool', ['prog', 'show', 'id', String(progId), '-j'])) as { map_ids?: number[] }).map_ids ??
        []
      )
        .map(
          (id) =>
            [
              (JSON.parse(sh('bpftool', ['map', 'show', 'id', String(id), '-j'])) as { name: string }).name,
              id,
            ] as const,
        )
        .filter(([n]) => n.startsWith('mr_')),
    );

  it('deleted map pins while the links are intact are pinned again from the running programs within one interval', async () => {
    const a = await startAgent(['--interval', '1']);
    const names = ['mr_cgroups', 'mr_orig'];
    const ids = names.map(pinnedId);
    for (const n of names) rmSync(join(env.bpffs, 'maps', n));
    // (An interval reconcile may fall between the two deletions: one message or two.)
    const repinned = () =>
      messages(a)
        .filter((m) =>
          /^map pins .* had been deleted; pinned again from the maps the attached programs use \(contents kept\)$/.test(
            m,
          ),
        )
        .join(' ');
    await waitFor(() => names.every((n) => repinned().includes(n)), 'map pins restored', a, 5000);
    expect(names.map(pinnedId)).toEqual(ids); // the same maps: contents kept, programs unchanged
    await new Promise((r) => setTimeout(r, 1500)); // more reconciles: none may fail
    expect(a.err).not.toMatch(/reconcile_failed/);
    expect(statSync(join(env.bpffs, 'maps', 'mr_cgroups')).mode & 0o777).toBe(0o600);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
  });

  it('map pins lost and one replaced by another map while links remain: the links are updated to programs on the pinned maps', async () => {
    let a = await startAgent();
    await env.stop(a);
    const old = mode().openMap('mr_cgroups');
    try {
      for (const k of old.keys()) old.delete(k);
    } finally {
      old.close();
    }
    for (const n of readdirSync(join(env.bpffs, 'maps'))) rmSync(join(env.bpffs, 'maps', n));
    // Another (empty, same layout) mr_cgroups appears at the pin; the attached programs still use the old one.
    const obj = BpfObject.open(OBJECT);
    try {
      obj.load();
      obj.pinMap('mr_cgroups', join(env.bpffs, 'maps', 'mr_cgroups'));
    } finally {
      obj.close();
    }
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /); // the programs read the old, emptied map: direct
    a = await startAgent();
    const loaded = a.err
      .split('\n')
      .filter((l) => l.includes('"event":"loaded"'))
      .map(
        (l) => JSON.parse(l) as { rebound: Record<string, string>; repinnedMaps: string[]; adoptedLinks: string[] },
      )[0]!;
    expect(Object.keys(loaded.rebound)).toEqual(expect.arrayContaining(['mr_connect4', 'mr_connect6']));
    expect(loaded.rebound.mr_connect4).toMatch(/^uses map ids mr_cgroups \d+ → \d+$/);
    expect(loaded.repinnedMaps).toContain('mr_policies');
    for (const l of mode().links()) {
      const used = progMaps(l.progId!);
      for (const [name, id] of Object.entries(used))
        expect(`${l.name}: ${name} ${id}`).toBe(`${l.name}: ${name} ${pinnedId(name)}`);
    }
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    await env.stop(a);
  });

  it('a pinned map whose struct changed at the same size (mr_sk fields swapped) is refused; the links stay attached and working', async () => {
    let a = await startAgent();
    await env.stop(a);
    const before = mode().links();
    // The same sources with struct mr_sk's flags and pad swapped: every size equal, the layout not.
    const out = mkdtempSync(join(tmpdir(), 'meshredir-test-obj-'));
    try {
      sh('cp', ['-r', join(env.rootDir, 'bpf'), join(out, 'bpf')]);
      const hdr = join(out, 'bpf', 'mr_abi.h');
      const text = readFileSync(hdr, 'utf8');
      const swapped = text.replace(
        /(struct mr_sk \{[^}]*?)\t__u32 flags;\n\t__u32 pad;\n/,
        '$1\t__u32 pad;\n\t__u32 flags;\n',
      );
      expect(swapped).not.toBe(text);
      writeFileSync(hdr, swapped);
      // Built by the project's own Makefile rules (same clang flags, bpftool gen object), in the copy.
      sh('make', ['-s', '-C', out, '-f', join(env.rootDir, 'Makefile'), 'build/meshredir.bpf.o']);
      const p = env.cli(env.agentArgs(dir, ['--object', join(out, 'build', 'meshredir.bpf.o')]));
      await waitFor(() => p.child.exitCode !== null, 'the agent refuses and exits', undefined, 30_000);
      expect(await p.exited).toBe(1);
      expect(p.err).toMatch(
        /pinned map \S+\/maps\/mr_sk has another layout than \S+ \(same sizes, different types: value\.flags: at byte 80 in the pinned map, at byte 84 in the object \(struct mr_sk members in order: pinned orig, key, flags, pad; object orig, key, pad, flags\)\)\. Adopting it would make the new programs misread/,
      );
      expect(p.err).toMatch(/run 'meshredir cleanup --bpffs /);
    } finally {
      rmSync(out, { recursive: true, force: true });
    }
    const after = mode().links();
    expect(after.map((l) => [l.name, l.id, l.progId, l.attached])).toEqual(
      before.map((l) => [l.name, l.id, l.progId, true]),
    );
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    a = await startAgent(); // the normal object is still adopted as before
    expect(
      mode()
        .links()
        .map((l) => l.id),
    ).toEqual(before.map((l) => l.id));
    await env.stop(a);
  });

  it('a second policy claiming the applied cgroup (by an alias spelling) is rejected alone, naming both files', async () => {
    const a = await startAgent(['--interval', '1']);
    const aYaml = join(dir, 'a.yaml');
    // /./ and // spell the same cgroup: the schema normalises them, so this is a duplicate claim.
    writeFileSync(
      join(dir, 'c.yaml'),
      policyYaml({ name: 'pod-c', cgroup: cgA.replace('/pod-a', '//./pod-a/'), outbound: '10.200.0.1:15001' }),
    );
    await waitFor(() => messages(a).some((m) => m.includes('c.yaml: spec.cgroup')), 'conflict reported', a, 5000);
    expect(messages(a)).toContainEqual(
      `${join(dir, 'c.yaml')}: spec.cgroup: ${cgA} is already claimed by ${aYaml} (pod-a), which is applied and stays; pod-c from ${join(dir, 'c.yaml')} is not applied`,
    );
    await new Promise((r) => setTimeout(r, 1500)); // more reconciles: the incumbent must survive them
    expect(mode().slots().has('pod-a')).toBe(true);
    expect(mode().slots().has('pod-c')).toBe(false);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    rmSync(join(dir, 'c.yaml'));
    await env.stop(a);
  });

  it('a 253-character policy name is stored whole: status shows it and its slot survives a restart', async () => {
    const long = `l${'o'.repeat(251)}g`;
    const cgL = env.cgroup('pod-long');
    writeFileSync(join(dir, 'long.yaml'), policyYaml({ name: long, cgroup: cgL, outbound: '10.200.0.1:15001' }));
    try {
      let a = await startAgent();
      const slot = mode().slots().get(long);
      expect(slot).toBeGreaterThan(0);
      await env.stop(a);
      a = await startAgent();
      expect(mode().slots().get(long)).toBe(slot);
      const st = JSON.parse(
        await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir]),
      ) as { policies: { name: string; slot: number; cgroup: string }[] };
      expect(st.policies).toContainEqual(expect.objectContaining({ name: long, slot, cgroup: cgL }));
      await env.stop(a);
    } finally {
      rmSync(join(dir, 'long.yaml'));
    }
  });

  it('the last applied content survives a restart: a file broken while the agent was down keeps its policy', async () => {
    const aYaml = join(dir, 'a.yaml');
    const good = readFileSync(aYaml, 'utf8');
    let a = await startAgent();
    await env.stop(a);
    const state = join(env.stateDir, 'agent.json');
    expect(statSync(env.stateDir).mode & 0o777).toBe(0o700);
    expect([statSync(state).mode & 0o777, statSync(state).uid]).toEqual([0o600, 0]);
    const saved = JSON.parse(readFileSync(state, 'utf8')) as {
      applied: Record<string, { text: string; policies: string[] }>;
    };
    expect(saved.applied[aYaml]).toEqual({ text: good, policies: ['pod-a'] });
    writeFileSync(
      aYaml,
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: pod-a }\nspec: { cgroup: 5 }\n',
    );
    try {
      a = await startAgent();
      expect(messages(a)).toContainEqual(`${aYaml}: not applied; keeping its previously applied content (pod-a)`);
      expect(mode().slots().has('pod-a')).toBe(true);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      const st = JSON.parse(
        await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir]),
      ) as {
        agent: { mode: string; requested: string; reason: string; lastReconcile: { ok: boolean; errors: string[] } };
      };
      expect(st.agent).toMatchObject({ mode: 'ebpf', requested: 'ebpf', reason: '--mode ebpf given' });
      expect(st.agent.lastReconcile.ok).toBe(true);
      expect(st.agent.lastReconcile.errors).toContainEqual(expect.stringMatching(/a\.yaml: spec\.cgroup: /));
      await env.stop(a);
    } finally {
      writeFileSync(aYaml, good);
    }
  });

  /** The agent's log events (one JSON object per line on stderr). */
  const events = (a: Proc) =>
    a.err
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { event?: string; reason?: string; msg: string });
  /** Reconciles that wrote something, other than at start. */
  const changes = (a: Proc) => events(a).filter((e) => e.event === 'reconciled' && e.reason !== 'start');
  const podAYaml = (excludePorts: number[]) =>
    policyYaml({
      name: 'pod-a',
      cgroup: cgA,
      outbound: '10.200.0.1:15001',
      bypassCgroups: [cgProxy],
      outboundSpec: { excludePorts },
    });

  it('with a 600 s interval, edits apply through the directory watch, also after the directory is replaced', async () => {
    const aYaml = join(dir, 'a.yaml');
    const good = readFileSync(aYaml, 'utf8');
    const fresh = `${dir}-new`;
    const old = `${dir}-old`;
    const a = await startAgent(['--interval', '600']);
    const edit = async (text: string, target = aYaml) => {
      const n = changes(a).length;
      writeFileSync(target, text);
      await waitFor(() => changes(a).length > n, `reconcile after writing ${target}`, a, 10_000);
    };
    try {
      await edit(podAYaml([9090, 8080]));
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /); // 8080 excluded now: direct
      // Replace the whole directory (move it away, move another in): the watch must follow.
      sh('cp', ['-a', dir, fresh]);
      writeFileSync(join(fresh, 'a.yaml'), good);
      const n = changes(a).length;
      renameSync(dir, old);
      renameSync(fresh, dir);
      await waitFor(() => changes(a).length > n, 'reconcile after the directory was replaced', a, 10_000);
      rmSync(old, { recursive: true, force: true });
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      // Edits inside the new directory are seen: the watch was re-armed on it.
      await edit(podAYaml([9090, 8080]));
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
      await edit(good);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
      expect(changes(a).map((e) => e.reason)).not.toContain('interval');
      expect(messages(a)).toContainEqual(`${dir} was replaced; watching the new directory`);
    } finally {
      if (!existsSync(dir)) renameSync(old, dir);
      rmSync(fresh, { recursive: true, force: true });
      rmSync(old, { recursive: true, force: true });
      writeFileSync(aYaml, good);
      await env.stop(a);
    }
  });

  it('a failing directory watch is reported and re-armed; edits still apply', async () => {
    const aYaml = join(dir, 'a.yaml');
    const good = readFileSync(aYaml, 'utf8');
    const a = faultyAgent('watch-error', ['--interval', '600']);
    agents.push(a);
    try {
      await waitFor(() => messages(a).includes(`watching ${dir} again`), 'watch re-armed after the error', a, 15_000);
      expect(messages(a)).toContainEqual(
        `watching ${dir} failed: injected watch error (MESHREDIR_FAULT=watch-error); watching it again`,
      );
      const n = changes(a).length;
      writeFileSync(aYaml, podAYaml([9090, 8080]));
      await waitFor(() => changes(a).length > n, 'reconcile after the edit', a, 10_000);
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
    } finally {
      writeFileSync(aYaml, good);
      await env.stop(a);
    }
  });

  it('--cleanup-on-exit: SIGTERM removes links, pins and the state file; connections go direct', async () => {
    const a = await startAgent(['--cleanup-on-exit']);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    expect(await env.stop(a)).toBe(0);
    expect(messages(a)).toContain('removed everything meshredir made');
    expect(attachedAtRoot()).toEqual([]);
    expect(existsSync(env.bpffs)).toBe(false);
    expect(existsSync(join(env.stateDir, 'agent.json'))).toBe(false);
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.11 /);
  });

  it('--dry-run (eBPF) prints the real cgroup ids and names missing cgroups; a policy outside --cgroup-root is warned about in the log and status', async () => {
    const d = mkdtempSync(join(tmpdir(), 'meshredir-test-policies-'));
    const missing = `${env.cgRoot}/pod-missing`;
    const elsewhere = `${env.cgRoot}-elsewhere/pod`; // not below the agent's --cgroup-root (and never created)
    writeFileSync(join(d, 'a.yaml'), podAYaml([9090]));
    writeFileSync(join(d, 'm.yaml'), policyYaml({ name: 'pod-m', cgroup: missing, outbound: '10.200.0.1:15001' }));
    writeFileSync(join(d, 'o.yaml'), policyYaml({ name: 'pod-o', cgroup: elsewhere, outbound: '10.200.0.1:15001' }));
    try {
      const had = existsSync(env.bpffs);
      const before = had ? snapshot() : null;
      const p = env.cli(env.agentArgs(d, ['--dry-run']));
      expect(await p.exited, p.err).toBe(0);
      const out = JSON.parse(p.out) as {
        entries: { mr_cgroups: [string, { kind: number; slot: number }][] };
        unresolved: unknown[];
        outsideRoot: { policy: string; field: string }[];
      };
      const ino = (cg: string) => String(statSync(env.cgDir(cg), { bigint: true }).ino);
      expect(out.entries.mr_cgroups).toContainEqual([ino(cgA), { kind: 1, slot: expect.any(Number) }]);
      expect(out.entries.mr_cgroups).toContainEqual([ino(cgProxy), { kind: 2, slot: expect.any(Number) }]);
      expect(out.entries.mr_cgroups.map(([id]) => id)).not.toContain('0');
      expect(out.unresolved).toEqual([
        { policy: 'pod-m', field: 'spec.cgroup', cgroup: missing },
        { policy: 'pod-o', field: 'spec.cgroup', cgroup: elsewhere },
      ]);
      expect(p.err).toContain(
        `cgroup ${missing} of policy pod-m does not exist (yet): no entries for it until it does`,
      );
      expect(out.outsideRoot).toEqual([expect.objectContaining({ policy: 'pod-o', field: 'spec.cgroup' })]);
      expect(existsSync(env.bpffs)).toBe(had); // a dry run writes nothing
      if (before) expect(snapshot()).toEqual(before);
      const warning = `${join(d, 'o.yaml')}: policy pod-o: cgroup ${elsewhere} is outside --cgroup-root ${env.cgRoot}, where the programs are attached: the hooks do not run there, so nothing from it is redirected`;
      expect(p.err).toContain(warning);
      const a = await env.agent(d);
      agents.push(a);
      expect(messages(a)).toContain(warning);
      const st = JSON.parse(
        await env.cliRun(['status', '--json', '--bpffs', env.bpffs, '--state-dir', env.stateDir]),
      ) as { agent: { lastReconcile: { warnings: string[] } } };
      expect(st.agent.lastReconcile.warnings).toContain(warning);
      expect(await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir])).toContain(
        `warning: ${warning}`,
      );
      await env.stop(a);
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('an invalid file is reported with path and field; valid files apply; the old state of the invalid file stays', async () => {
    const a = await startAgent(['--interval', '1']);
    const good = readdirSync(dir);
    writeFileSync(
      join(dir, 'b.yaml'),
      policyYaml({ name: 'pod-b', cgroup: `${env.cgRoot}/pod-b`, outbound: '10.200.0.1:99999' }),
    );
    await waitFor(
      () => messages(a).some((m) => m.includes('b.yaml: spec.proxy.outbound')),
      'error for b.yaml',
      a,
      5000,
    );
    expect(messages(a)).toContainEqual(
      expect.stringMatching(/b\.yaml: spec\.proxy\.outbound: "10\.200\.0\.1:99999": 99999 is not a port/),
    );
    // Now break a.yaml, whose policy is applied: it must keep working as before.
    writeFileSync(
      join(dir, 'a.yaml'),
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: pod-a }\nspec: { cgroup: 5 }\n',
    );
    await waitFor(
      () => messages(a).some((m) => /a\.yaml: not applied; keeping its previously applied content \(pod-a\)/.test(m)),
      'keeps a.yaml',
      a,
      5000,
    );
    expect(messages(a)).toContainEqual(expect.stringMatching(/a\.yaml: spec\.cgroup: /));
    expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    rmSync(join(dir, 'b.yaml'));
    void good;
    // The whole directory vanishing is an error, not "remove every policy".
    const moved = `${dir}-moved`;
    sh('mv', [dir, moved]);
    try {
      await waitFor(
        () => messages(a).some((m) => /policy directory .* does not exist; nothing was changed/.test(m)),
        'missing dir reported',
        a,
        5000,
      );
      expect(await viaProxy()).toMatch(/^up 10\.200\.0\.1 /);
    } finally {
      sh('mv', [moved, dir]);
    }
    await env.stop(a);
  });
});
