// policy-fuzz.test.ts — a property test of the policy parser: random valid policies are accepted, and
// thousands of documents made invalid on purpose (a wrong value at every field, unknown and missing
// fields, cross-field conflicts, YAML-level junk) are each rejected with a message that names the field
// (or the whole document), without anything thrown.
import { describe, expect, it } from 'vitest';
import { stringify as yamlStringify } from 'yaml';
import { parsePolicyText, type PolicyError } from '../../src/policy/load.js';

/** mulberry32: a small PRNG with 32-bit state (Math.imul keeps it exact). */
function prng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const int = (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1));
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(next() * xs.length)]!;
  const some = <T>(n: number, f: () => T): T[] => Array.from({ length: n }, f);
  return { next, int, pick, some };
}
type Rnd = ReturnType<typeof prng>;

type Doc = Record<string, unknown>;

/** A random policy that must be valid. */
function validDoc(r: Rnd): Doc {
  const name = r.some(r.int(1, 30), () => r.pick([...'abcdefghijklmnopqrstuvwxyz0123456789'])).join('');
  const ports = [...new Set(r.some(r.int(0, 6), () => r.int(1, 65535)))];
  const split = r.int(0, ports.length);
  const octet = () => r.int(0, 255);
  const cidrs = [...new Set(r.some(r.int(0, 5), () => `10.${octet()}.${octet()}.0/24`))];
  const csplit = r.int(0, cidrs.length);
  // redirectLoopback: true needs loopback proxies (a proxy elsewhere would read the pod's loopback as its own).
  const loop = r.next() < 0.15;
  const doc: Doc = {
    apiVersion: 'meshredir/v1',
    kind: 'RedirectPolicy',
    metadata: { name: /^[a-z0-9]/.test(name) ? name : `p${name}` },
    spec: {
      cgroup: `/pods/p${r.int(0, 1e6)}`,
      ...(r.next() < 0.2 ? { accelerate: r.next() < 0.5 } : {}),
      proxy: {
        outbound: loop
          ? `127.0.0.1:${r.int(1, 65535)}`
          : `10.${octet()}.${octet()}.${r.int(1, 254)}:${r.int(1, 65535)}`,
        ...(r.next() < 0.5
          ? {
              outbound6: loop
                ? `[::1]:${r.int(1, 65535)}`
                : `[fd00::${r.int(1, 0xffff).toString(16)}]:${r.int(1, 65535)}`,
            }
          : {}),
        bypass: {
          cgroups: r.some(r.int(0, 2), () => `/proxy/q${r.int(0, 1e6)}`),
          uids: r.some(r.int(0, 3), () => r.int(0, 4294967294)),
          gids: r.some(r.int(0, 2), () => r.int(0, 65535)),
          marks: [
            ...new Set(
              r.some(r.int(0, 2), () => {
                const mask = r.int(1, 0xffff);
                const value = r.int(0, 0xffff) & mask || mask & -mask; // inside the mask, not 0
                return mask === 0xffff && r.next() < 0.5
                  ? `${value}`
                  : `0x${value.toString(16)}/0x${mask.toString(16)}`;
              }),
            ),
          ],
        },
      },
      outbound: {
        includePorts: ports.slice(0, split),
        excludePorts: ports.slice(split),
        includeCidrs: cidrs.slice(0, csplit),
        excludeCidrs: cidrs.slice(csplit),
        ...(loop ? { redirectLoopback: true } : r.next() < 0.3 ? { redirectLoopback: false } : {}),
      },
      ...(r.next() < 0.3 ? { inbound: { excludePorts: r.some(r.int(0, 3), () => r.int(1, 65535)) } } : {}),
    },
  };
  return doc;
}

// Values that are wrong for a field of each kind: every one must be rejected at that field's path.
const NOT_OBJECT = [null, 'x', 0, 1, [], [1], true, 'yes'];
const NOT_STRING = [0, 5, 1.5, null, [], {}, true, ['a']];
const BAD = {
  apiVersion: ['v2', 'meshredir/v2', '', 'Meshredir/v1', ...NOT_STRING],
  kind: ['Policy', '', 'redirectpolicy', ...NOT_STRING],
  name: ['', 'Bad_Name', '-a', 'a-', '.a', 'a.', 'UPPER', 'a b', 'ü', 'a'.repeat(254), 'a/b', ...NOT_STRING],
  cgroup: ['', 'relative', 'pods/a', '/a/../b', '/..', '/a/..', '/a\u0000b', ...NOT_STRING],
  netns: ['relative', 'run/netns/x', '', ...NOT_STRING],
  bool: ['yes', 'true', 'false', 1, 0, null, [], {}, 'on'],
  mark: [
    '',
    '0x',
    '0x1/2/3',
    '0/0xff',
    '0x5/0',
    '0x539/0xff',
    '0x100000000',
    ' 0x1',
    '1 ',
    'mark',
    -1,
    1.5,
    0,
    null,
    [],
    {},
    true,
  ],
  endpoint4: [
    '10.200.0.1',
    '10.200.0.1:0',
    '10.200.0.1:65536',
    '999.1.1.1:80',
    '[::1]:80',
    '10.0.0:80',
    '0.0.0.0:15001',
    'x:80',
    '',
    ' 10.0.0.1:80',
    '10.0.0.1:80 ',
    '10.0.0.1:-1',
    '10.0.0.1:1.5',
    ...NOT_STRING,
  ],
  endpoint6: [
    '10.0.0.1:80',
    '[fd00::1]',
    '[fd00::1]:0',
    '[fd00::1]:70000',
    '[zz::1]:80',
    '[::]:80',
    '[::ffff:10.0.0.1]:80',
    'fd00::1',
    '',
    ...NOT_STRING,
  ],
  port: [0, -1, 65536, 70000, 1.5, '80', '', null, [], {}, true, 1e400, -1e400, 1e20],
  id: [-1, 4294967295, 4294967296, 1.5, '1337', null, [], {}, true, 1e400],
  cidr: [
    '10.0.0.0/33',
    '::/129',
    'x',
    '10.0.0.0',
    '10.0.0.0/-1',
    '10.0.0.0/',
    '300.0.0.0/8',
    '10.0.0.0/8/8',
    '',
    'fd00::/1.5',
    ...NOT_STRING,
  ],
  list: ['x', 5, {}, true, { 0: 80 }],
};

interface Case {
  text: string;
  /** Field paths that must each be named by an error (document prefix allowed). */
  paths: string[];
  /** Or: a whole-document error whose message matches. */
  whole?: RegExp;
  /** The fields in `paths` are present (with a wrong value): their message must not say "is required". */
  present?: boolean;
}

type Path = (string | number)[];
const fmt = (p: Path) =>
  p.reduce<string>((out, k) => (typeof k === 'number' ? `${out}[${k}]` : out ? `${out}.${k}` : k), '');

function getAt(doc: Doc, p: Path): unknown {
  return p.reduce<unknown>((o, k) => (o as Record<string | number, unknown>)[k], doc);
}
function setAt(doc: Doc, p: Path, v: unknown): void {
  const parent = getAt(doc, p.slice(0, -1)) as Record<string | number, unknown>;
  parent[p[p.length - 1]!] = v;
}
function deleteAt(doc: Doc, p: Path): void {
  const parent = getAt(doc, p.slice(0, -1)) as Record<string | number, unknown>;
  delete parent[p[p.length - 1]!];
}

/** A field mutation: where, and the wrong values to choose from. Paths into lists use element 0. */
function fieldMutations(doc: Doc): { path: Path; values: readonly unknown[] }[] {
  const spec = doc.spec as Doc;
  const out: { path: Path; values: readonly unknown[] }[] = [
    { path: ['apiVersion'], values: BAD.apiVersion },
    { path: ['kind'], values: BAD.kind },
    { path: ['metadata'], values: NOT_OBJECT },
    { path: ['metadata', 'name'], values: BAD.name },
    { path: ['spec'], values: NOT_OBJECT },
    { path: ['spec', 'cgroup'], values: BAD.cgroup },
    { path: ['spec', 'netns'], values: BAD.netns },
    { path: ['spec', 'accelerate'], values: BAD.bool },
    { path: ['spec', 'proxy'], values: NOT_OBJECT },
    { path: ['spec', 'proxy', 'outbound'], values: BAD.endpoint4 },
    { path: ['spec', 'proxy', 'outbound6'], values: BAD.endpoint6 },
    { path: ['spec', 'proxy', 'inbound'], values: BAD.port },
    { path: ['spec', 'proxy', 'bypass'], values: NOT_OBJECT.filter((v) => v !== null) },
    { path: ['spec', 'outbound'], values: NOT_OBJECT.filter((v) => v !== null) },
    { path: ['spec', 'outbound', 'redirectLoopback'], values: BAD.bool },
    { path: ['spec', 'inbound'], values: NOT_OBJECT.filter((v) => v !== null) },
  ];
  const lists: [Path, readonly unknown[]][] = [
    [['spec', 'proxy', 'bypass', 'cgroups'], BAD.cgroup],
    [['spec', 'proxy', 'bypass', 'uids'], BAD.id],
    [['spec', 'proxy', 'bypass', 'gids'], BAD.id],
    [['spec', 'proxy', 'bypass', 'marks'], BAD.mark],
    [['spec', 'outbound', 'includePorts'], BAD.port],
    [['spec', 'outbound', 'excludePorts'], BAD.port],
    [['spec', 'outbound', 'includeCidrs'], BAD.cidr],
    [['spec', 'outbound', 'excludeCidrs'], BAD.cidr],
    [['spec', 'inbound', 'excludePorts'], BAD.port],
  ];
  for (const [p, values] of lists) {
    out.push({ path: p, values: BAD.list });
    out.push({ path: [...p, 0], values });
  }
  void spec;
  return out;
}

/** Makes sure the parents of `p` exist as objects/lists in `doc` (an optional block may be absent). */
function ensureParents(doc: Doc, p: Path): void {
  let o = doc as Record<string | number, unknown>;
  for (let i = 0; i < p.length - 1; i++) {
    const k = p[i]!;
    if (o[k] === undefined || o[k] === null || typeof o[k] !== 'object') o[k] = typeof p[i + 1] === 'number' ? [] : {};
    o = o[k] as Record<string | number, unknown>;
  }
}

const isPrefix = (a: Path, b: Path) => a.length <= b.length && a.every((k, i) => k === b[i]);

function render(r: Rnd, doc: unknown): string {
  switch (r.int(0, 2)) {
    case 0:
      return JSON.stringify(doc);
    case 1:
      return JSON.stringify(doc, null, 2);
    default:
      return yamlStringify(doc);
  }
}

/** One to three wrong field values at independent places. */
function wrongValues(r: Rnd): Case {
  const doc = validDoc(r);
  const chosen: { path: Path; values: readonly unknown[] }[] = [];
  const all = fieldMutations(doc);
  for (let n = r.int(1, 3); n > 0; n--) {
    const m = r.pick(all);
    if (chosen.some((c) => isPrefix(c.path, m.path) || isPrefix(m.path, c.path))) continue;
    chosen.push(m);
  }
  for (const m of chosen) {
    ensureParents(doc, m.path);
    setAt(doc, m.path, structuredClone(r.pick(m.values)));
  }
  return { text: render(r, doc), paths: chosen.map((m) => fmt(m.path)), present: true };
}

function unknownField(r: Rnd): Case {
  const doc = validDoc(r);
  const where = r.pick<Path>([
    [],
    ['metadata'],
    ['spec'],
    ['spec', 'proxy'],
    ['spec', 'proxy', 'bypass'],
    ['spec', 'outbound'],
    ['spec', 'inbound'],
  ]);
  ensureParents(doc, [...where, 'x']);
  const key = r.pick([
    'extra',
    'cgroups',
    'Cgroup',
    'outbund',
    'excludePort',
    'apiversion',
    'name ',
    '',
    'metadata2',
    `k${r.int(0, 999)}`,
  ]);
  const target = where.length ? (getAt(doc, where) as Doc) : doc;
  if (key in target) return unknownField(r);
  target[key] = r.pick([1, 'x', null, [], {}]);
  // At the top level the path is the document itself; the message names the field.
  return where.length
    ? { text: render(r, doc), paths: [fmt(where)] }
    : {
        text: render(r, doc),
        paths: [],
        whole: new RegExp(`unknown field ${JSON.stringify(JSON.stringify(key)).slice(1, -1)}`),
      };
}

function missingField(r: Rnd): Case {
  const doc = validDoc(r);
  const p = r.pick<Path>([
    ['apiVersion'],
    ['kind'],
    ['metadata'],
    ['metadata', 'name'],
    ['spec'],
    ['spec', 'cgroup'],
    ['spec', 'proxy'],
  ]);
  deleteAt(doc, p);
  return { text: render(r, doc), paths: [fmt(p)] };
}

function conflict(r: Rnd): Case {
  const doc = validDoc(r);
  const spec = doc.spec as Doc;
  const proxy = spec.proxy as Doc;
  const out = spec.outbound as Doc;
  switch (r.int(0, 3)) {
    case 0:
      delete proxy.outbound;
      delete proxy.outbound6;
      return { text: render(r, doc), paths: ['spec.proxy'] };
    case 1: {
      const p = r.int(1, 65535);
      out.includePorts = [...new Set([...(out.includePorts as number[]), p])];
      out.excludePorts = [...(out.excludePorts as number[]).filter((x) => x !== p), p];
      return {
        text: render(r, doc),
        paths: [`spec.outbound.excludePorts[${(out.excludePorts as number[]).length - 1}]`],
      };
    }
    case 2: {
      const c = `10.${r.int(0, 255)}.0.0/16`;
      out.includeCidrs = [...new Set([...(out.includeCidrs as string[]), c])];
      out.excludeCidrs = [...(out.excludeCidrs as string[]).filter((x) => x !== c), c];
      return {
        text: render(r, doc),
        paths: [`spec.outbound.excludeCidrs[${(out.excludeCidrs as string[]).length - 1}]`],
      };
    }
    default: {
      // The policy's own cgroup as its proxy's, spelled differently (normalised to the same path).
      const own = spec.cgroup as string;
      (proxy.bypass as Doc).cgroups = [r.pick([own, `${own}/`, `/.${own}`, own.replace('/p', '//p'), `${own}/.`])];
      return { text: render(r, doc), paths: ['spec.proxy.bypass.cgroups'] };
    }
  }
}

/** Block YAML of a valid policy, then broken at the YAML level in a way that is never valid. */
function yamlJunk(r: Rnd): Case {
  const doc = validDoc(r);
  const y = yamlStringify(doc);
  const lines = y.split('\n');
  const notYaml = /^(document \d+: )?not YAML: /;
  const nested = lines.map((l, i) => [l, i] as const).filter(([l]) => /^ {2,}[a-zA-Z]+:/.test(l));
  switch (r.int(0, 11)) {
    case 0: {
      // A nested key dedented by one space below its sibling: bad indentation.
      const indent = (l: string) => /^ */.exec(l)![0].length;
      const [, i] = r.pick(
        nested.filter(
          ([l, n]) =>
            lines
              .slice(0, n)
              .reverse()
              .find((p) => indent(p) <= indent(l) && p.trim() !== '' && !p.trimStart().startsWith('-')) !== undefined &&
            indent(
              lines
                .slice(0, n)
                .reverse()
                .find((p) => indent(p) <= indent(l))!,
            ) === indent(l),
        ),
      );
      lines[i] = lines[i]!.slice(1);
      return { text: lines.join('\n'), paths: [], whole: notYaml };
    }
    case 1: {
      // Tabs as indentation.
      const [, i] = r.pick(nested);
      lines[i] = lines[i]!.replace(/^ +/, (s) => '\t'.repeat(Math.max(1, s.length / 2)));
      return { text: lines.join('\n'), paths: [], whole: notYaml };
    }
    case 2: {
      // A key repeated in one mapping.
      const [l, i] = r.pick(nested);
      lines.splice(i + 1, 0, l);
      return { text: lines.join('\n'), paths: [], whole: notYaml };
    }
    case 3:
      // An alias of an anchor that does not exist.
      return {
        text: y.replace(/^kind: .*$/m, `kind: *${r.pick(['nope', 'a', 'kind'])}`),
        paths: [],
        whole: /^(not YAML: )?Unresolved alias/,
      };
    case 4: {
      // An alias that does exist but gives a field the wrong type (a mapping where a string goes).
      const t = y.replace(/^metadata:/m, 'metadata: &m').replace(/^spec:\n/m, 'spec:\n  netns: *m\n');
      return { text: t, paths: ['spec.netns'] };
    }
    case 5: {
      // Alias expansion past the limit ("billion laughs").
      const bomb = [
        'x0: &a0 [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]',
        ...Array.from({ length: 6 }, (_, i) => `x${i + 1}: &a${i + 1} [${Array(10).fill(`*a${i}`).join(', ')}]`),
      ].join('\n');
      return { text: `${bomb}\n${y}`, paths: [], whole: /alias|Excessive/i };
    }
    case 6: {
      // Tags that give a field the wrong type.
      const [field, re, tag] = r.pick([
        ['spec.cgroup', /^( {2}cgroup:) (.*)$/m, '!!int 5'],
        ['apiVersion', /^(apiVersion:) (.*)$/m, '!!binary aGVsbG8='],
        ['kind', /^(kind:) (.*)$/m, '!!float 1.5'],
        ['metadata.name', /^( {2}name:) (.*)$/m, '!!bool true'],
        ['spec.proxy.outbound', /^( {4}outbound:) (.*)$/m, '!!int 15001'],
        ['apiVersion', /^(apiVersion:) (.*)$/m, '!!set { a, b }'],
      ] as const);
      return { text: y.replace(re, `$1 ${tag}`), paths: [field] };
    }
    case 7: {
      // A prefix of the flow (JSON) form: an unterminated collection or string.
      const j = JSON.stringify(doc);
      return { text: j.slice(0, r.int(1, j.length - 1)), paths: [], whole: notYaml };
    }
    case 8: {
      // Not a mapping at the top.
      const v = r.pick(['- a\n- b\n', '42\n', '"meshredir/v1"\n', 'true\n', '[]\n', '[1, {a: 2}]\n']);
      return { text: v, paths: [], whole: /.+/ };
    }
    case 9:
      // Huge numbers where ports and ids go.
      return wrongHuge(r, doc);
    case 10: {
      // Stray flow and quote characters after a key that opens a block.
      const junk = r.pick([']', '}', '"unterminated', "'unterminated", '{ a: 1', '[1, 2', '@reserved', '`reserved']);
      const [, i] = r.pick(lines.map((l, n) => [l, n] as const).filter(([l]) => /^ *[a-zA-Z]+:$/.test(l)));
      lines[i] = `${lines[i]!} ${junk}`;
      return { text: lines.join('\n'), paths: [], whole: notYaml };
    }
    default: {
      // A valid document followed by a broken one: the whole file is rejected, naming document 2.
      const bad = wrongValues(r);
      return { text: `${y}---\n${bad.text}`, paths: bad.paths.map((p) => `document 2: ${p}`) };
    }
  }
}

function wrongHuge(r: Rnd, doc: Doc): Case {
  const [p, v] = r.pick<[Path, string]>([
    [['spec', 'proxy', 'inbound'], '1e400'],
    [['spec', 'proxy', 'inbound'], '99999999999999999999'],
    [['spec', 'proxy', 'bypass', 'uids', 0], '1e400'],
    [['spec', 'proxy', 'bypass', 'uids', 0], '123456789012345678901234567890'],
    [['spec', 'outbound', 'excludePorts', 0], '-1e400'],
    [['spec', 'inbound', 'excludePorts', 0], '0x1_0000_0000'],
  ]);
  ensureParents(doc, p);
  setAt(doc, p, '__HUGE__');
  return { text: JSON.stringify(doc).replace('"__HUGE__"', v), paths: [fmt(p)] };
}

const FIELD_PATH = /^(document \d+: )?[a-zA-Z][a-zA-Z0-9]*(\.[a-zA-Z][a-zA-Z0-9]*|\[\d+\])*$/;

describe('policy parser, property test', () => {
  it('accepts thousands of random valid policies', () => {
    const r = prng(7);
    for (let i = 0; i < 1000; i++) {
      const doc = validDoc(r);
      const res = parsePolicyText(render(r, doc), 'valid.yaml');
      expect(res.errors, JSON.stringify(doc)).toEqual([]);
      expect(res.policies.map((p) => p.name)).toEqual([(doc.metadata as Doc).name]);
    }
  }, 60_000);

  it('rejects every one of thousands of invalid documents with a message naming the field or the document; nothing throws', () => {
    const r = prng(42);
    const gens = [wrongValues, wrongValues, wrongValues, unknownField, missingField, conflict, yamlJunk, yamlJunk];
    const texts = new Set<string>();
    const N = 4000;
    for (let i = 0; i < N; i++) {
      const c = r.pick(gens)(r);
      texts.add(c.text);
      let res: ReturnType<typeof parsePolicyText> | undefined;
      expect(() => (res = parsePolicyText(c.text, 'fuzz.yaml')), c.text).not.toThrow();
      const show = `${c.text}\n→ ${JSON.stringify(res!.errors)}`;
      expect(res!.policies, show).toEqual([]);
      expect(res!.errors.length, show).toBeGreaterThan(0);
      for (const e of res!.errors as PolicyError[]) {
        expect(e.file).toBe('fuzz.yaml');
        expect(e.message.trim().length, show).toBeGreaterThan(0);
        expect(e.path === '' || FIELD_PATH.test(e.path), `path ${JSON.stringify(e.path)}\n${show}`).toBe(true);
      }
      const paths = res!.errors.map((e) => e.path);
      for (const p of c.paths) expect(paths, show).toContain(p);
      if (c.present)
        for (const e of res!.errors) if (c.paths.includes(e.path)) expect(e.message, show).not.toMatch(/^is required/);
      if (c.whole)
        expect(
          res!.errors.some((e) => (e.path === '' || /^document \d+: $/.test(e.path)) && c.whole!.test(e.message)),
          show,
        ).toBe(true);
    }
    // Distinct documents, not a few hundred repeated (the old generator's seed overflowed).
    expect(texts.size).toBeGreaterThan(N * 0.95);
  }, 120_000);
});
