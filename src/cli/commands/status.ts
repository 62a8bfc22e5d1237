// status.ts — `meshredir status`: what each installed mode reports from what it keeps on the host (pins,
// state files), and what the agent's state file and heartbeat say, whether or not the agent runs.
import { Command } from 'commander';
import { shared, sharedSchema, parseOptions, modeConfig } from '../options.js';
import { printJson, printSections, UserError } from '../output.js';
import { allModes } from '../../modes/index.js';
import type { Mode, StatusReport } from '../../modes/mode.js';
import type { AgentSummary } from '../../agent/state.js';

const flags = sharedSchema(['bpffs', 'stateDir', 'iptablesState', 'json']);

function agentLines(a: AgentSummary): string[] {
  if (!a) return [];
  if ('error' in a) return [`agent state: ${a.error}`];
  const how = a.requested === 'auto' ? `chosen by --mode auto: ${a.reason}` : a.reason;
  const out = [`agent: mode ${a.mode} (${how}) · since ${a.decidedAt} · policies ${a.policies}`];
  const p = a.lastPass;
  const every = a.interval === null ? '' : `; a pass every ${a.interval} s`;
  const when = p.at
    ? `last pass completed ${p.ok === false ? 'FAILED' : 'ok'} at ${p.at} (${p.agoSeconds} s ago${every})`
    : `no pass completed yet${every}`;
  if (a.running === null) out.push(`agent not running (last pid ${a.pid}); ${when}`);
  else out.push(`agent running (pid ${a.running}); ${when}${p.stale ? ' — STALE: the agent looks stuck' : ''}`);
  const r = a.lastReconcile;
  if (r) {
    out.push(
      `last change: ${r.ok ? 'ok' : 'FAILED'} at ${r.at} (${r.reason}): ${r.policies} policies, ${r.writes} writes, ${r.deletes} deletes`,
    );
    for (const e of r.errors) out.push(`  error: ${e}`);
    for (const w of r.warnings) out.push(`  warning: ${w}`);
    for (const o of (r.outcomes ?? []).filter((x) => x.state !== 'applied'))
      out.push(`  policy ${o.policy} (${o.file}): ${o.state}${o.reason ? `: ${o.reason}` : ''}`);
  }
  return out;
}

/** Whether a mode is installed; a mode this process may not look at is reported, not taken for absent. */
function look(m: Mode): { mode: Mode; installed: boolean } | { mode: Mode; unreadable: string } {
  try {
    return { mode: m, installed: m.installed() };
  } catch (e) {
    return { mode: m, unreadable: (e as Error).message };
  }
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
  const looked = (await allModes(modeConfig(o))).map(look);
  const unreadable = looked.flatMap((x) => ('unreadable' in x ? [x.unreadable] : []));
  const modes = looked.flatMap((x) => ('installed' in x && x.installed ? [x.mode] : []));
  // The agent's mode first, when it is installed; the others after it.
  const chosen = agent && !('error' in agent) ? agent.mode : undefined;
  modes.sort((a, b) => Number(b.name === chosen) - Number(a.name === chosen));
  const reports: StatusReport[] = [];
  for (const m of modes) {
    try {
      reports.push(m.status());
    } catch (e) {
      unreadable.push(`${m.name}: ${(e as Error).message}`);
    }
  }
  if (o.json) {
    const [first, ...rest] = reports;
    if (!first) {
      printJson({
        installed: unreadable.length ? null : false,
        ...(unreadable.length ? { unreadable } : {}),
        bpffs: o.bpffs,
        iptablesState: o.iptablesState,
        agent,
      });
    } else {
      printJson({
        installed: true,
        mode: first.mode,
        agent,
        ...first.json,
        ...(rest.length ? { also: Object.fromEntries(rest.map((r) => [r.mode, r.json])) } : {}),
        ...(unreadable.length ? { unreadable } : {}),
      });
    }
  } else {
    for (const l of agentLines(agent)) console.log(l);
    for (const r of reports) printSections(r.text);
    if (reports.length === 0 && unreadable.length === 0) {
      console.log(
        `meshredir is not installed here (no pins under ${o.bpffs}, no iptables state in ${o.iptablesState})`,
      );
      process.exitCode = 3;
      return;
    }
  }
  // Not "not installed": this user cannot tell (EACCES/EPERM), which is a failure of its own.
  if (unreadable.length) throw new UserError(`cannot tell what is installed: ${unreadable.join('; ')}`, 1);
});
