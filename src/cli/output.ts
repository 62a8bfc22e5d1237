// output.ts — how commands print: one JSON document with --json, tables for people otherwise.
import Table from 'cli-table3';

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

export function table(head: string[], rows: (string | number | boolean)[][]): string {
  const t = new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const r of rows) t.push(r.map(String));
  return t.toString();
}

/** A failure whose message is for the user; the CLI entry prints it and exits with `code`. */
export class UserError extends Error {
  constructor(
    message: string,
    readonly exitCode = 1,
  ) {
    super(message);
  }
}
