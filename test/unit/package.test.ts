// package.test.ts — every package the shipped code loads at run time is a dependency, not a
// devDependency (an install with --omit=dev must still run, e.g. pino-pretty's transport on a TTY).
import { describe, expect, it } from 'vitest';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};

function sources(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? sources(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** Bare package names a source file loads: static and dynamic imports, and pino transport targets. */
function runtimePackages(text: string): string[] {
  const specs = [
    ...[...text.matchAll(/^\s*import\s+(?!type\b)[^'"]*?from\s+'([^']+)'/gm)].map((m) => m[1]!),
    ...[...text.matchAll(/\bimport\(\s*'([^']+)'\s*\)/g)].map((m) => m[1]!),
    ...[...text.matchAll(/\btarget:\s*'([^']+)'/g)].map((m) => m[1]!),
  ];
  return specs
    .filter((s) => !s.startsWith('.') && !s.startsWith('node:') && !s.startsWith('/'))
    .map((s) => (s.startsWith('@') ? s.split('/').slice(0, 2).join('/') : s.split('/')[0]!));
}

describe('package.json', () => {
  it('lists every package src/ loads at run time under dependencies', () => {
    const used = new Map<string, string>();
    for (const f of sources(join(ROOT, 'src')))
      for (const p of runtimePackages(readFileSync(f, 'utf8'))) used.set(p, f.slice(ROOT.length + 1));
    expect(used.get('pino-pretty')).toBe('src/util/log.ts'); // the scan sees transport targets
    const missing = [...used]
      .filter(([p]) => !(p in pkg.dependencies))
      .map(([p, f]) => `${p} (used by ${f})${p in (pkg.devDependencies ?? {}) ? ' is only a devDependency' : ''}`);
    expect(missing).toEqual([]);
  });
});
