// bpf-uapi.test.ts — vmlinux.h is a build input, not a promise about the target kernel: the programs may
// take from it only constants of the kernel's UAPI (stable on every kernel). Kernel structs are read
// through CO-RE (vmlinux.h marks them preserve_access_index), so libbpf relocates them at load; a
// kernel-internal enum value would instead be baked in as the build host's kernel numbered it.
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join, resolve } from 'node:path';

const ROOT = resolve(import.meta.dirname, '..', '..');
const VMLINUX_H = join(ROOT, 'build', 'vmlinux.h');
const UAPI = '/usr/include/linux'; // linux-libc-dev, installed with libc6-dev by scripts/deps.sh

const stripComments = (s: string) => s.replace(/\/\*[\s\S]*?\*\//g, ' ').replace(/\/\/.*$/gm, ' ');

function uapiText(dir: string): string {
  return readdirSync(dir, { withFileTypes: true })
    .map((e) =>
      e.isDirectory()
        ? uapiText(join(dir, e.name))
        : e.name.endsWith('.h')
          ? readFileSync(join(dir, e.name), 'utf8')
          : '',
    )
    .join('\n');
}

describe.runIf(process.env.CI === 'true' || (existsSync(VMLINUX_H) && existsSync(UAPI)))(
  'BPF sources and vmlinux.h',
  () => {
    it('every vmlinux.h constant the programs use is UAPI', () => {
      const enumerators = new Set(
        [...readFileSync(VMLINUX_H, 'utf8').matchAll(/^\s+([A-Z][A-Z0-9_]+) = /gm)].map((m) => m[1]!),
      );
      const bpf = join(ROOT, 'bpf');
      const sources = readdirSync(bpf).map((n) => stripComments(readFileSync(join(bpf, n), 'utf8')));
      const defined = new Set(
        sources.flatMap((s) => [...s.matchAll(/#define\s+([A-Z][A-Z0-9_]+)/g)].map((m) => m[1]!)),
      );
      const used = new Set(
        sources
          .flatMap((s) => [...s.matchAll(/\b[A-Z][A-Z0-9_]{2,}\b/g)].map((m) => m[0]))
          .filter((w) => enumerators.has(w) && !defined.has(w)),
      );
      expect(used.size).toBeGreaterThan(5); // the check sees the programs' constants at all
      const uapi = uapiText(UAPI);
      const notUapi = [...used].filter((w) => !new RegExp(`\\b${w}\\b`).test(uapi));
      expect(notUapi, 'kernel-internal constants: use bpf_core_enum_value() for these').toEqual([]);
    });

    it('vmlinux.h makes every kernel struct CO-RE relocatable', () => {
      expect(readFileSync(VMLINUX_H, 'utf8')).toContain(
        '#pragma clang attribute push (__attribute__((preserve_access_index)), apply_to = record)',
      );
    });
  },
);
