// trace.ts — `meshredir trace`: prints the eBPF programs' decisions live, while the agent runs, until
// SIGINT/SIGTERM (docs/trace.md). The programs write events only while a trace runs.
import { Command, Option } from 'commander';
import { z } from 'zod';
import { shared, sharedSchema, parseOptions } from '../options.js';
import { UserError } from '../output.js';
import { Pins } from '../../modes/ebpf/pins.js';
import { startTrace, type TraceSession } from '../../modes/ebpf/trace.js';
import { formatLine, type TraceRecord } from '../../modes/ebpf/trace-event.js';

const flags = sharedSchema(['bpffs']).extend({
  policy: z.string().min(1).max(253).optional(),
  cgroup: z.string().min(1).optional(),
  pid: z.coerce.number().int().min(1).max(4_194_304).optional(),
  json: z.boolean().optional(),
});

/** One JSON object per line: decisions (type "decision"), lost counts when they grow, and the end. */
const line = (o: Record<string, unknown>) =>
  process.stdout.write(`${JSON.stringify(o, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v))}\n`);

export const traceCommand = shared(
  new Command('trace')
    .description(
      "print the eBPF programs' decisions live (connects redirected, bypassed with their reason, refused; SO_ORIGINAL_DST answers) until SIGINT/SIGTERM",
    )
    .option('--policy <name>', 'only decisions of this policy (filtered in the kernel)')
    .option('--cgroup <path>', 'only calls from this cgroup or below (policy path such as /pods/a, or a directory)')
    .option('--pid <n>', 'only calls from this process (filtered in the kernel)')
    .addOption(new Option('--json', 'one JSON object per line')),
  ['bpffs'],
).action(async (raw: Record<string, unknown>) => {
  const o = parseOptions(flags, raw);
  const pins = new Pins(o.bpffs);
  let session: TraceSession;
  let shownLost = 0n;
  const print = (r: TraceRecord) => {
    if (o.json) line({ type: 'decision', ...r });
    else console.log(formatLine(r));
  };
  try {
    session = startTrace(
      pins,
      {
        ...(o.policy !== undefined ? { policy: o.policy } : {}),
        ...(o.cgroup !== undefined ? { cgroup: o.cgroup } : {}),
        ...(o.pid !== undefined ? { pid: o.pid } : {}),
      },
      print,
    );
  } catch (e) {
    throw new UserError((e as Error).message, 1);
  }
  // Whatever ends the process (a signal, a closed stdout, an error) gives the lease back first.
  const finish = () => session.stop();
  process.once('exit', finish);
  const showLost = () => {
    const lost = session.lost();
    if (lost === shownLost) return;
    shownLost = lost;
    if (o.json) line({ type: 'lost', lost });
    else console.error(`meshredir trace: ${lost} event(s) lost so far (the ring was full)`);
  };
  if (o.json) line({ type: 'start', lost: 0n, filters: { policy: o.policy, cgroup: o.cgroup, pid: o.pid } });
  else console.error('meshredir trace: tracing; Ctrl-C to stop');
  let failure: string | null = null;
  let timer: NodeJS.Timeout | undefined;
  await new Promise<void>((resolve) => {
    timer = setInterval(() => {
      showLost();
      failure = session.leaseLost() ?? session.gone();
      if (failure) resolve();
    }, 1000);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.once(sig, () => resolve());
  });
  clearInterval(timer);
  const end = finish();
  process.removeListener('exit', finish);
  if (o.json) line({ type: 'end', events: end.events, lost: end.lost });
  else console.error(`meshredir trace: ${end.events} event(s), ${end.lost} lost`);
  if (failure) throw new UserError(failure, 1);
});
