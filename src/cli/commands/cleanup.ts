// cleanup.ts — `meshredir cleanup`: remove every program, link, pin and map meshredir made.
import { Command } from 'commander';
import { EbpfMode, DEFAULT_BPFFS } from '../../modes/ebpf/ebpf.js';
import { printJson } from '../output.js';
import { DEFAULT_OBJECT } from '../paths.js';

export const cleanupCommand = new Command('cleanup')
  .description('detach and remove everything meshredir made under --bpffs (idempotent)')
  .option('--bpffs <dir>', 'bpffs directory of the agent', DEFAULT_BPFFS)
  .option('--json', 'print one JSON object')
  .action((opts: { bpffs: string; json?: boolean }) => {
    const mode = new EbpfMode({ bpffs: opts.bpffs, cgroupRoot: '/', object: DEFAULT_OBJECT });
    const r = mode.cleanup();
    if (opts.json) return printJson(r);
    if (r.detached.length === 0 && r.unpinned.length === 0) console.log(`nothing to clean under ${opts.bpffs}`);
    else console.log(`detached ${r.detached.length} link(s), removed ${r.unpinned.length} pin(s) under ${opts.bpffs}`);
  });
