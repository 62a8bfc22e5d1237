// btf.ts — reads BTF types; compares a pinned map's key/value BTF with a new object's, so a same-size
// layout change is never adopted; asks the kernel's BTF about a struct member.
import { lib, readAt, isNull, errno, type Ptr } from '../sys/libbpf.js';
import { BpfError } from './errors.js';

export const BTF_KIND_STRUCT = 4;
export const BTF_KIND_ENUM = 6;
export const BTF_KIND_ENUM64 = 19;

/** Whether the running kernel's BTF has `struct name` with a member `member` (null: no kernel BTF). */
export function kernelHasMember(struct: string, member: string): boolean | null {
  // The running kernel's BTF does not change while we run, and loading it costs ~30 ms (the agent asks
  // on every apply, so a pod's policy would wait that long after its cgroup appears).
  const key = `${struct}.${member}`;
  if (!memberCache.has(key)) memberCache.set(key, kernelHasMemberUncached(struct, member));
  return memberCache.get(key)!;
}
const memberCache = new Map<string, boolean | null>();

function kernelHasMemberUncached(struct: string, member: string): boolean | null {
  const btf: Ptr = lib.btf__load_vmlinux_btf();
  if (isNull(btf)) return null;
  try {
    const id: number = lib.btf__find_by_name_kind(btf, struct, BTF_KIND_STRUCT);
    if (id < 0) return false;
    const t: Ptr = lib.btf__type_by_id(btf, id);
    if (isNull(t)) return false;
    const vlen = readAt(t, 12).readUInt32LE(4) & 0xffff;
    const members = readAt(t, vlen * 12, 12);
    for (let i = 0; i < vlen; i++)
      if (lib.btf__name_by_offset(btf, members.readUInt32LE(i * 12)) === member) return true;
    return false;
  } finally {
    lib.btf__free(btf);
  }
}

// --- Structural comparison of two BTF types (a pinned map's, from the kernel, and the new object's) ---

const KIND = [
  'void',
  'int',
  'ptr',
  'array',
  'struct',
  'union',
  'enum',
  'fwd',
  'typedef',
  'volatile',
  'const',
  'restrict',
  'func',
  'func_proto',
  'var',
  'datasec',
  'float',
  'decl_tag',
  'type_tag',
  'enum64',
];

export interface BtfType {
  kind: string;
  name: string;
  vlen: number;
  kflag: number;
  /** size for int/struct/union/enum/float, the referenced type id for ptr/typedef/modifiers. */
  sizeOrType: number;
  /** Kind-specific data after the 12-byte header. */
  rest: Buffer;
}

function restSize(kind: string, vlen: number): number {
  switch (kind) {
    case 'int':
    case 'decl_tag':
      return 4;
    case 'array':
      return 12;
    case 'struct':
    case 'union':
    case 'enum64':
      return vlen * 12;
    case 'enum':
    case 'func_proto':
      return vlen * 8;
    case 'var':
      return 4;
    case 'datasec':
      return vlen * 12;
    default:
      return 0;
  }
}

/** The type `id` of a BTF, decoded (null: no such type). */
export function typeAt(btf: Ptr, id: number): BtfType | null {
  if (id === 0) return { kind: 'void', name: '', vlen: 0, kflag: 0, sizeOrType: 0, rest: Buffer.alloc(0) };
  const t: Ptr = lib.btf__type_by_id(btf, id);
  if (isNull(t)) return null;
  const head = readAt(t, 12);
  const info = head.readUInt32LE(4);
  const kind = KIND[(info >>> 24) & 0x1f] ?? `kind ${(info >>> 24) & 0x1f}`;
  const vlen = info & 0xffff;
  return {
    kind,
    name: lib.btf__name_by_offset(btf, head.readUInt32LE(0)) ?? '',
    vlen,
    kflag: info >>> 31,
    sizeOrType: head.readUInt32LE(8),
    rest: readAt(t, restSize(kind, vlen), 12),
  };
}

const label = (t: BtfType) => (t.kind === 'void' ? 'void' : `${t.kind}${t.name ? ` ${t.name}` : ''}`);

/**
 * Compares type `a` (in BTF `btfA`, the pinned map's) with type `b` (in `btfB`, the object's):
 * kinds, names, sizes, integer encodings, array lengths, enum values, and struct/union members by name
 * with their offsets, recursively. Returns the first difference, worded for a person, or null.
 */
export function compareBtfTypes(
  btfA: Ptr,
  a: number,
  btfB: Ptr,
  b: number,
  where: string,
  seen = new Set<string>(),
): string | null {
  const pair = `${a}:${b}`;
  if (seen.has(pair)) return null; // a cycle through pointers, already being compared
  seen.add(pair);
  const ta = typeAt(btfA, a);
  const tb = typeAt(btfB, b);
  if (!ta || !tb) return `${where}: BTF type ${!ta ? `${a} of the pinned map` : `${b} of the object`} is unreadable`;
  if (ta.kind !== tb.kind || ta.name !== tb.name)
    return `${where}: ${label(ta)} in the pinned map, ${label(tb)} in the object`;
  const sized = ['int', 'struct', 'union', 'enum', 'enum64', 'float'];
  if (sized.includes(ta.kind) && ta.sizeOrType !== tb.sizeOrType)
    return `${where}: ${label(ta)} is ${ta.sizeOrType} bytes in the pinned map, ${tb.sizeOrType} in the object`;
  switch (ta.kind) {
    case 'int': {
      if (ta.rest.readUInt32LE(0) !== tb.rest.readUInt32LE(0))
        return `${where}: ${label(ta)} has another encoding (signedness or bits) in the object`;
      return null;
    }
    case 'ptr':
    case 'typedef':
    case 'volatile':
    case 'const':
    case 'restrict':
    case 'type_tag':
      return compareBtfTypes(
        btfA,
        ta.sizeOrType,
        btfB,
        tb.sizeOrType,
        ta.kind === 'typedef' ? `${where} (${ta.name})` : where,
        seen,
      );
    case 'array': {
      const na = ta.rest.readUInt32LE(8);
      const nb = tb.rest.readUInt32LE(8);
      if (na !== nb) return `${where}: an array of ${na} in the pinned map, of ${nb} in the object`;
      return compareBtfTypes(btfA, ta.rest.readUInt32LE(0), btfB, tb.rest.readUInt32LE(0), `${where}[]`, seen);
    }
    case 'struct':
    case 'union': {
      const members = (t: BtfType, btf: Ptr) =>
        Array.from({ length: t.vlen }, (_, i) => {
          const off = t.rest.readUInt32LE(i * 12 + 8);
          return {
            name: lib.btf__name_by_offset(btf, t.rest.readUInt32LE(i * 12)) as string,
            type: t.rest.readUInt32LE(i * 12 + 4),
            bitOffset: t.kflag ? off & 0xffffff : off,
            bitSize: t.kflag ? off >>> 24 : 0,
          };
        });
      const ma = members(ta, btfA);
      const mb = members(tb, btfB);
      const at = (m: { bitOffset: number; bitSize: number }) =>
        m.bitSize
          ? `bit ${m.bitOffset} (${m.bitSize} bits)`
          : m.bitOffset % 8
            ? `bit ${m.bitOffset}`
            : `byte ${m.bitOffset / 8}`;
      const names = (ms: { name: string }[]) => ms.map((m) => m.name || '(anonymous)').join(', ');
      if (ma.length !== mb.length || ma.some((m, i) => m.name !== mb[i]!.name && !mb.some((x) => x.name === m.name))) {
        return `${where}: ${label(ta)} has members ${names(ma)} in the pinned map, ${names(mb)} in the object`;
      }
      for (const m of ma) {
        const o = m.name ? mb.find((x) => x.name === m.name)! : mb[ma.indexOf(m)]!;
        const path = `${where}.${m.name || '(anonymous)'}`;
        if (m.bitOffset !== o.bitOffset || m.bitSize !== o.bitSize)
          return `${path}: at ${at(m)} in the pinned map, at ${at(o)} in the object (${label(ta)} members in order: pinned ${names(ma)}; object ${names(mb)})`;
        const d = compareBtfTypes(btfA, m.type, btfB, o.type, path, seen);
        if (d) return d;
      }
      return null;
    }
    case 'enum':
    case 'enum64': {
      const stride = ta.kind === 'enum' ? 8 : 12;
      const vals = (t: BtfType, btf: Ptr) =>
        Array.from(
          { length: t.vlen },
          (_, i) =>
            `${lib.btf__name_by_offset(btf, t.rest.readUInt32LE(i * stride)) as string}=${t.rest.readUInt32LE(i * stride + 4)}${stride === 12 ? `:${t.rest.readUInt32LE(i * stride + 8)}` : ''}`,
        ).join(', ');
      const va = vals(ta, btfA);
      const vb = vals(tb, btfB);
      return va === vb ? null : `${where}: ${label(ta)} is {${va}} in the pinned map, {${vb}} in the object`;
    }
    case 'fwd':
      return ta.kflag === tb.kflag ? null : `${where}: ${label(ta)} is a struct in one, a union in the other`;
    default:
      return null;
  }
}

/** A BTF object of the kernel by id (a pinned map's), freed by close(). */
export class KernelBtf {
  private constructor(readonly ptr: Ptr) {}
  static load(id: number, what: string): KernelBtf {
    const p: Ptr = lib.btf__load_from_kernel_by_id(id);
    if (isNull(p))
      throw new BpfError(`${what}: load BTF ${id} from the kernel`, 'btf__load_from_kernel_by_id', errno());
    return new KernelBtf(p);
  }
  close(): void {
    lib.btf__free(this.ptr);
  }
}
