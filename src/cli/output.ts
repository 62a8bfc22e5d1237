// output.ts — how commands print: one JSON document with --json, sections of lines and tables for people.
import type { Section } from '../modes/mode.js';
import { table } from '../util/table.js';

export { table };

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, (_, v: unknown) => (typeof v === 'bigint' ? v.toString() : v), 2)}\n`);
}

export function printSections(sections: Section[]): void {
  for (const s of sections) {
    for (const l of s.lines ?? []) console.log(l);
    if (s.table) console.log(table(s.table.head, s.table.rows));
  }
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
