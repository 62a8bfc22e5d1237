// cleanup.ts — `meshredir cleanup`: remove every program, link, pin and map meshredir made.
import { Command } from 'commander';
import { EbpfMode, DEFAULT_BPFFS } from '../../modes/ebpf/ebpf.js';
import { printJson, UserError } from '../output.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { IptablesMode, DEFAULT_STATE } from '../../modes/iptables/iptables.js';
import { removeState, DEFAULT_STATE_DIR } from '../../agent/state.js';

export const cleanupCommand = new Command('cleanup')
  .description('detach and remove everything meshredir made under --bpffs and in the iptables state (idempotent)')
  .option('--bpffs <dir>', 'bpffs directory of the agent', DEFAULT_BPFFS)
  .option('--iptables-state <file>', 'state file of the iptables mode', DEFAULT_STATE)
  .option('--state-dir <dir>', 'state directory of the agent (agent.json is removed)', DEFAULT_STATE_DIR)
  .option(
    '--force',
    'remove everything even while sockets are on the fast path (they keep it until they close, without the kTLS guard)',
  )
  .option('--json', 'print one JSON object')
  .action((opts: { bpffs: string; iptablesState: string; stateDir: string; force?: boolean; json?: boolean }) => {
    const mode = new EbpfMode({ bpffs: opts.bpffs, cgroupRoot: '/', object: DEFAULT_OBJECT });
    const r = {
      ...mode.cleanup({ force: Boolean(opts.force) }),
      iptablesNetns: new IptablesMode({ stateFile: opts.iptablesState, lockWait: 10 }).cleanup(),
      state: removeState(opts.stateDir, { bpffs: opts.bpffs, iptablesState: opts.iptablesState }),
    };
    const failed = r.iptablesNetns.filter((n) => n.outcome === 'failed');
    if (failed.length) process.exitCode = 1;
    const kept = r.kept.length
      ? `kept ${r.kept.join(', ')} for ${r.openAccelerated} socket(s) still on the fast path: the kernel keeps their fast path until they close, and these pins keep refusing kTLS on them. ` +
        'Redirection has stopped; run cleanup again once they have closed, or use --force (they then keep the fast path, without the kTLS guard).'
      : null;
    if (r.undrained > 0 && !opts.json)
      console.error(
        `${r.undrained} redirected handshake(s) were still in flight after 5 s: their proxy may not find their original destination`,
      );
    if (opts.json) printJson(r);
    else if (r.state.kept) console.log(r.state.kept);
    if (opts.json) {
      // printed above
    } else if (
      r.detached.length === 0 &&
      r.unpinned.length === 0 &&
      r.kept.length === 0 &&
      r.iptablesNetns.length === 0 &&
      r.state.removed.length === 0
    )
      console.log(`nothing to clean under ${opts.bpffs}, in ${opts.iptablesState} or ${opts.stateDir}`);
    else {
      if (r.state.removed.length) console.log(`removed ${r.state.removed.join(', ')}`);
      if (r.detached.length || r.unpinned.length)
        console.log(`detached ${r.detached.length} link(s), removed ${r.unpinned.length} pin(s) under ${opts.bpffs}`);
      for (const n of r.iptablesNetns)
        (n.outcome === 'failed' ? console.error : console.log)(
          `${n.outcome === 'failed' ? 'FAILED: ' : ''}${n.policy ? `policy ${n.policy}: ` : ''}${n.detail}`,
        );
      if (failed.length)
        console.error(
          `${failed.length} network namespace(s) still hold MESHREDIR rules; they stay in ${opts.iptablesState} for the next cleanup`,
        );
    }
    if (kept) throw new UserError(kept);
  });
