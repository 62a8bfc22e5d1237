// agent-proc.ts — the real agent as the bench runs it: `meshredir agent --mode ebpf` on a bpffs and state
// directory of its own, with --cleanup-on-exit; started, waited for until redirect-ready, and stopped.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { EbpfMode } from '../modes/ebpf/index.js';

export interface BenchAgent {
  pid: number;
  /** SIGTERM, wait, and remove whatever a crashed agent left in its bpffs. */
  stop(): Promise<void>;
}

/** Resolves once the agent logs redirect-ready (60 s at most); an agent that fails is stopped first. */
export async function startAgent(
  cli: string,
  a: { policies: string; cgroupRoot: string; bpffs: string; extra?: string[] },
): Promise<BenchAgent> {
  const agent = spawn(
    process.execPath,
    [
      cli,
      'agent',
      '--policies',
      a.policies,
      '--cgroup-root',
      a.cgroupRoot,
      '--bpffs',
      a.bpffs,
      '--mode',
      'ebpf',
      '--state-dir',
      `${a.policies}-state`,
      '--cleanup-on-exit',
      ...(a.extra ?? []),
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  const exited = new Promise<void>((r) => agent.on('exit', () => r()));
  const stop = async () => {
    if (agent.exitCode === null && agent.signalCode === null) agent.kill('SIGTERM');
    await exited;
    // The agent removes its pins on exit (--cleanup-on-exit); a crashed one would leave them.
    if (existsSync(a.bpffs)) new EbpfMode({ bpffs: a.bpffs }).cleanup({ force: true });
  };
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`agent not ready after 60 s: ${err.slice(-300)}`)), 60_000);
    agent.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('redirect-ready')) {
        clearTimeout(timer);
        resolve();
      }
    });
    agent.on('exit', (c) => {
      clearTimeout(timer);
      reject(new Error(`agent exited ${c}: ${err.slice(-300)}`));
    });
  }).catch(async (e) => {
    await stop();
    throw e;
  });
  return { pid: agent.pid!, stop };
}
