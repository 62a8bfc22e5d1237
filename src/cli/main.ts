#!/usr/bin/env node
// main.ts — the CLI entry: runs the program, prints errors once, and alone decides exit codes.
import { CommanderError } from 'commander';
import { buildProgram } from './index.js';
import { UserError } from './output.js';
import { BpfError } from '../bpf/errors.js';
import { keepLibbpfDebug } from '../sys/libbpf.js';

// A reader that went away (`meshredir … | head`) is not an error.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const program = (await buildProgram(process.argv)).exitOverride();
const debug = process.argv.includes('--debug');
// With --debug, errors quote all of libbpf's log, its debug messages included.
if (debug) keepLibbpfDebug(true);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) {
    process.exit(e.exitCode === 0 ? 0 : 2);
  }
  const err = e as Error;
  console.error(`meshredir: ${err.message}`);
  if (err instanceof BpfError && err.log.length) {
    const lines = debug ? err.log : err.log.slice(-12);
    console.error(`libbpf said${debug ? '' : ' (last lines; --debug for all)'}:\n  ${lines.join('\n  ')}`);
  }
  if (debug) {
    let cause = (err as { cause?: unknown }).cause;
    while (cause instanceof Error) {
      console.error(`caused by: ${cause.message}`);
      cause = (cause as { cause?: unknown }).cause;
    }
    if (!(err instanceof UserError)) console.error(err.stack);
  }
  process.exit(err instanceof UserError ? err.exitCode : 1);
}
