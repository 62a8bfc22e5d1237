// faults.ts — the one seam for fault injection in tests: MESHREDIR_FAULT names a fault point, and the
// code at that point asks here whether to fail. Unset (always, outside the kernel tests), every call is
// a comparison against undefined. The points, and what each does, are listed in docs/testing.md:
//   after-load          the eBPF load is killed (SIGKILL) with maps pinned and nothing attached
//   between-attach[:N]  the eBPF load is killed after its Nth attach (default 1)
//   fail-attach:NAME    attaching program NAME throws (one attached on demand: refused as by the kernel,
//                       at every try, modes/ebpf/on-demand.ts)
//   watch-error         the policy directory's watcher emits an error 300 ms after start
//   fail-write:MAP:NAME writing policy NAME's entries to eBPF map MAP fails (ENOSPC) after half of them
//                       were written (the per-policy rollback's test)
const FAULT = process.env.MESHREDIR_FAULT;

/** Whether the fault `point` (with an optional argument, e.g. a program name) is injected. */
export function faultAt(point: string, arg?: string): boolean {
  if (FAULT === undefined) return false;
  return arg === undefined ? FAULT === point : FAULT === `${point}:${arg}`;
}

/** Dies as a crash would (no cleanup, no exit handlers) when the fault `point` is injected. */
export function crashAt(point: string): void {
  if (faultAt(point)) process.kill(process.pid, 'SIGKILL');
}

/** between-attach[:N]: dies after the Nth attach of a load. */
export function crashAfterAttach(attached: number): void {
  const f = /^between-attach(?::(\d+))?$/.exec(FAULT ?? '');
  if (f && attached === Number(f[1] ?? 1)) process.kill(process.pid, 'SIGKILL');
}

/** fail-attach:NAME: attaching NAME throws. */
export function failAttach(name: string, attachedSoFar: number): void {
  if (faultAt('fail-attach', name)) {
    throw new Error(
      `attach ${name}: injected failure (MESHREDIR_FAULT, after ${attachedSoFar} attach(es) of this load)`,
    );
  }
}
