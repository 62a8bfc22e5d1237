// tracer.ts — the bench's `meshredir trace --json` reader (crr's traced mode): the real CLI as a second
// process on the lab's pins, its output counted and dropped (never kept: a second of load is tens of
// thousands of lines), its end line read for the events it printed and those the ring lost.
import { spawn, type ChildProcess } from 'node:child_process';

export interface BenchTracer {
  child: ChildProcess;
  /** SIGINT, wait; what `trace` said at its end (events printed, lost), and the lines counted. */
  stop(): Promise<{ events: number; lost: number; lines: number }>;
}

/** Resolves once the trace holds the lease (its start line); one that fails is stopped first. */
export async function startTracer(cli: string, bpffs: string): Promise<BenchTracer> {
  const child = spawn(process.execPath, [cli, 'trace', '--json', '--bpffs', bpffs], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let lines = 0;
  let tail = ''; // the last line, possibly incomplete: the end line is the last one printed
  let last = '';
  let err = '';
  let started: () => void = () => {};
  const start = new Promise<void>((r) => (started = r));
  child.stdout!.on('data', (d: Buffer) => {
    const text = tail + d.toString();
    const nl = text.lastIndexOf('\n');
    if (nl < 0) {
      tail = text;
      return;
    }
    for (let i = text.indexOf('\n'); i >= 0 && i <= nl; i = text.indexOf('\n', i + 1)) lines++;
    last = text.slice(text.lastIndexOf('\n', nl - 1) + 1, nl);
    tail = text.slice(nl + 1);
    if (lines > 0) started();
  });
  child.stderr!.on('data', (d: Buffer) => (err = (err + d.toString()).slice(-2000)));
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGINT');
    const code = await exited;
    const end = JSON.parse(last || '{}') as { type?: string; events?: number; lost?: string };
    if (end.type !== 'end') throw new Error(`trace exited ${code} without its end line: ${err.trim()}`);
    return { events: end.events ?? 0, lost: Number(end.lost ?? 0), lines };
  };
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  try {
    await Promise.race([
      start,
      exited.then((c) => {
        throw new Error(`trace exited ${c} before it started: ${err.trim()}`);
      }),
    ]);
  } catch (e) {
    await stop().catch(() => undefined);
    throw e;
  } finally {
    clearTimeout(timer);
  }
  return { child, stop };
}
