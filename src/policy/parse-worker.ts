// parse-worker.ts — the worker thread of isolated.ts: parses the policy files it is given, one message per
// file, in a heap the main thread bounded.
import { parentPort, workerData } from 'node:worker_threads';
import { parsePolicyText } from './load.js';

for (const { file, text } of workerData as { file: string; text: string }[]) {
  parentPort!.postMessage(parsePolicyText(text, file));
}
