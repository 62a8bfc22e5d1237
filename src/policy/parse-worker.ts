// parse-worker.ts — the worker thread of isolated.ts: parses the policy files it is given (as workerData,
// or in the first message to a worker started ahead of need), one message per file, in a heap the main
// thread bounded.
import { parentPort, workerData } from 'node:worker_threads';
import { parsePolicyText } from './load.js';

type Items = { file: string; text: string }[];
const parseAll = (items: Items): void => {
  for (const { file, text } of items) parentPort!.postMessage(parsePolicyText(text, file));
};

if (workerData) parseAll(workerData as Items);
else parentPort!.once('message', parseAll);
