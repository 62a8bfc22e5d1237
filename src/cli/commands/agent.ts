// agent.ts — `meshredir agent`: run the node agent until SIGINT/SIGTERM (or, with --dry-run, print what it
// would apply and exit).
import { Command, Option } from 'commander';
import { z } from 'zod';
import { shared, sharedSchema, parseOptions, modeConfig } from '../options.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { UserError, printJson } from '../output.js';
import { openMode } from '../../modes/index.js';
import { requirePreflight } from '../../probe/preflight.js';
import { DEFAULT_METRICS_ADDRESS, listenAddress } from '../address.js';

/** Bounds of --interval, in seconds. */
const MIN_INTERVAL = 1;
const MAX_INTERVAL = 86_400;

const absolute = z.string().regex(/^\//, 'must be an absolute path');
/** A node name is a DNS subdomain (RFC 1123). */
const nodeName = z
  .string()
  .max(253)
  .regex(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/, 'is not a node name (a DNS subdomain)');

const KUBE_ONLY = [
  'kubeconfig',
  'kubeletCgroupRoot',
  'kubeletCgroupnsRoot',
  'cgroupDriver',
  'kubernetesStall',
] as const;

const flags = sharedSchema(['bpffs', 'stateDir', 'iptablesState', 'lockWait'])
  .extend({
    policies: z.string().min(1),
    cgroupRoot: z.string().optional(),
    mode: z.enum(['auto', 'ebpf', 'iptables']),
    // A full pass reads every policy file and every policy map: more often than once a second is load, not
    // safety (changes are applied at once through the directory watch anyway); more than a day is no repair.
    interval: z.coerce
      .number('must be a number of seconds')
      .min(MIN_INTERVAL, `must be at least ${MIN_INTERVAL} s (changes apply through the directory watch at once)`)
      .max(MAX_INTERVAL, `must be at most ${MAX_INTERVAL} s (a day)`),
    cleanupOnExit: z.boolean().default(false),
    // mr_orig (twice this) and mr_peers are preallocated: 1,048,576 is ~200 MiB of kernel memory already.
    maxConnections: z.coerce.number().int().min(16).max(1_048_576).optional(),
    maxAccelerated: z.coerce.number().int().min(2).max(1_048_576).optional(),
    maxPendingPerPolicy: z.coerce.number().int().min(1).max(1_048_576).optional(),
    // The kernel wants a power of two and a multiple of the page; 64 MiB is ~700,000 events in flight.
    traceRingBytes: z.coerce
      .number()
      .int()
      .min(4096, 'must be at least 4096 (a page)')
      .max(64 * 1024 * 1024, 'must be at most 67108864 (64 MiB)')
      .refine((n) => (n & (n - 1)) === 0, 'must be a power of two (4096, 8192, … 67108864)')
      .optional(),
    object: z.string(),
    iptablesBackend: z.enum(['nft', 'legacy']).optional(),
    dryRun: z.boolean().default(false),
    metricsAddress: listenAddress,
    kubernetes: z.boolean().default(false),
    kubeconfig: z.string().min(1).optional(),
    nodeName: nodeName.optional(),
    kubeletCgroupRoot: absolute.optional(),
    kubeletCgroupnsRoot: absolute.optional(),
    cgroupDriver: z.enum(['auto', 'systemd', 'cgroupfs']).optional(),
    kubernetesGuard: z.boolean().default(true),
    kubernetesStall: z.coerce.number().min(1).max(3600).optional(),
  })
  .superRefine((o, ctx) => {
    if (!o.kubernetes) {
      for (const k of KUBE_ONLY)
        if (o[k] !== undefined) ctx.addIssue({ code: 'custom', path: [k], message: 'needs --kubernetes' });
      if (!o.kubernetesGuard)
        ctx.addIssue({ code: 'custom', path: ['kubernetesGuard'], message: 'needs --kubernetes' });
      return;
    }
    if (!o.nodeName)
      ctx.addIssue({
        code: 'custom',
        path: ['nodeName'],
        message:
          "is required with --kubernetes (or NODE_NAME in the environment, from the downward API's spec.nodeName)",
      });
  });

export const agentCommand = shared(
  new Command('agent')
    .description('run the node agent: apply the policies in DIR and keep them applied until SIGINT/SIGTERM')
    .requiredOption('--policies <dir>', 'directory of policy files (*.yaml)')
    .option('--cgroup-root <path>', 'cgroup where the programs attach (default: the cgroup2 root)')
    .addOption(new Option('--mode <mode>', 'redirection mode').choices(['auto', 'ebpf', 'iptables']).default('auto'))
    .option('--interval <seconds>', `periodic reconcile interval (${MIN_INTERVAL}-${MAX_INTERVAL})`, '30')
    .option('--cleanup-on-exit', 'remove everything on SIGTERM/SIGINT (default: leave redirection in place)')
    .option(
      '--max-connections <n>',
      'eBPF: redirected handshakes that may be in flight at once (a proxy not answering SYNs) before connect() is refused (16-1048576, default 16384)',
    )
    .option(
      '--max-pending-per-policy <n>',
      'eBPF: handshakes in flight one policy may have before its connects are refused, so one stalled pod never takes the whole --max-connections (1-1048576, default 1024, or a quarter of --max-connections if less)',
    )
    .option(
      '--max-accelerated <n>',
      'eBPF: sockets the sk_msg fast path may hold, two per connection (2-1048576, default 65536); past it, connections take TCP',
    )
    .option(
      '--trace-ring-bytes <n>',
      'eBPF: size of the ring buffer `meshredir trace` reads (a power of two, 4096-67108864, default 262144); past it, events are counted as lost',
    )
    .addOption(
      new Option('--iptables-backend <backend>', 'iptables: force a backend instead of detecting it').choices([
        'nft',
        'legacy',
      ]),
    )
    .option(
      '--dry-run',
      'print what would be applied and exit (iptables: the exact iptables-restore input; eBPF: the map entries, with the ids of the cgroups that exist)',
    )
    .option('--kubernetes', 'also take policies from the pods of this node (Kubernetes API; see docs/kubernetes.md)')
    .option('--kubeconfig <file>', 'Kubernetes: a kubeconfig (default: the in-cluster service account)')
    .option('--node-name <name>', "Kubernetes: this node's name (default: $NODE_NAME)")
    .option('--kubelet-cgroup-root <path>', "Kubernetes: the kubelet's --cgroup-root (default /)")
    .option(
      '--kubelet-cgroupns-root <path>',
      "Kubernetes: where the kubelet's cgroup namespace begins in the agent's cgroup2 tree (default /; a kubelet in a container, such as kind's, sees a namespace rooted below)",
    )
    .addOption(
      new Option(
        '--cgroup-driver <driver>',
        "Kubernetes: the kubelet's cgroup driver (default auto: the directories that exist decide)",
      ).choices(['auto', 'systemd', 'cgroupfs']),
    )
    .option(
      '--no-kubernetes-guard',
      'Kubernetes: no guard (connections of a pod that is not classified yet are not refused; the start race stays open)',
    )
    .option(
      '--kubernetes-stall <seconds>',
      'Kubernetes: a watch with no event nor bookmark for this long is taken as hung and resumed (default 330)',
    )
    .option(
      '--metrics-address <host:port>',
      'where /metrics (Prometheus), /healthz and /readyz are served; off: not served',
      DEFAULT_METRICS_ADDRESS,
    )
    .addOption(new Option('--object <path>', 'BPF object').default(DEFAULT_OBJECT).hideHelp()),
  ['bpffs', 'stateDir', 'iptablesState', 'lockWait'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, { ...raw, nodeName: raw.nodeName ?? (process.env.NODE_NAME || undefined) });
  // The policy parser's worker boots (~150 ms) while the mode loads, not after it.
  if (!o.dryRun) (await import('../../policy/isolated.js')).prestartParser();
  const [{ decideMode }, { resolveCgroupArg, requireCgroup2 }, { makeLogger }] = await Promise.all([
    import('../../agent/decide.js'),
    import('../../util/host.js'),
    import('../../util/log.js'),
  ]);
  const log = makeLogger();
  // The Kubernetes source first: a configuration that cannot work is a usage error before anything else.
  let kube;
  if (o.kubernetes) {
    const { openKubernetes } = await import('../../sources/kubernetes/open.js');
    try {
      kube = await openKubernetes(
        {
          ...(o.kubeconfig ? { kubeconfig: o.kubeconfig } : {}),
          nodeName: o.nodeName!,
          kubeletCgroupRoot: o.kubeletCgroupRoot ?? '/',
          kubeletCgroupnsRoot: o.kubeletCgroupnsRoot ?? '/',
          driver: o.cgroupDriver ?? 'auto',
          guard: o.kubernetesGuard,
          stallSeconds: o.kubernetesStall ?? 330,
          policies: o.policies,
        },
        log,
      );
    } catch (e) {
      throw new UserError((e as Error).message, 2);
    }
  }
  if (!o.dryRun) for (const w of requirePreflight(o)) log.warn({ event: 'preflight' }, w);
  const cgroupRoot = o.cgroupRoot ? resolveCgroupArg(o.cgroupRoot) : requireCgroup2();
  const decision = decideMode(o.mode, { object: o.object, ...(o.cgroupRoot ? { cgroupParent: cgroupRoot } : {}) });
  if (decision instanceof Error) throw new UserError(decision.message);
  if (o.mode === 'auto')
    log.info(
      { event: 'mode', mode: decision.chosen, reason: decision.reason },
      `mode auto chose ${decision.chosen}: ${decision.reason}`,
    );
  const attach = {
    cgroupRoot,
    object: o.object,
    ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}),
    ...(o.maxAccelerated ? { maxAccelerated: o.maxAccelerated } : {}),
    ...(o.maxPendingPerPolicy ? { maxPendingPerPolicy: o.maxPendingPerPolicy } : {}),
    ...(o.traceRingBytes ? { traceRingBytes: o.traceRingBytes } : {}),
  };
  const mode = await openMode(decision.chosen, modeConfig(o, attach));
  if (o.dryRun) {
    const { dryRun } = await import('../../agent/dry-run.js');
    const r = await dryRun(mode, o.policies, kube);
    for (const m of r.messages) console.error(m);
    if (r.text !== undefined) process.stdout.write(r.text);
    if (r.json !== undefined) printJson(r.json);
    if (!r.ok) process.exitCode = 1;
    return;
  }
  const { Agent } = await import('../../agent/agent.js');
  const agent = new Agent(
    {
      policies: o.policies,
      interval: o.interval,
      cleanupOnExit: o.cleanupOnExit,
      stateDir: o.stateDir,
      decision,
      paths: { cgroupRoot, bpffs: o.bpffs, iptablesState: o.iptablesState },
      ...(o.metricsAddress ? { metricsAddress: o.metricsAddress } : {}),
    },
    mode,
    log,
    kube,
  );
  await agent.start();
  log.info({ event: 'ready', mode: mode.name, cgroupRoot, bpffs: o.bpffs, policies: o.policies }, 'redirect-ready');
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await agent.stop();
  await agent.close();
});
