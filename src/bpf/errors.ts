// errors.ts — the one error class for kernel/libbpf failures: what was being done, the libbpf
// function, and the errno by name.
import { errnoName, messages } from '../sys/errno.js';

export { errnoName };

export class BpfError extends Error {
  override readonly name = 'BpfError';
  /** Positive errno. */
  readonly errno: number;
  readonly code: string;
  constructor(
    /** What was being done, e.g. "attach mr_connect4 to /pods/a". */
    readonly what: string,
    /** The libbpf (or kernel) function that failed. */
    readonly op: string,
    errno: number,
    /** libbpf's own log lines for this operation (verifier output, …). */
    readonly log: string[] = [],
  ) {
    const e = Math.abs(errno);
    const code = errnoName(e);
    super(`${what}: ${op}: ${code} (${messages[code] ?? 'error'})`);
    this.errno = e;
    this.code = code;
  }
}

/** A load error with the failing program and the verifier's verdict, from libbpf's log. */
export function withVerifier(e: BpfError): string {
  const prog = e.log.find((l) => /prog '.*': failed to load/.test(l))?.replace(/^libbpf: /, '');
  const at = e.log.findIndex((l) => /^processed \d+ insns/.test(l));
  const verdict = at > 0 ? e.log[at - 1] : undefined;
  return [e.message, prog, verdict].filter(Boolean).join('; ');
}
