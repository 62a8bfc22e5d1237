// status.ts — `meshredir status`: the state from the pins, whether or not the agent runs.
import { Command } from 'commander';
import { EbpfMode, DEFAULT_BPFFS } from '../../modes/ebpf/ebpf.js';
import { STAT_FIELDS, PolicyFlag } from '../../bpf/abi.js';
import { printJson, table } from '../output.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { cgroupPathById } from '../../util/cgroups.js';
import { IptablesMode, DEFAULT_STATE } from '../../modes/iptables/iptables.js';
import { LIMITS } from '../../modes/iptables/rules.js';
import { readState, statePath, DEFAULT_STATE_DIR } from '../../agent/state.js';

/** What the agent's state file says: how the mode was chosen and the last reconcile's outcome. */
function agentSummary(stateDir: string) {
  const s = readState(stateDir);
  if (s === null) return null;
  if (s instanceof Error) return { stateFile: statePath(stateDir), error: s.message };
  return {
    stateFile: statePath(stateDir),
    mode: s.mode.chosen,
    requested: s.mode.requested,
    reason: s.mode.reason,
    decidedAt: s.mode.at,
    ...(s.probe
      ? {
          probe: {
            kernel: s.probe.kernel,
            libbpf: s.probe.libbpf,
            missing: Object.entries(s.probe.features)
              .filter(([, ok]) => !ok)
              .map(([f]) => ({ feature: f, why: s.probe!.why[f] ?? '' })),
          },
        }
      : {}),
    pid: s.agent.pid,
    policies: s.agent.policies,
    cgroupRoot: s.agent.cgroupRoot,
    startedAt: s.agent.startedAt,
    applied: Object.entries(s.applied).map(([file, a]) => ({ file, policies: a.policies })),
    lastReconcile: s.lastReconcile ?? null,
  };
}

export function readStatus(bpffs: string, iptablesState = DEFAULT_STATE, stateDir = DEFAULT_STATE_DIR) {
  const mode = new EbpfMode({ bpffs, cgroupRoot: '/', object: DEFAULT_OBJECT });
  const iptMode = new IptablesMode({ stateFile: iptablesState, lockWait: 5 });
  const ipt = iptMode.installed() ? iptMode.status() : null;
  const agent = agentSummary(stateDir);
  if (!mode.installed()) {
    if (ipt)
      return {
        installed: true as const,
        mode: 'iptables' as const,
        agent,
        stateFile: iptablesState,
        policies: ipt.policies,
        iptables: ipt.netns,
        unsupported: LIMITS,
      };
    return { installed: false as const, bpffs, agent };
  }
  const links = mode
    .links()
    .map((l) => ({ ...l, cgroup: l.cgroupId && l.cgroupId !== '0' ? cgroupPathById(BigInt(l.cgroupId)) : null }));
  const stats = mode.stats();
  const slots = mode.currentSlots();
  const read = <T>(name: 'mr_cgroups' | 'mr_proxies' | 'mr_policies'): T => {
    const m = mode.openMap(name);
    try {
      return m.entries() as T;
    } finally {
      m.close();
    }
  };
  const cgEntries = read<[bigint, { kind: number; slot: number }][]>('mr_cgroups');
  const proxies = read<[{ cgroup_id: bigint; slot: number }, number][]>('mr_proxies');
  const flags = new Map(read<[number, { flags: number }][]>('mr_policies').map(([slot, p]) => [slot, p.flags]));
  const policies = [...slots.entries()].map(([name, slot]) => {
    const own = cgEntries.filter(([, v]) => v.slot === slot);
    const cg = own.find(([, v]) => v.kind === 1);
    return {
      name,
      slot,
      cgroup: cg ? cgroupPathById(cg[0]) : null,
      resolved: Boolean(cg),
      bypassCgroups: proxies.filter(([k]) => k.slot === slot).map(([k]) => cgroupPathById(k.cgroup_id)),
      accelerate: Boolean((flags.get(slot) ?? 0) & PolicyFlag.ACCELERATE),
      counters: Object.fromEntries(STAT_FIELDS.map((f) => [f, Number(stats.get(slot)?.[f] ?? 0n)])),
    };
  });
  const global = stats.get(0);
  return {
    installed: true as const,
    mode: 'ebpf' as const,
    agent,
    bpffs,
    attachPoint: links.find((l) => l.cgroup)?.cgroup ?? null,
    fastPath: ((f) => (f.usable ? 'available' : `unavailable: ${f.why}`))(mode.fastPath()),
    links,
    policies,
    maps: mode.fill(),
    records: { ...mode.pending(), inTable: mode.pendingDrift().records },
    unknownOrigDst: Number(global?.origdst_unknown ?? 0n),
    unsupported: ['spec.proxy.inbound: inbound interception is not implemented in the eBPF mode yet (sk_lookup)'],
    ...(ipt ? { iptables: ipt.netns, iptablesPolicies: ipt.policies } : {}),
  };
}

function printAgent(a: ReturnType<typeof agentSummary>): void {
  if (!a) return;
  if ('error' in a) {
    console.log(`agent state: ${a.error}`);
    return;
  }
  console.log(
    `agent: mode ${a.mode} (${a.requested === 'auto' ? `chosen by --mode auto: ${a.reason}` : a.reason}) · since ${a.decidedAt} · policies ${a.policies}`,
  );
  const r = a.lastReconcile;
  if (r) {
    console.log(
      `last reconcile: ${r.ok ? 'ok' : 'FAILED'} at ${r.at} (${r.reason}): ${r.policies} policies, ${r.writes} writes, ${r.deletes} deletes`,
    );
    for (const e of r.errors) console.log(`  error: ${e}`);
    for (const w of r.warnings) console.log(`  warning: ${w}`);
  }
}

export const statusCommand = new Command('status')
  .description('show what is loaded, attached and applied (read from the pins; works without the agent)')
  .option('--bpffs <dir>', 'bpffs directory of the agent', DEFAULT_BPFFS)
  .option('--iptables-state <file>', 'state file of the iptables mode', DEFAULT_STATE)
  .option('--state-dir <dir>', 'state directory of the agent (agent.json)', DEFAULT_STATE_DIR)
  .option('--json', 'print one JSON object')
  .action((opts: { bpffs: string; iptablesState: string; stateDir: string; json?: boolean }) => {
    const s = readStatus(opts.bpffs, opts.iptablesState, opts.stateDir);
    if (opts.json) return printJson(s);
    printAgent(s.agent);
    if (!s.installed) {
      console.log(
        `meshredir is not installed here (no pins under ${opts.bpffs}, no iptables state in ${opts.iptablesState})`,
      );
      process.exitCode = 3;
      return;
    }
    if (s.mode === 'iptables') {
      console.log(`mode iptables · state ${s.stateFile}`);
      console.log(
        table(
          ['policy', 'cgroup', 'outcome', 'netns', 'backend', 'families', 'reason'],
          s.policies.map((p) => [
            p.policy,
            p.cgroup,
            p.outcome,
            p.netns ?? '-',
            p.backend ?? '-',
            (p.families ?? []).join(', ') || '-',
            p.reason ?? '',
          ]),
        ),
      );
      console.log(
        table(
          ['netns', 'policy', 'backend', 'rules', 'live', 'redirected', 'inbound redirected'],
          s.iptables.map((n) => [
            `${n.netns} (${n.netnsId})`,
            n.policy,
            n.backend,
            n.rules,
            n.live,
            Object.entries(n.redirected)
              .map(([f, c]) => `${f} ${c}`)
              .join(', ') || '-',
            Object.entries(n.inboundRedirected)
              .map(([f, c]) => `${f} ${c}`)
              .join(', ') || '-',
          ]),
        ),
      );
      console.log(`limits of this mode:\n  - ${s.unsupported.join('\n  - ')}`);
      return;
    }
    console.log(`mode ebpf · attached at ${s.attachPoint ?? '(nowhere)'} · pins ${s.bpffs}`);
    console.log(
      table(
        ['program', 'link', 'prog', 'attached at'],
        s.links.map((l) => [
          l.name,
          l.id ?? '-',
          l.progId ?? '-',
          !l.attached
            ? `DETACHED ${l.error ?? ''}`
            : l.mapId !== undefined
              ? `sockhash (map ${l.mapId})`
              : (l.cgroup ?? `cgroup ${l.cgroupId}`),
        ]),
      ),
    );
    console.log(
      table(
        ['policy', 'cgroup', 'redirected', 'established', 'origdst served', 'bypassed', 'accelerated', 'errors'],
        s.policies.map((p) => {
          const c = p.counters;
          const bypassed = Object.entries(c)
            .filter(([k]) => k.startsWith('bypass_'))
            .reduce((a, [, v]) => a + v, 0);
          return [
            p.name,
            p.cgroup ?? 'UNRESOLVED',
            c.redirected ?? 0,
            c.established ?? 0,
            c.origdst_served ?? 0,
            bypassed,
            p.accelerate || c.accel_sockets
              ? `${c.accel_open ?? 0} sockets now, ${c.accel_sockets ?? 0} in all; ${c.msg_fast ?? 0} msgs fast, ${c.msg_slow ?? 0} by TCP`
              : 'off',
            (c.err_storage ?? 0) + (c.err_orig ?? 0) + (c.err_full ?? 0),
          ];
        }),
      ),
    );
    console.log(
      table(
        ['map', 'entries', 'capacity'],
        s.maps.map((m) => [m.map, m.entries, m.max]),
      ),
    );
    console.log(
      `redirected handshakes in flight: ${s.records.pending} (connect() is refused past ${s.records.limit})${s.records.inTable !== s.records.pending ? `; ${s.records.inTable} records in mr_orig` : ''}`,
    );
  });
