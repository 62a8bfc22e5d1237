// tracing.ts — the trace kernel tests' tracer: `meshredir trace --json` as a second process beside the lab's
// agent, its JSON lines, and every tracer a test started stopped after it (also when the test failed).
import { afterEach } from 'vitest';
import { waitFor, type Env, type Proc } from './harness.js';
import type { TraceRecord } from '../../src/modes/ebpf/trace-event.js';

export type Decision = { type: 'decision' } & TraceRecord;
export type Line = Decision | { type: 'start' | 'lost' | 'end'; lost: string; events?: number };

/** The JSON lines a tracer printed so far. */
export const lines = (p: Proc): Line[] =>
  p.out
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Line);
export const decisions = (p: Proc): Decision[] => lines(p).filter((l): l is Decision => l.type === 'decision');

/**
 * Returns `trace(...filters)`, which starts `meshredir trace --json` on the env's bpffs and resolves once it
 * has taken the lease; the tracers started in a test are stopped after it.
 */
export function useTracers(env: () => Env): (...args: string[]) => Promise<Proc> {
  const tracers: Proc[] = [];
  afterEach(async () => {
    for (const t of tracers.splice(0)) await env().stop(t);
  });
  return async (...args) => {
    const p = env().cli(['trace', '--json', '--bpffs', env().bpffs, ...args]);
    tracers.push(p);
    await waitFor(() => p.out.includes('"type":"start"'), 'trace started', p);
    return p;
  };
}
