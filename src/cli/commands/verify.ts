// verify.ts — `meshredir verify --cgroup PATH`: checks, link by link, that a connection from that cgroup
// would be redirected to its proxy and that the proxy would read the original destination (in whichever
// mode is installed here; sends no packet to the destination).
import { Command } from 'commander';
import { z } from 'zod';
import { shared, sharedSchema, parseOptions, modeConfig } from '../options.js';
import { printJson, table } from '../output.js';
import { allModes } from '../../modes/index.js';
import type { VerifyStep } from '../../modes/mode.js';

const flags = sharedSchema(['bpffs', 'iptablesState', 'json']).extend({
  cgroup: z.string().min(1),
  netns: z.string().regex(/^\//, 'must be an absolute path').optional(),
  dest: z
    .string()
    .regex(/^(\d+\.\d+\.\d+\.\d+|\[[0-9a-fA-F:.]+\]):\d+$/, 'must be ip:port or [ip6]:port')
    .refine((s) => {
      const port = Number(s.slice(s.lastIndexOf(':') + 1));
      return port >= 1 && port <= 65535;
    }, 'the port must be 1-65535')
    .optional(),
  dns: z.boolean().optional(),
});

export const verifyCommand = shared(
  new Command('verify')
    .description(
      'self-check: would a connection from this cgroup reach its proxy, and would the proxy read the original destination? (sends no packet to the destination)',
    )
    .requiredOption(
      '--cgroup <path>',
      'cgroup to check (policy path such as /pods/a, or a directory under the cgroup2 mount)',
    )
    .option('--netns <path>', 'network namespace of the pod (default: that of a process in the cgroup)')
    .option('--dest <ip:port>', 'probe destination (default 192.0.2.1:80 or [2001:db8::1]:80; never contacted)')
    .option(
      '--dns',
      "check DNS capture (spec.dns) instead: each captured nameserver's UDP (and TCP) port 53 reaches the DNS proxy, and the reply would seem to come from the nameserver (sends no query)",
    ),
  ['bpffs', 'iptablesState', 'json'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const mode = (await allModes(modeConfig(o))).find((m) => m.installed());
  const steps: VerifyStep[] = mode
    ? await mode.verify({
        cgroup: o.cgroup,
        ...(o.netns ? { netns: o.netns } : {}),
        ...(o.dest ? { dest: o.dest } : {}),
        ...(o.dns ? { dns: true } : {}),
      })
    : [
        {
          step: 'installed',
          ok: false,
          detail: `meshredir is not applied here in either mode: no pins under ${o.bpffs} (eBPF) and no iptables state in ${o.iptablesState} (iptables); has the agent run, with these paths?`,
        },
      ];
  const ok = steps.every((s) => s.ok);
  const name = mode?.name ?? 'none';
  if (o.json) printJson({ ok, mode: name, steps });
  else {
    console.log(
      table(
        ['check', 'result', 'detail'],
        steps.map((s) => [s.step, s.ok ? 'ok' : 'BROKEN', s.detail]),
      ),
    );
    console.log(
      ok
        ? `the ${o.dns ? 'DNS capture' : 'redirection'} chain works (${name} mode)`
        : `broken at: ${steps.find((s) => !s.ok)!.step}`,
    );
  }
  if (!ok) process.exitCode = 1;
});
