// cleanup.ts — `meshredir cleanup`: remove every program, link, pin and map meshredir made.
import { Command } from 'commander';
import { EbpfMode, DEFAULT_BPFFS } from '../../modes/ebpf/ebpf.js';
import { printJson } from '../output.js';
import { DEFAULT_OBJECT } from '../paths.js';
import { IptablesMode, DEFAULT_STATE } from '../../modes/iptables/iptables.js';
import { removeState, DEFAULT_STATE_DIR } from '../../agent/state.js';

export const cleanupCommand = new Command('cleanup')
  .description('detach and remove everything meshredir made under --bpffs (idempotent)')
  .option('--bpffs <dir>', 'bpffs directory of the agent', DEFAULT_BPFFS)
  .option('--iptables-state <file>', 'state file of the iptables mode', DEFAULT_STATE)
  .option('--state-dir <dir>', 'state directory of the agent (agent.json is removed)', DEFAULT_STATE_DIR)
  .option('--json', 'print one JSON object')
  .action((opts: { bpffs: string; iptablesState: string; stateDir: string; json?: boolean }) => {
    const mode = new EbpfMode({ bpffs: opts.bpffs, cgroupRoot: '/', object: DEFAULT_OBJECT });
    const r = { ...mode.cleanup(), iptablesNetns: new IptablesMode({ stateFile: opts.iptablesState, lockWait: 10 }).cleanup(), state: removeState(opts.stateDir, { bpffs: opts.bpffs, iptablesState: opts.iptablesState }) };
    if (opts.json) return printJson(r);
    if (r.state.kept) console.log(r.state.kept);
    if (r.detached.length === 0 && r.unpinned.length === 0 && r.iptablesNetns.length === 0 && r.state.removed.length === 0) console.log(`nothing to clean under ${opts.bpffs}, in ${opts.iptablesState} or ${opts.stateDir}`);
    else {
      if (r.state.removed.length) console.log(`removed ${r.state.removed.join(', ')}`);
      if (r.detached.length || r.unpinned.length) console.log(`detached ${r.detached.length} link(s), removed ${r.unpinned.length} pin(s) under ${opts.bpffs}`);
      if (r.iptablesNetns.length) console.log(`removed MESHREDIR chains from ${r.iptablesNetns.length} network namespace(s)`);
    }
  });
