// table.ts — text tables for people (the CLI and the bench report print them). cli-table3 is loaded on
// the first table, not when a command starts.
import { createRequire } from 'node:module';

type TableCtor = new (o: object) => { push(row: string[]): void; toString(): string };
let Table: TableCtor | undefined;

export function table(head: string[], rows: (string | number | boolean)[][]): string {
  Table ??= createRequire(import.meta.url)('cli-table3') as TableCtor;
  const t = new Table({
    head,
    style: { head: [], border: [] },
    chars: { mid: '', 'left-mid': '', 'mid-mid': '', 'right-mid': '' },
  });
  for (const r of rows) t.push(r.map(String));
  return t.toString();
}
