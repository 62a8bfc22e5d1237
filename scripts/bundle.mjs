#!/usr/bin/env node
// bundle.mjs — `make ts` after tsc: bundles the CLI (dist/cli/main.js) and the two files it starts as
// threads or processes (the policy parse worker, the verify child) with esbuild, into dist/cli/. Node's
// ESM loader spent most of a start resolving and compiling ~100 small files; the bundle is a few files,
// and code splitting keeps every `await import()` a separate chunk loaded only by the commands using it.
// The rest of dist/ stays tsc's output (tests import dist/bpf/*.js).
import { build } from 'esbuild';
import { readdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const out = join(root, 'dist', 'cli');
// A chunk is named [name]-[hash]; an earlier build's would pile up beside tsc's files.
const chunk = /-[A-Z0-9]{8}\.js(\.map)?$/;
for (const f of readdirSync(out)) if (chunk.test(f)) rmSync(join(out, f));

await build({
  absWorkingDir: root,
  // Flat in dist/cli: import.meta.url of every chunk is there, as it is for main.js (paths.ts finds the
  // package root two levels up; isolated.ts and verify.ts start parse-worker.js and verify-child.js
  // beside themselves).
  entryPoints: ['src/cli/main.ts', 'src/policy/parse-worker.ts', 'src/modes/ebpf/verify-child.ts'],
  entryNames: '[name]',
  chunkNames: '[name]-[hash]',
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  sourcemap: true,
  logLevel: 'warning',
  // Native addons and the packages that find files of their own at run time (pino's transports run in
  // workers by path, vega and the Kubernetes client load data and optional parts) stay in node_modules.
  // prom-client is bundled: ~35 ms to load from node_modules, ~18 ms bundled, on the agent's start.
  external: ['@2060.io/*', 'pino', 'pino-pretty', 'vega', 'vega-lite', '@kubernetes/client-node', 'cli-table3'],
  // Bundled CommonJS packages (commander, yaml) call require() for Node's own modules.
  banner: {
    js: "import { createRequire as __mrCreateRequire } from 'node:module'; const require = __mrCreateRequire(import.meta.url);",
  },
});
