// btf.ts — checks a struct codec against the struct of the same name in an object's BTF, so the
// C header and the TypeScript mirror cannot disagree on size or field offsets.
import { lib, readAt, isNull, type Ptr } from '../sys/libbpf.js';
import type { StructCodec } from './codec.js';

const BTF_KIND_STRUCT = 4;

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
    else if (off !== f.offset) problems.push(`struct ${codec.cName}.${f.name}: offset ${off} in BTF, ${f.offset} in the codec`);
  }
  for (const name of inBtf.keys()) {
    if (!codec.fields.some((f) => f.name === name)) problems.push(`struct ${codec.cName}: BTF field ${name} missing from the codec`);
  }
  return problems;
}
