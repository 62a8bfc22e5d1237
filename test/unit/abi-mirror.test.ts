// abi-mirror.test.ts — src/bpf/abi.ts against the built object's BTF (opened, never loaded: no root): the
// struct codecs and the enum mirrors match, and a constant that differs on either side is named.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync, cpSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { BpfObject } from '../../src/bpf/object.js';
import { ABI_ENUMS, MAPS, STRUCT_CODECS } from '../../src/bpf/abi.js';
import type { AbiEnums, EnumMirror } from '../../src/bpf/mirror.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const OBJECT = join(ROOT, 'build', 'meshredir.bpf.o');
const HEADER = join(ROOT, 'bpf', 'mr_abi.h');

/** ABI_ENUMS with the mirror of `cName` replaced (or dropped, when `values` is null). */
function withMirror(cName: string, values: Record<string, number> | null): AbiEnums {
  const mirrors = ABI_ENUMS.mirrors.flatMap((m): EnumMirror[] =>
    m.cName !== cName ? [m] : values ? [{ ...m, values }] : [],
  );
  return { ...ABI_ENUMS, mirrors };
}
const mirrorOf = (cName: string) => ABI_ENUMS.mirrors.find((m) => m.cName === cName)!.values;

describe('the ABI mirror against the built object', () => {
  let obj: BpfObject;
  beforeAll(() => {
    if (!existsSync(OBJECT)) throw new Error(`${OBJECT} is not built (run make bpf)`);
    obj = BpfObject.open(OBJECT);
  });
  afterAll(() => obj?.close());

  it('matches: every struct codec and every enum mirror, and every enum of struct mr_abi is mirrored', () => {
    expect(obj.checkAbi(STRUCT_CODECS)).toEqual([]);
    expect(ABI_ENUMS.mirrors.map((m) => m.cName).sort()).toEqual(
      [
        'mr_action',
        'mr_cg_kind',
        'mr_dns_flag',
        'mr_dns_sock_flag',
        'mr_fast_flag',
        'mr_gauge',
        'mr_in_event_kind',
        'mr_in_flag',
        'mr_in_sk_flag',
        'mr_limit',
        'mr_orig_flag',
        'mr_owner_kind',
        'mr_policy_flag',
        'mr_sk_flag',
        'mr_trace_filter',
        'mr_trace_hook',
        'mr_trace_table',
        'mr_trace_verdict',
      ].sort(),
    );
  });

  it("lists only meshredir's maps, not the internal .rodata map that holds mr_abi", () => {
    const names = obj.mapNames();
    expect(names.filter((n) => !n.startsWith('mr_'))).toEqual([]);
    expect(names).toEqual(expect.arrayContaining(Object.keys(MAPS)));
  });

  it('names the enum and the enumerator whose value differs', () => {
    const wrong = withMirror('mr_cg_kind', { ...mirrorOf('mr_cg_kind'), BYPASS: 3 });
    expect(obj.checkAbi([], wrong)).toEqual(['enum mr_cg_kind: MR_CG_BYPASS = 2 in BTF, BYPASS = 3 in the mirror']);
    const flags = withMirror('mr_policy_flag', { ...mirrorOf('mr_policy_flag'), ACCELERATE: 1 << 6 });
    expect(obj.checkAbi([], flags)).toEqual([
      'enum mr_policy_flag: MR_F_ACCELERATE = 32 in BTF, ACCELERATE = 64 in the mirror',
    ]);
  });

  it('names an enumerator missing from either side, a missing mirror and a mirror of no enum', () => {
    const { MAX: _max, ...gauges } = mirrorOf('mr_gauge');
    expect(obj.checkAbi([], withMirror('mr_gauge', gauges))).toEqual([
      'enum mr_gauge: MR_G_MAX = 2 in BTF missing from the mirror',
    ]);
    expect(obj.checkAbi([], withMirror('mr_owner_kind', { ...mirrorOf('mr_owner_kind'), PID: 3 }))).toEqual([
      'enum mr_owner_kind: MR_OWNER_PID not in BTF (PID = 3 in the mirror)',
    ]);
    expect(obj.checkAbi([], withMirror('mr_sk_flag', null))).toEqual([
      'enum mr_sk_flag: a field type of struct mr_abi in BTF, with no mirror',
    ]);
    const extra = {
      ...ABI_ENUMS,
      mirrors: [...ABI_ENUMS.mirrors, { cName: 'mr_nothing', prefix: 'MR_N_', values: {} }],
    };
    expect(obj.checkAbi([], extra)).toEqual(["enum mr_nothing: not in the object's BTF"]);
    expect(obj.checkAbi([], { ...ABI_ENUMS, anchor: 'mr_nothing' })).toEqual([
      "struct mr_nothing: not in the object's BTF (its fields bring the shared enums there)",
    ]);
  });
});

describe('bpf/mr_abi.h', () => {
  const text = readFileSync(HEADER, 'utf8');

  it('declares its constants as enumerators (a #define would not reach BTF) and lists every enum in struct mr_abi', () => {
    expect(text.match(/^#define\s+\w+.*$/gm)).toEqual(['#define MR_ABI_H']);
    const anchor = /struct mr_abi \{([^}]*)\}/.exec(text)![1]!;
    const declared = [...text.matchAll(/^enum (\w+) \{/gm)].map((m) => m[1]);
    expect(declared.length).toBeGreaterThan(0);
    for (const e of declared) expect(anchor, `enum ${e} is no field type of struct mr_abi`).toMatch(`enum ${e} `);
  });

  it('a value changed on the C side only makes the check fail, naming the enum and the enumerator', () => {
    // The header with MR_CG_BYPASS moved to 3, compiled into an object by the Makefile's own clang flags.
    const dir = mkdtempSync(join(tmpdir(), 'meshredir-abi-'));
    try {
      cpSync(join(ROOT, 'bpf'), join(dir, 'bpf'), { recursive: true });
      const changed = text.replace(/MR_CG_BYPASS = 2,/, 'MR_CG_BYPASS = 3,');
      expect(changed).not.toBe(text);
      writeFileSync(join(dir, 'bpf', 'mr_abi.h'), changed);
      cpSync(join(ROOT, 'build', 'vmlinux.h'), join(dir, 'build', 'vmlinux.h'));
      execFileSync('make', ['-s', '-C', dir, '-f', join(ROOT, 'Makefile'), 'build/abi.bpf.o'], { stdio: 'pipe' });
      const drifted = BpfObject.open(join(dir, 'build', 'abi.bpf.o'));
      try {
        expect(drifted.checkAbi([])).toEqual(['enum mr_cg_kind: MR_CG_BYPASS = 3 in BTF, BYPASS = 2 in the mirror']);
      } finally {
        drifted.close();
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
