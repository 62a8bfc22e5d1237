// mirror.ts — checks the TypeScript mirror of bpf/mr_abi.h (src/bpf/abi.ts) against an object's BTF:
// struct codecs (size, field offsets) and enum mirrors (every enumerator and its value), so the C header
// and the mirror cannot disagree silently.
import { lib, readAt, isNull, type Ptr } from '../sys/libbpf.js';
import { BTF_KIND_STRUCT, BTF_KIND_ENUM, BTF_KIND_ENUM64, typeAt } from './btf.js';
import type { StructCodec } from './codec.js';

/** Checks a struct codec against the struct of the same name: size, each field's offset, none left out. */
export function checkStruct(btf: Ptr, codec: StructCodec<unknown>): string[] {
  const id: number = lib.btf__find_by_name_kind(btf, codec.cName, BTF_KIND_STRUCT);
  if (id < 0) return [`struct ${codec.cName}: not in the object's BTF`];
  const t: Ptr = lib.btf__type_by_id(btf, id);
  if (isNull(t)) return [`struct ${codec.cName}: BTF type ${id} unreadable`];
  const head = readAt(t, 12);
  const info = head.readUInt32LE(4);
  const size = head.readUInt32LE(8);
  const vlen = info & 0xffff;
  const kflag = info >>> 31;
  const problems: string[] = [];
  if (size !== codec.size) problems.push(`struct ${codec.cName}: size ${size} in BTF, ${codec.size} in the codec`);
  const members = readAt(t, vlen * 12, 12);
  const inBtf = new Map<string, number>();
  for (let i = 0; i < vlen; i++) {
    const name: string = lib.btf__name_by_offset(btf, members.readUInt32LE(i * 12));
    const bits = members.readUInt32LE(i * 12 + 8);
    inBtf.set(name, (kflag ? bits & 0xffffff : bits) / 8);
  }
  for (const f of codec.fields) {
    const off = inBtf.get(f.name);
    if (off === undefined) problems.push(`struct ${codec.cName}: field ${f.name} not in BTF`);
    else if (off !== f.offset)
      problems.push(`struct ${codec.cName}.${f.name}: offset ${off} in BTF, ${f.offset} in the codec`);
  }
  for (const name of inBtf.keys()) {
    if (!codec.fields.some((f) => f.name === name))
      problems.push(`struct ${codec.cName}: BTF field ${name} missing from the codec`);
  }
  return problems;
}

/** A TypeScript constant set that mirrors a C enum: key K stands for the enumerator `${prefix}K`. */
export interface EnumMirror {
  readonly cName: string;
  readonly prefix: string;
  readonly values: Readonly<Record<string, number>>;
}

/** The enums user space shares: their mirrors, and the C struct whose fields bring them into BTF. */
export interface AbiEnums {
  readonly anchor: string;
  readonly mirrors: readonly EnumMirror[];
}

/** The enumerators of `enum name` (ENUM or ENUM64) in a BTF, or null when it has no such enum. */
function enumerators(btf: Ptr, name: string): Map<string, bigint> | null {
  let id: number = lib.btf__find_by_name_kind(btf, name, BTF_KIND_ENUM);
  if (id < 0) id = lib.btf__find_by_name_kind(btf, name, BTF_KIND_ENUM64);
  const t = id < 0 ? null : typeAt(btf, id);
  if (!t) return null;
  const stride = t.kind === 'enum' ? 8 : 12;
  const out = new Map<string, bigint>();
  for (let i = 0; i < t.vlen; i++) {
    const at = i * stride;
    // kflag marks a signed enum; without it the values are unsigned.
    const lo = t.rest.readUInt32LE(at + 4);
    const value =
      t.kind === 'enum'
        ? BigInt(t.kflag ? lo | 0 : lo)
        : (t.kflag ? BigInt.asIntN : BigInt.asUintN)(64, (BigInt(t.rest.readUInt32LE(at + 8)) << 32n) | BigInt(lo));
    out.set(lib.btf__name_by_offset(btf, t.rest.readUInt32LE(at)) as string, value);
  }
  return out;
}

/** Checks a mirror against the enum of the same name: every key's value, and no enumerator left out. */
export function checkEnum(btf: Ptr, m: EnumMirror): string[] {
  const inBtf = enumerators(btf, m.cName);
  if (!inBtf) return [`enum ${m.cName}: not in the object's BTF`];
  const problems: string[] = [];
  for (const [key, value] of Object.entries(m.values)) {
    const name = m.prefix + key;
    const v = inBtf.get(name);
    if (v === undefined) problems.push(`enum ${m.cName}: ${name} not in BTF (${key} = ${value} in the mirror)`);
    else if (v !== BigInt(value))
      problems.push(`enum ${m.cName}: ${name} = ${v} in BTF, ${key} = ${value} in the mirror`);
  }
  for (const [name, v] of inBtf) {
    if (!name.startsWith(m.prefix) || !Object.hasOwn(m.values, name.slice(m.prefix.length)))
      problems.push(`enum ${m.cName}: ${name} = ${v} in BTF missing from the mirror`);
  }
  return problems;
}

/** Names of the enums that are the types of `struct anchor`'s fields (through typedefs and qualifiers). */
function enumFieldTypes(btf: Ptr, anchor: string): string[] | null {
  const id: number = lib.btf__find_by_name_kind(btf, anchor, BTF_KIND_STRUCT);
  const t = id < 0 ? null : typeAt(btf, id);
  if (!t) return null;
  const names: string[] = [];
  for (let i = 0; i < t.vlen; i++) {
    let f = typeAt(btf, t.rest.readUInt32LE(i * 12 + 4));
    while (f && ['typedef', 'const', 'volatile', 'restrict', 'type_tag'].includes(f.kind))
      f = typeAt(btf, f.sizeOrType);
    if (f && (f.kind === 'enum' || f.kind === 'enum64')) names.push(f.name);
  }
  return names;
}

/** Checks every mirror, and that every enum the anchor struct lists has one. */
export function checkEnums(btf: Ptr, enums: AbiEnums): string[] {
  const problems = enums.mirrors.flatMap((m) => checkEnum(btf, m));
  const listed = enumFieldTypes(btf, enums.anchor);
  if (!listed)
    problems.push(`struct ${enums.anchor}: not in the object's BTF (its fields bring the shared enums there)`);
  for (const name of listed ?? [])
    if (!enums.mirrors.some((m) => m.cName === name))
      problems.push(`enum ${name}: a field type of struct ${enums.anchor} in BTF, with no mirror`);
  return problems;
}
