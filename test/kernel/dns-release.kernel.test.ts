// dns-release.kernel.test.ts — mr_dns_release (DNS capture's sock_release, which runs on every inet socket
// close below the root) is attached only while it is needed, as the kernel reports the cgroup root's
// programs (bpftool) and the pins say: none while no policy captures DNS (the rest of DNS capture is
// attached); attached with one, before its entries are written (short-lived captured sockets leave no
// entry); kept after the last DNS policy goes while a captured connected socket is open — whose replies are
// still relabelled — and its entry deleted as it closes, then detached; an agent restarted over pins keeps
// the same link while a policy captures DNS, keeps it while a captured socket is open, and detaches one
// nothing needs after its grace; one detached behind the agent's back while still needed is attached again;
// one the kernel refuses to attach (MESHREDIR_FAULT) leaves DNS capture off, saying why, and every policy
// redirecting; cleanup leaves nothing behind (the teardown's check). The real parts are
// dnsfix.ts's: dnsmasq as nameserver and node proxy, dnsq.py and dig as clients.
import { expect, it } from 'vitest';
import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  kernelDescribe,
  policyDoc,
  policyYaml,
  sh,
  until,
  waitFor,
  ORIGDST_PROXY,
  type Env,
  type Proc,
} from './harness.js';
import { useLab } from './lab.js';
import { atRoot as rootPrograms, linkPinned, outcomes, refusingAgent, sleep } from './on-demand-fix.js';
import { DnsLab, type Pod, type Reply, ANSWER, NS4, NODE_PROXY4, PROXY_PORT } from './dnsfix.js';

interface Status {
  links: { name: string; id?: number; attached: boolean }[];
  dns: { openSockets: number; policies: { policy: string }[] };
  dnsRelease: { attached: boolean; needed: boolean; why: string; capturing: string[]; openSockets: number };
}

kernelDescribe('DNS capture: mr_dns_release attached only while needed', () => {
  let env: Env;
  let dir: string;
  let lab: DnsLab;
  let agent: Proc;
  const a = () => lab.pods.a;
  const status = async () => JSON.parse(await env.cliRun(['status', '--json', '--bpffs', env.bpffs])) as Status;
  const release = async () => (await status()).dnsRelease;
  const capturing = async () => (await status()).dns.policies.some((p) => p.policy === 'pod-a');
  const atRoot = () => rootPrograms(env);
  const pinned = () => linkPinned(env, 'mr_dns_release');
  const linkId = async () => (await status()).links.find((l) => l.name === 'mr_dns_release')?.id;
  /** pod-a's policy: an outbound proxy, and with `dns` its queries captured to the node DNS proxy. */
  const write = (dns: boolean) =>
    writeFileSync(
      join(dir, 'pod-a.yaml'),
      policyDoc('pod-a', {
        cgroup: `${env.cgRoot}/pod-a`,
        proxy: { outbound: '127.0.0.1:15001', bypass: { cgroups: [lab.proxyCg] } },
        ...(dns ? { dns: { proxy: `${NODE_PROXY4}:${PROXY_PORT}`, nameservers: [NS4] } } : {}),
      }),
    );
  /** A connected UDP socket of pod A (dnsq.py hold): one query answered, then another when released. */
  const held = async () => {
    const p = env.spawn(a().ns, a().cg, '/usr/bin/python3', [join(env.toolsDir, 'dnsq.py'), 'hold', 'test.zone', NS4], {
      stdin: true,
    });
    await waitFor(() => p.out.includes('\n'), 'hold: first reply', p);
    expect(JSON.parse(p.out.trim()) as Reply).toMatchObject({
      answer: ANSWER.proxy.a,
      from: { address: NS4, port: 53 },
    });
    return {
      release: async () => {
        p.child.stdin!.end();
        await p.exited;
        return JSON.parse(p.out.trim().split('\n').pop()!) as Reply;
      },
    };
  };

  useLab(
    {
      policies: 'meshredir-dnsrel-',
      beforeTeardown: async () => {
        if (agent) await env.stop(agent);
        await env.cliRun(['cleanup', '--force', '--bpffs', env.bpffs]).catch(() => '');
        lab?.cleanup();
      },
    },
    async (l) => {
      ({ env, dir } = l);
      lab = new DnsLab(env);
      await lab.nameserver();
      await lab.nodeProxy();
      write(false);
      agent = await l.agent(['--interval', '1']);
    },
  );

  it('no policy captures DNS: no sock_release link, in the kernel or the pins; status says why', async () => {
    await until('applied', async () => (await status()).links.some((l) => l.name === 'mr_connect4'));
    expect(atRoot()).toContain('mr_dns_recv4'); // the rest of DNS capture is attached
    expect(atRoot()).not.toContain('mr_dns_release');
    expect(pinned()).toBe(false);
    expect(existsSync(join(env.bpffs, 'progs', 'mr_dns_release'))).toBe(true); // loaded, ready to attach
    expect(await release()).toMatchObject({ attached: false, needed: false, capturing: [], openSockets: 0 });
    expect((await release()).why).toBe('no policy captures DNS and no captured socket is open');
    const text = await env.cliRun(['status', '--bpffs', env.bpffs]);
    expect(text).toMatch(/DNS socket release \(mr_dns_release\): not attached/);
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a); // not captured
  });

  it('a policy captures DNS: attached; queries captured; short-lived captured sockets leave no entry', async () => {
    write(true);
    await until('DNS capture applied', capturing);
    expect(atRoot()).toContain('mr_dns_release');
    expect(await release()).toMatchObject({ attached: true, needed: true, capturing: ['pod-a'] });
    expect(agent.err).toContain('"event":"dns_release_attached"');
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
    const loop = await lab.dnsq<{ ok: number }>(a(), a().cg, ['loop', '200', 'test.zone', NS4]);
    expect(loop).toMatchObject({ ok: 200 });
    expect((await status()).dns.openSockets).toBe(0);
  });

  it('DNS capture removed while a captured socket is open: kept, its replies relabelled, its entry deleted as it closes, then detached', async () => {
    const h = await held();
    expect((await status()).dns.openSockets).toBe(1);
    write(false);
    await until('DNS capture off', async () => !(await capturing()));
    await sleep(2500); // past the grace and two pulses
    const r = await release();
    expect(r).toMatchObject({ attached: true, needed: true, capturing: [], openSockets: 1 });
    expect(r.why).toMatch(/1 captured socket\(s\) are still open/);
    expect(atRoot()).toContain('mr_dns_release');
    // Detached behind the agent's back while the socket's entry is still there: attached again (else the
    // entry would never be deleted), with a warning.
    const id = await linkId();
    sh('bpftool', ['link', 'detach', 'pinned', join(env.bpffs, 'links', 'mr_dns_release')]);
    await until('attached again', async () => atRoot().includes('mr_dns_release'));
    expect(await linkId()).not.toBe(id);
    expect(agent.err).toMatch(/"event":"repaired".*mr_dns_release was detached behind the agent's back/);
    expect(await release()).toMatchObject({ attached: true, needed: true, openSockets: 1 });
    // New queries go direct; the held socket's next reply is still the proxy's, shown from the nameserver.
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
    expect(await h.release()).toMatchObject({ id: 8, answer: ANSWER.proxy.a, from: { address: NS4, port: 53 } });
    await until('the link detached', async () => !(await release()).attached);
    expect((await status()).dns.openSockets).toBe(0); // deleted at the close, by the hook
    expect(atRoot()).not.toContain('mr_dns_release');
    expect(pinned()).toBe(false);
    expect(agent.err).toContain('"event":"dns_release_detached"');
  });

  it('an agent restarted over pins keeps the same link while a policy captures DNS', async () => {
    write(true);
    await until('the link attached', async () => (await release()).attached);
    const id = await linkId();
    expect(id).toBeDefined();
    await env.stop(agent);
    expect(atRoot()).toContain('mr_dns_release'); // pinned: it outlives the agent
    agent = await env.agent(dir, ['--interval', '1']);
    await sleep(2500);
    expect(await linkId()).toBe(id); // re-adopted, never detached
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
  });

  it('restarted with DNS capture off and a captured socket open: kept until it closes, then detached', async () => {
    const h = await held();
    await env.stop(agent);
    write(false);
    agent = await env.agent(dir, ['--interval', '1']);
    await until('DNS capture off', async () => !(await capturing()));
    await sleep(2500);
    expect(await release()).toMatchObject({ attached: true, needed: true, openSockets: 1 });
    await h.release();
    await until('the link detached', async () => !(await release()).attached);
    expect((await status()).dns.openSockets).toBe(0);
    expect(atRoot()).not.toContain('mr_dns_release');
  });

  it('the kernel refuses to attach it: DNS capture is off and says why, no mr_dns_pol entry, every policy still redirects', async () => {
    // pod-a (DNS capture and an outbound proxy) and pod-b (an outbound proxy only), each proxy reporting the
    // original destination it was given.
    const proxies: Proc[] = [];
    for (const pod of [a(), lab.pods.b]) {
      const p = env.spawn(pod.ns, lab.proxyCg, ORIGDST_PROXY, ['--listen', '127.0.0.1:15001', '--mode', 'report']);
      proxies.push(p);
      await env.waitListening(pod.ns, 15001, 'origdst-proxy', p);
    }
    const redirected = async (pod: Pod) =>
      (await env.client<{ data?: string }>(pod.ns, pod.cg, ['connect', '10.77.0.1', '8080'])).data ?? '';
    await env.stop(agent);
    write(true);
    writeFileSync(
      join(dir, 'pod-b.yaml'),
      policyYaml({
        name: 'pod-b',
        cgroup: `${env.cgRoot}/pod-b`,
        outbound: '127.0.0.1:15001',
        bypassCgroups: [lab.proxyCg],
      }),
    );
    const refused = await refusingAgent(env, dir, 'mr_dns_release');
    try {
      expect(await redirected(a())).toMatch(/^ORIGDST 10\.77\.0\.1 8080 /);
      expect(await redirected(lab.pods.b)).toMatch(/^ORIGDST 10\.77\.0\.1 8080 /);
      expect(atRoot()).not.toContain('mr_dns_release');
      expect(atRoot()).toContain('mr_dns_recv4'); // the rest of DNS capture stays attached
      const s = await status();
      expect(s.dns.policies).toEqual([]); // no mr_dns_pol entry: nothing is captured
      expect(s.dnsRelease).toMatchObject({ attached: false });
      expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.nameserver.a);
      // Why, in the log, and per policy in status (the agent's outcomes); pod-b is not concerned.
      expect(refused.err).toContain('"event":"dns_release_attach_failed"');
      expect(refused.err).toMatch(
        /"event":"dns_unavailable".*mr_dns_release \(cannot be attached: attach mr_dns_release/,
      );
      const o = await outcomes(env);
      expect(o.find((x) => x.policy === 'pod-a')).toMatchObject({
        state: 'applied',
        reason: expect.stringMatching(/^spec\.dns is not applied: .*mr_dns_release \(cannot be attached: .*injected/),
      });
      const b = o.find((x) => x.policy === 'pod-b');
      expect(b).toMatchObject({ state: 'applied' });
      expect(b!.reason).toBeUndefined();
      const text = await env.cliRun(['status', '--bpffs', env.bpffs, '--state-dir', env.stateDir]);
      expect(text).toMatch(/pod-a .*applied: spec\.dns is not applied: .*mr_dns_release \(cannot be attached/);
    } finally {
      await env.stop(refused);
    }
    // Once the kernel takes it: DNS capture applied, the rest unchanged.
    rmSync(join(dir, 'pod-b.yaml'));
    agent = await env.agent(dir, ['--interval', '1']);
    await until('DNS capture applied', capturing);
    expect(atRoot()).toContain('mr_dns_release');
    expect(await redirected(a())).toMatch(/^ORIGDST 10\.77\.0\.1 8080 /);
    expect(await lab.dig(a(), a().cg, NS4, 'test.zone')).toBe(ANSWER.proxy.a);
    for (const p of proxies) await env.stop(p);
  });

  it('restarted over a link nothing needs any more: detached (after its grace), not kept forever', async () => {
    write(true);
    await until('the link attached', async () => (await release()).attached);
    await env.stop(agent);
    write(false);
    agent = await env.agent(dir, ['--interval', '600']); // no periodic reconcile: the pulse asks for it
    await until('the link detached', async () => !(await release()).attached);
    expect(atRoot()).not.toContain('mr_dns_release');
    expect(pinned()).toBe(false);
    await env.stop(agent);
    await env.cliRun(env.cleanupArgs());
    expect(existsSync(env.bpffs)).toBe(false);
  });
});
