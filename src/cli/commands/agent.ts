// agent.ts — `meshredir agent`: run the node agent until SIGINT/SIGTERM.
import { Command, Option } from 'commander';
import { z } from 'zod';
import { Agent, type ModeDecision } from '../../agent/agent.js';
import { DEFAULT_STATE_DIR } from '../../agent/state.js';
import { makeLogger } from '../../agent/log.js';
import { DEFAULT_BPFFS, EbpfMode } from '../../modes/ebpf/ebpf.js';
import { outsideRoot } from '../../policy/scope.js';
import { probe } from '../../probe/probe.js';
import { resolveCgroupArg, requireCgroup2, cgroupPathOf } from '../../util/host.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { UserError, printJson } from '../output.js';
import { IptablesMode, DEFAULT_STATE } from '../../modes/iptables/iptables.js';
import { loadPolicies, formatError } from '../../policy/load.js';

const flags = z.object({
  policies: z.string().min(1),
  cgroupRoot: z.string().optional(),
  bpffs: z.string().regex(/^\//, 'must be an absolute path'),
  mode: z.enum(['auto', 'ebpf', 'iptables']),
  interval: z.coerce.number().positive('must be a positive number of seconds'),
  cleanupOnExit: z.boolean().default(false),
  maxConnections: z.coerce.number().int().min(16).max(16_777_216).optional(),
  maxAccelerated: z.coerce.number().int().min(2).max(16_777_216).optional(),
  object: z.string(),
  iptablesState: z.string(),
  iptablesBackend: z.enum(['nft', 'legacy']).optional(),
  lockWait: z.coerce.number().int().min(0).max(600),
  dryRun: z.boolean().default(false),
  stateDir: z.string().regex(/^\//, 'must be an absolute path'),
});

export const agentCommand = new Command('agent')
  .description('run the node agent: apply the policies in DIR and keep them applied until SIGINT/SIGTERM')
  .requiredOption('--policies <dir>', 'directory of policy files (*.yaml)')
  .option('--cgroup-root <path>', 'cgroup where the programs attach (default: the cgroup2 root)')
  .option('--bpffs <dir>', 'bpffs directory for pins', DEFAULT_BPFFS)
  .addOption(new Option('--mode <mode>', 'redirection mode').choices(['auto', 'ebpf', 'iptables']).default('auto'))
  .option('--interval <seconds>', 'periodic reconcile interval', '30')
  .option('--cleanup-on-exit', 'remove everything on SIGTERM/SIGINT (default: leave redirection in place)')
  .option(
    '--max-connections <n>',
    'eBPF: redirected handshakes that may be in flight at once (a proxy not answering SYNs) before connect() is refused (default 16384)',
  )
  .option(
    '--max-accelerated <n>',
    'eBPF: sockets the sk_msg fast path may hold, two per connection (default 65536); past it, connections take TCP',
  )
  .option(
    '--iptables-state <file>',
    'iptables: where the per-netns backend choice and applied rules are remembered',
    DEFAULT_STATE,
  )
  .addOption(
    new Option('--iptables-backend <backend>', 'iptables: force a backend instead of detecting it').choices([
      'nft',
      'legacy',
    ]),
  )
  .option('--lock-wait <seconds>', 'iptables: how long to wait for the xtables lock', '10')
  .option(
    '--state-dir <dir>',
    'where the agent keeps agent.json (mode decision, last applied policies, last reconcile)',
    DEFAULT_STATE_DIR,
  )
  .option(
    '--dry-run',
    'print what would be applied and exit (iptables: the exact iptables-restore input; eBPF: the map entries, with the ids of the cgroups that exist)',
  )
  .addOption(new Option('--object <path>', 'BPF object').default(DEFAULT_OBJECT).hideHelp())
  .action(async (raw: Record<string, unknown>) => {
    const r = flags.safeParse(raw);
    if (!r.success)
      throw new UserError(
        r.error.issues
          .map((i) => `--${String(i.path[0]).replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}: ${i.message}`)
          .join('\n'),
        2,
      );
    const o = r.data;
    const log = makeLogger();
    let mode = o.mode;
    let decision: ModeDecision | undefined;
    if (mode === 'auto') {
      // Probe where the programs will attach (--cgroup-root), never above it, with meshredir's own object.
      const p = probe({ object: o.object, ...(o.cgroupRoot ? { cgroupParent: resolveCgroupArg(o.cgroupRoot) } : {}) });
      log.info({ event: 'mode', mode: p.mode, reason: p.reason }, `mode auto chose ${p.mode}: ${p.reason}`);
      if (p.mode === 'none') throw new UserError(`no redirection mode works here: ${p.reason}`);
      mode = p.mode;
      const { iptables, ...features } = p.features;
      decision = {
        requested: 'auto',
        chosen: p.mode,
        reason: p.reason,
        probe: {
          kernel: p.kernel,
          libbpf: p.libbpf,
          features: { ...features, 'iptables.nft': iptables.nft, 'iptables.legacy': iptables.legacy },
          why: p.why as Record<string, string>,
        },
      };
    } else decision = { requested: mode, chosen: mode, reason: `--mode ${mode} given` };
    if (o.dryRun) {
      const set = await loadPolicies(o.policies);
      for (const e of set.errors) console.error(formatError(e));
      if (mode === 'iptables') {
        // Exactly what the first reconcile would run, read from the namespaces as they are now.
        const ipt = new IptablesMode({
          stateFile: o.iptablesState,
          lockWait: o.lockWait,
          ...(o.iptablesBackend ? { backend: o.iptablesBackend } : {}),
        });
        const plan = ipt.plan(set.policies);
        for (const sk of plan.skipped) console.error(`${sk.policy}: not applied in iptables mode: ${sk.reason}`);
        for (const e of plan.entries) {
          process.stdout.write(`# policy ${e.policy} → netns ${e.netns} (${e.netnsId}), backend ${e.backend}\n`);
          for (const w of e.work) {
            const restore = `${w.family === 4 ? 'iptables' : 'ip6tables'}-${e.backend}-restore --noflush -w ${o.lockWait}`;
            if (w.kind === 'unused')
              process.stdout.write(`# IPv${w.family}: not needed (no proxy for it, no inbound), nothing to apply\n`);
            else if (w.kind === 'in-sync') process.stdout.write(`# IPv${w.family}: in sync, nothing to apply\n`);
            else if (w.kind === 'remove' && !w.input)
              process.stdout.write(`# IPv${w.family}: no longer needed, and none of our rules are there\n`);
            else if (w.input) process.stdout.write(`# IPv${w.family}: ${restore} <<EOF\n${w.input}EOF\n`);
          }
          for (const r of e.removals) {
            const restore = `${r.family === 4 ? 'iptables' : 'ip6tables'}-${r.backend}-restore --noflush -w ${o.lockWait}`;
            process.stdout.write(
              r.input
                ? `# then off ${r.backend} (IPv${r.family}): ${restore} <<EOF\n${r.input}EOF\n`
                : `# nothing of ours left on ${r.backend} (IPv${r.family})\n`,
            );
          }
        }
        if (plan.skipped.length) process.exitCode = 1;
      } else {
        const root = o.cgroupRoot ? resolveCgroupArg(o.cgroupRoot) : requireCgroup2();
        const r = new EbpfMode({ bpffs: o.bpffs, cgroupRoot: root, object: o.object }).dryRun(set.policies);
        const outside = outsideRoot(set.policies, cgroupPathOf(root));
        for (const u of r.unresolved)
          console.error(
            `${u.field === 'spec.cgroup' ? 'cgroup' : 'bypass cgroup'} ${u.cgroup} of policy ${u.policy} does not exist (yet): no entries for it until it does`,
          );
        for (const m of [...r.rejected, ...outside.map((x) => x.message)]) console.error(m);
        printJson({
          mode: 'ebpf',
          slots:
            r.slotsFrom === 'pins'
              ? `kept from the pinned mr_slots under ${o.bpffs}`
              : 'assigned anew (nothing pinned)',
          unresolved: r.unresolved,
          outsideRoot: outside,
          rejected: r.rejected,
          entries: r.entries,
        });
        if (r.rejected.length) process.exitCode = 1;
      }
      if (set.errors.length) process.exitCode = 1;
      return;
    }
    const cgroupRoot =
      mode === 'iptables' ? (o.cgroupRoot ?? '/') : o.cgroupRoot ? resolveCgroupArg(o.cgroupRoot) : requireCgroup2();
    const agent = new Agent(
      {
        policies: o.policies,
        cgroupRoot,
        bpffs: o.bpffs,
        object: o.object,
        interval: o.interval,
        cleanupOnExit: o.cleanupOnExit,
        mode,
        stateDir: o.stateDir,
        decision,
        iptables: {
          stateFile: o.iptablesState,
          lockWait: o.lockWait,
          ...(o.iptablesBackend ? { backend: o.iptablesBackend } : {}),
        },
        ...(o.maxConnections ? { maxConnections: o.maxConnections } : {}),
        ...(o.maxAccelerated ? { maxAccelerated: o.maxAccelerated } : {}),
      },
      log,
    );
    await agent.start();
    log.info({ event: 'ready', mode, cgroupRoot, bpffs: o.bpffs, policies: o.policies }, 'redirect-ready');
    await new Promise<void>((resolve) => {
      const done = () => resolve();
      process.once('SIGINT', done);
      process.once('SIGTERM', done);
    });
    await agent.stop();
  });
