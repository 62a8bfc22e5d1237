// cleanup.ts — `meshredir cleanup`: every mode removes everything it made (pins, links, maps, MESHREDIR_*
// chains), then the agent's state file when it belongs to these paths. Idempotent. Refused while an agent
// holds the installation's lock (it would put everything back within its interval) unless --force.
import { Command } from 'commander';
import { z } from 'zod';
import { existsSync } from 'node:fs';
import { shared, sharedSchema, parseOptions, modeConfig } from '../options.js';
import { printJson, UserError } from '../output.js';
import { allModes } from '../../modes/index.js';

const flags = sharedSchema(['bpffs', 'iptablesState', 'stateDir', 'json']).extend({ force: z.boolean().optional() });

export const cleanupCommand = shared(
  new Command('cleanup')
    .description('detach and remove everything meshredir made under --bpffs and in the iptables state (idempotent)')
    .option(
      '--force',
      'remove everything even while an agent runs (it puts back what it manages at its next pass unless stopped) or sockets are on the fast path (they keep it until they close, without the kTLS guard)',
    ),
  ['bpffs', 'iptablesState', 'stateDir', 'json'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const [{ removeState, stateLockPath }, { lockForCleanup, iptablesLockPath }] = await Promise.all([
    import('../../agent/state.js'),
    import('../../agent/lock.js'),
  ]);
  // The agent's locks, held while removing, so that no agent starts half-way through.
  const locks = lockForCleanup({ stateDir: o.stateDir, bpffs: o.bpffs, iptablesState: o.iptablesState });
  const running = locks.held.map(
    (h) => `an agent${h.pid === null ? '' : ` (pid ${h.pid})`} holds the lock on ${h.path} (${h.what})`,
  );
  try {
    if (running.length && !o.force)
      throw new UserError(
        `${running.join('; ')}: it would put back what it manages within its interval. Stop it first, or use --force to remove everything anyway`,
      );
    if (running.length)
      console.error(
        `warning: ${running.join('; ')}; removing everything anyway (--force): unless it is stopped, it puts back what it manages at its next pass`,
      );
    const reports = (await allModes(modeConfig(o))).map((m) => m.cleanup({ force: Boolean(o.force) }));
    const ipLock = locks.taken.find((l) => l.path === iptablesLockPath(o.iptablesState));
    if (ipLock && !existsSync(o.iptablesState)) ipLock.unlink();
    const ownsStateLock = locks.taken.some((l) => l.path === stateLockPath(o.stateDir));
    const state = removeState(
      o.stateDir,
      { bpffs: o.bpffs, iptablesState: o.iptablesState },
      ownsStateLock ? stateLockPath(o.stateDir) : undefined,
    );
    const kept = reports.flatMap((r) => r.kept);
    const failed = reports.flatMap((r) => r.failed);
    if (o.json) {
      printJson({ ...Object.fromEntries(reports.map((r) => [r.mode, r.json])), state, kept, failed, running });
    } else {
      for (const r of reports) for (const n of r.notes) console.error(n.message);
      if (state.kept) console.log(state.kept);
      const removed = reports.flatMap((r) => r.removed);
      if (removed.length === 0 && kept.length === 0 && failed.length === 0 && state.removed.length === 0) {
        console.log(`nothing to clean under ${o.bpffs}, in ${o.iptablesState} or ${o.stateDir}`);
      }
      if (state.removed.length) console.log(`removed ${state.removed.join(', ')}`);
      for (const l of removed) console.log(l);
      for (const l of failed) console.error(`FAILED: ${l}`);
    }
    if (kept.length) throw new UserError(kept.join('\n'));
    if (failed.length) process.exitCode = 1;
  } finally {
    for (const l of locks.taken) l.release();
  }
});
