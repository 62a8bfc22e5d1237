// status.ts — `meshredir status`: what each installed mode reports from what it keeps on the host (pins,
// state files), and what the agent's state file says, whether or not the agent runs.
import { Command } from 'commander';
import { shared, sharedSchema, parseOptions, modeConfig } from '../options.js';
import { printJson, printSections } from '../output.js';
import type { Section } from '../../modes/mode.js';
import { allModes } from '../../modes/index.js';
import type { AgentSummary } from '../../agent/state.js';

const flags = sharedSchema(['bpffs', 'stateDir', 'iptablesState', 'json']);

/** The agent's own report: how the mode was chosen, the last reconcile, each policy with where it came
 * from, and the pods of this node as the Kubernetes source classified them. */
function agentSections(a: AgentSummary): Section[] {
  if (!a || 'error' in a) return [{ lines: agentLines(a) }];
  const out: Section[] = [{ lines: agentLines(a) }];
  if (a.outcomes.length)
    out.push({
      table: {
        head: ['policy', 'from', 'state'],
        rows: a.outcomes.map((o) => [
          o.policy,
          o.origin === 'kubernetes' ? o.from : `file ${o.from}`,
          o.reason ? `${o.state}: ${o.reason}` : o.state,
        ]),
      },
    });
  if (a.kubernetes?.pods.length)
    out.push({
      table: {
        head: ['pod', 'decision', 'why', 'cgroup', 'policy'],
        rows: a.kubernetes.pods.map((p) => [p.pod, p.decision, p.why, p.cgroup ?? '(none yet)', p.policy ?? '-']),
      },
    });
  return out;
}

function agentLines(a: AgentSummary): string[] {
  if (!a) return [];
  if ('error' in a) return [`agent state: ${a.error}`];
  const how = a.requested === 'auto' ? `chosen by --mode auto: ${a.reason}` : a.reason;
  const out = [`agent: mode ${a.mode} (${how}) · since ${a.decidedAt} · policies ${a.policies}`];
  const r = a.lastReconcile;
  if (r) {
    out.push(
      `last reconcile: ${r.ok ? 'ok' : 'FAILED'} at ${r.at} (${r.reason}): ${r.policies} policies, ${r.writes} writes, ${r.deletes} deletes`,
    );
    for (const e of r.errors) out.push(`  error: ${e}`);
    for (const w of r.warnings) out.push(`  warning: ${w}`);
  }
  const k = a.kubernetes;
  if (k) {
    const n = (d: string) => k.pods.filter((p) => p.decision === d).length;
    out.push(
      k.synced
        ? `kubernetes: ${k.pods.length} pod(s) on this node (${n('enrolled')} enrolled, ${n('pass')} not enrolled, ${n('invalid')} not classifiable), read at ${k.readAt}`
        : `kubernetes: waiting for the first list of pods; ${k.readAt ? `the pod policies read at ${k.readAt} stay in force` : 'no pod policy kept from an earlier run'}`,
    );
  }
  return out;
}

export const statusCommand = shared(
  new Command('status').description(
    'show what is loaded, attached and applied (read from the pins and state files; works without the agent)',
  ),
  ['bpffs', 'iptablesState', 'stateDir', 'json'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const { agentSummary } = await import('../../agent/state.js');
  const agent = agentSummary(o.stateDir);
  const modes = (await allModes(modeConfig(o))).filter((m) => m.installed());
  // The agent's mode first, when it is installed; the others after it.
  const chosen = agent && !('error' in agent) ? agent.mode : undefined;
  modes.sort((a, b) => Number(b.name === chosen) - Number(a.name === chosen));
  const reports = modes.map((m) => m.status());
  if (o.json) {
    const [first, ...rest] = reports;
    if (!first) return printJson({ installed: false, bpffs: o.bpffs, iptablesState: o.iptablesState, agent });
    return printJson({
      installed: true,
      mode: first.mode,
      agent,
      ...first.json,
      ...(rest.length ? { also: Object.fromEntries(rest.map((r) => [r.mode, r.json])) } : {}),
    });
  }
  printSections(agentSections(agent));
  if (reports.length === 0) {
    console.log(`meshredir is not installed here (no pins under ${o.bpffs}, no iptables state in ${o.iptablesState})`);
    process.exitCode = 3;
    return;
  }
  for (const r of reports) printSections(r.text);
});
