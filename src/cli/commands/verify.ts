// verify.ts — `meshredir verify --cgroup PATH`: checks, link by link, that a connection from that
// cgroup would be redirected to its proxy and that the proxy would read the original destination.
import { Command } from 'commander';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';
import { existsSync } from 'node:fs';
import { EbpfMode, DEFAULT_BPFFS } from '../../modes/ebpf/ebpf.js';
import { IptablesMode, DEFAULT_STATE } from '../../modes/iptables/iptables.js';
import { coverage, podNetns, listensOn, cgroupPids, type Step, type ChildResult } from '../../modes/ebpf/verify.js';
import { cgroupId, cgroupDir, requireCgroup2 } from '../../util/host.js';
import { cgroupPathById } from '../../util/cgroups.js';
import { printJson, table } from '../output.js';
import { PROGRAMS } from '../../bpf/abi.js';

const CGROUP_PROGRAMS = Object.values(PROGRAMS).filter((p) => p.attach !== 'sk_msg').length;
import ipaddr from 'ipaddr.js';

function ipBytes(text: string): number[] {
  return ipaddr.parse(text).toByteArray();
}

function check(o: { cgroup: string; bpffs: string; iptablesState: string; netns?: string; dest?: string }): {
  mode: 'ebpf' | 'iptables' | 'none';
  steps: Step[];
} {
  const ebpf = new EbpfMode({ bpffs: o.bpffs, cgroupRoot: '/', object: '' });
  if (!ebpf.installed()) {
    // No pins: in iptables mode the chain to check is the pod netns's nat table, not BPF.
    const ipt = new IptablesMode({ stateFile: o.iptablesState, lockWait: 5 });
    if (ipt.installed())
      return {
        mode: 'iptables',
        steps: ipt.verify({
          cgroup: o.cgroup,
          ...(o.netns ? { netns: o.netns } : {}),
          ...(o.dest ? { dest: o.dest } : {}),
        }),
      };
    return {
      mode: 'none',
      steps: [
        {
          step: 'installed',
          ok: false,
          detail: `meshredir is not applied here in either mode: no pins under ${o.bpffs} (eBPF) and no iptables state in ${o.iptablesState} (iptables); has the agent run, with these paths?`,
        },
      ],
    };
  }
  return { mode: 'ebpf', steps: checkEbpf(o) };
}

function checkEbpf(o: { cgroup: string; bpffs: string; netns?: string; dest?: string }): Step[] {
  const steps: Step[] = [];
  const fail = (step: string, detail: string) => (steps.push({ step, ok: false, detail }), steps);
  const ok = (step: string, detail: string) => steps.push({ step, ok: true, detail });

  const mount = requireCgroup2();
  const dir = o.cgroup.startsWith(mount) ? o.cgroup : cgroupDir(o.cgroup, mount);
  if (!existsSync(dir)) return fail('cgroup', `${o.cgroup} does not exist (looked for ${dir})`);
  ok('cgroup', dir);

  const mode = new EbpfMode({ bpffs: o.bpffs, cgroupRoot: '/', object: '' });
  if (!mode.installed())
    return fail('installed', `no pins under ${o.bpffs}: the agent has never run here (or was cleaned up)`);
  const links = mode.links();
  const cgLinks = links.filter((l) => l.mapId === undefined);
  const broken = cgLinks.filter((l) => !l.attached);
  if (cgLinks.length < CGROUP_PROGRAMS || broken.length)
    return fail(
      'attached',
      `programs not attached: ${broken.map((l) => l.name).join(', ') || `only ${cgLinks.length} cgroup links pinned`}`,
    );
  const root = cgroupPathById(BigInt(cgLinks[0]!.cgroupId!));
  const rootDir = root === null ? null : cgroupDir(root, mount);
  if (!rootDir || !(dir === rootDir || dir.startsWith(`${rootDir}/`)))
    return fail('attached', `programs are attached at ${root ?? '?'}, which does not contain ${o.cgroup}`);
  ok('attached', `${cgLinks.length} programs at ${root}`);

  const cov = coverage(mode, dir);
  if (!cov) return fail('policy', `no policy covers ${o.cgroup} (nor any ancestor)`);
  if (cov.bypass)
    return fail(
      'policy',
      `${o.cgroup} is a bypass (proxy) cgroup of policy ${cov.policy}: its connections are never redirected`,
    );
  const dest = o.dest ?? (cov.proxy4 ? '192.0.2.1:80' : '[2001:db8::1]:80');
  const proxy = dest.startsWith('[') ? cov.proxy6 : cov.proxy4;
  if (!proxy) return fail('policy', `policy ${cov.policy} has no proxy for ${dest.startsWith('[') ? 'IPv6' : 'IPv4'}`);
  ok('policy', `${cov.policy} → proxy ${proxy}`);

  const netns = o.netns ?? podNetns(dir);
  const here = fileURLToPath(import.meta.url);
  const main = join(dirname(here), '..', 'main.js');
  const proxyHost = proxy.replace(/^\[/, '').replace(/\]?:\d+$/, '');
  const loopback = proxyHost.startsWith('127.') || proxyHost === '::1';
  const r = spawnSync(
    process.execPath,
    [
      main,
      'verify-probe',
      JSON.stringify({ cgroupDir: dir, netns, bpffs: o.bpffs, dest, proxy, proxyLoopback: loopback }),
    ],
    { encoding: 'utf8', timeout: 20_000 },
  );
  if (r.status !== 0)
    return fail('probe', `the throwaway process failed: ${(r.stderr || r.error?.message || '').trim()}`);
  const res = JSON.parse(r.stdout) as ChildResult;
  const where = netns
    ? `in netns ${netns}`
    : 'in the current netns (no process in the cgroup to take the pod netns from; pass --netns)';
  if (res.connect !== 'ok') return fail('redirect', `connect(${dest}) ${where} failed: ${res.connect}`);
  if (!res.record)
    return fail(
      'redirect',
      `connect(${dest}) from ${res.local} was not redirected to ${proxy}: no record for the proxy to read (counters: meshredir status)`,
    );
  const recorded =
    res.record.family === 2 ? `${res.record.addr}:${res.record.port}` : `[${res.record.addr}]:${res.record.port}`;
  if (recorded !== dest.replace(/^\[(.*)\]/, (_, a: string) => `[${a}]`))
    return fail('original destination', `the proxy would read ${recorded}, not ${dest}`);
  ok('redirect', `connect(${dest}) ${where} went to ${proxy}`);
  ok('original destination', `the proxy's SO_ORIGINAL_DST would answer ${recorded}`);
  if (res.peer !== dest) return fail('getpeername', `the application would see ${res.peer}, not ${dest}`);
  ok('getpeername', `the application sees ${res.peer}`);
  // The proxy listens in the pod netns (sidecar) or in the netns of its own processes (node proxy).
  const pm = /^\[?(.+?)\]?:(\d+)$/.exec(proxy)!;
  const ep = { family: (proxy.startsWith('[') ? 6 : 4) as 4 | 6, bytes: ipBytes(pm[1]!), port: Number(pm[2]) };
  const proxyPids = cov.bypassIds.flatMap((id) => {
    const path = cgroupPathById(id);
    return path === null ? [] : cgroupPids(cgroupDir(path, mount));
  });
  const listening = res.proxyListening === 'ok' || proxyPids.some((pid) => listensOn(`/proc/${pid}/net`, ep));
  if (!listening) {
    return fail(
      'proxy',
      `nothing listens on ${proxy} (looked in the pod netns and in the netns of ${proxyPids.length} process(es) of the policy's bypass cgroups)`,
    );
  }
  ok('proxy', `a socket listens on ${proxy}`);
  void cgroupId;
  return steps;
}

export const verifyCommand = new Command('verify')
  .description(
    'self-check: would a connection from this cgroup reach its proxy, and would the proxy read the original destination? (sends no packet to the destination)',
  )
  .requiredOption(
    '--cgroup <path>',
    'cgroup to check (policy path such as /pods/a, or a directory under the cgroup2 mount)',
  )
  .option('--bpffs <dir>', 'bpffs directory of the agent', DEFAULT_BPFFS)
  .option('--iptables-state <file>', 'state file of the iptables mode (checked when there are no pins)', DEFAULT_STATE)
  .option('--netns <path>', 'network namespace of the pod (default: that of a process in the cgroup)')
  .option('--dest <ip:port>', 'probe destination (default 192.0.2.1:80 or [2001:db8::1]:80; never contacted)')
  .option('--json', 'print one JSON object')
  .action(
    (o: { cgroup: string; bpffs: string; iptablesState: string; netns?: string; dest?: string; json?: boolean }) => {
      const { mode, steps } = check(o);
      const okAll = steps.every((s) => s.ok);
      if (o.json) printJson({ ok: okAll, mode, steps });
      else {
        console.log(
          table(
            ['check', 'result', 'detail'],
            steps.map((s) => [s.step, s.ok ? 'ok' : 'BROKEN', s.detail]),
          ),
        );
        console.log(
          okAll ? `the redirection chain works (${mode} mode)` : `broken at: ${steps.find((s) => !s.ok)!.step}`,
        );
      }
      if (!okAll) process.exitCode = 1;
    },
  );
