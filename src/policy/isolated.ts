// isolated.ts — parses policy files in a worker thread with a bounded heap and time. The byte limit alone
// does not bound a parse: 4 MiB of `[1,1,1,…]` is two million YAML nodes, 2 GiB and 15 s in the parser.
// In a worker, a file that needs more than PARSE_HEAP_MB or PARSE_TIMEOUT_MS is refused by name, and the
// agent's own heap and event loop are not touched.
import { Worker } from 'node:worker_threads';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parsePolicyText, type FileResult } from './load.js';

/** The parser's heap (V8 old generation) and time per file. A valid file within the entry limits
 * (65,536 CIDRs, ~2 MiB) needs ~150 MiB and ~2 s. */
export const PARSE_HEAP_MB = 256;
export const PARSE_TIMEOUT_MS = 30_000;

const script = fileURLToPath(new URL('./parse-worker.js', import.meta.url));

export interface ParseLimits {
  heapMb: number;
  timeoutMs: number;
}

/**
 * Parses files (text already read, within the byte limits) in a worker; results in the same order, each
 * with its text. Run from the TypeScript sources (unit tests), where no compiled worker exists, the files
 * are parsed in this thread.
 */
export async function parseIsolated(
  items: { file: string; text: string }[],
  o: ParseLimits = { heapMb: PARSE_HEAP_MB, timeoutMs: PARSE_TIMEOUT_MS },
): Promise<(FileResult & { text: string })[]> {
  if (items.length === 0) return [];
  if (!existsSync(script)) return items.map((i) => ({ ...parsePolicyText(i.text, i.file), text: i.text }));
  const out: (FileResult & { text: string })[] = [];
  let rest = items;
  while (rest.length) {
    const got = await runWorker(rest, o);
    got.results.forEach((r, i) => out.push({ ...r, text: rest[i]!.text }));
    const next = rest[got.results.length];
    if (got.failed && next) {
      out.push({
        file: next.file,
        policies: [],
        errors: [{ file: next.file, path: '', message: got.failed }],
        text: next.text,
      });
      rest = rest.slice(got.results.length + 1);
    } else rest = rest.slice(got.results.length);
  }
  return out;
}

const workerOptions = (o: ParseLimits) => ({
  resourceLimits: { maxOldGenerationSizeMb: o.heapMb, maxYoungGenerationSizeMb: 16, stackSizeMb: 4 },
});

/** A worker started ahead of need (its own start and imports take ~150 ms), for the next parse. */
let spare: Worker | null = null;

/**
 * Starts a parser worker now, so that the first parse does not wait for one to boot: the agent calls it
 * before it loads its mode, and the worker's start overlaps the load. Used once, by the next parse with
 * the default limits; unref'd, so it keeps nobody alive.
 */
export function prestartParser(): void {
  if (spare || !existsSync(script)) return;
  const w = new Worker(script, workerOptions({ heapMb: PARSE_HEAP_MB, timeoutMs: PARSE_TIMEOUT_MS }));
  w.unref();
  // One that fails before it is used is dropped; the parse then starts its own.
  w.on('error', () => undefined);
  w.once('exit', () => {
    if (spare === w) spare = null;
  });
  spare = w;
}

/** One worker over the items until it is done or fails on one (the results before it are kept). */
function runWorker(
  items: { file: string; text: string }[],
  o: ParseLimits,
): Promise<{ results: FileResult[]; failed?: string }> {
  return new Promise((resolve) => {
    const results: FileResult[] = [];
    let settled = false;
    let w: Worker;
    if (spare && o.heapMb === PARSE_HEAP_MB) {
      w = spare;
      spare = null;
      w.ref();
      w.postMessage(items);
    } else w = new Worker(script, { workerData: items, ...workerOptions(o) });
    const done = (failed?: string) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      void w.terminate();
      resolve(failed ? { results, failed } : { results });
    };
    const slow = () => done(`took more than ${o.timeoutMs / 1000} s to parse; not applied`);
    let timer = setTimeout(slow, o.timeoutMs);
    w.on('message', (r: FileResult) => {
      results.push(r);
      clearTimeout(timer);
      timer = setTimeout(slow, o.timeoutMs);
      if (results.length === items.length) done();
    });
    w.on('error', (e: Error & { code?: string }) =>
      done(
        e.code === 'ERR_WORKER_OUT_OF_MEMORY'
          ? `needs more than ${o.heapMb} MiB of memory to parse (too many YAML nodes); not applied`
          : `cannot be parsed: ${e.message}`,
      ),
    );
    w.on('exit', (code) => done(`the parser exited (${code}) before it was done`));
  });
}
