// codec.ts — fixed-layout binary codecs for map keys and values, mirroring the C structs of
// bpf/mr_abi.h; a struct codec knows its field offsets so they can be checked against BTF.

export interface Codec<T> {
  readonly size: number;
  encode(value: T, into?: Buffer, at?: number): Buffer;
  decode(buf: Buffer, at?: number): T;
}

export interface StructCodec<T> extends Codec<T> {
  /** The C struct name (for the BTF check) and its fields with offsets and sizes. */
  readonly cName: string;
  readonly fields: ReadonlyArray<{ name: string; offset: number; size: number }>;
}

type Scalar = 'u8' | 'u16' | 'u32' | 'u64' | 'be16' | 'be32';
type FieldType = Scalar | { bytes: number } | StructCodec<unknown>;
type FieldValue<F> = F extends 'u64'
  ? bigint
  : F extends Scalar
    ? number
    : F extends { bytes: number }
      ? Buffer
      : F extends StructCodec<infer S>
        ? S
        : never;

const scalarSize: Record<Scalar, number> = { u8: 1, u16: 2, u32: 4, u64: 8, be16: 2, be32: 4 };

function sizeOf(t: FieldType): number {
  if (typeof t === 'string') return scalarSize[t];
  if ('bytes' in t) return t.bytes;
  return t.size;
}
function alignOf(t: FieldType): number {
  if (typeof t === 'string') return scalarSize[t];
  if ('bytes' in t) return 1;
  return Math.max(1, ...t.fields.map((f) => (f.size >= 8 ? 8 : f.size >= 4 ? 4 : f.size >= 2 ? 2 : 1)));
}

/** Lays out fields with C alignment rules, like the compiler does for the same struct. */
export function struct<const D extends Record<string, FieldType>>(
  cName: string,
  def: D,
): StructCodec<{ [K in keyof D]: FieldValue<D[K]> }> {
  type T = { [K in keyof D]: FieldValue<D[K]> };
  let offset = 0;
  let maxAlign = 1;
  const fields: { name: string; offset: number; size: number; type: FieldType }[] = [];
  for (const [name, type] of Object.entries(def)) {
    const a = alignOf(type);
    maxAlign = Math.max(maxAlign, a);
    offset = Math.ceil(offset / a) * a;
    fields.push({ name, offset, size: sizeOf(type), type });
    offset += sizeOf(type);
  }
  const size = Math.ceil(offset / maxAlign) * maxAlign;
  return {
    cName,
    size,
    fields: fields.map(({ name, offset: o, size: s }) => ({ name, offset: o, size: s })),
    encode(value: T, into = Buffer.alloc(size), at = 0): Buffer {
      for (const f of fields) {
        const v = (value as Record<string, unknown>)[f.name];
        const o = at + f.offset;
        const t = f.type;
        if (t === 'u8') into.writeUInt8(Number(v ?? 0), o);
        else if (t === 'u16') into.writeUInt16LE(Number(v ?? 0), o);
        else if (t === 'u32') into.writeUInt32LE(Number(v ?? 0) >>> 0, o);
        else if (t === 'u64') into.writeBigUInt64LE(BigInt((v as bigint | undefined) ?? 0n), o);
        else if (t === 'be16') into.writeUInt16BE(Number(v ?? 0), o);
        else if (t === 'be32') into.writeUInt32BE(Number(v ?? 0) >>> 0, o);
        else if ('bytes' in t) {
          into.fill(0, o, o + t.bytes);
          if (v) (v as Buffer).copy(into, o, 0, t.bytes);
        } else t.encode(v, into, o);
      }
      return into;
    },
    decode(buf: Buffer, at = 0): T {
      const out: Record<string, unknown> = {};
      for (const f of fields) {
        const o = at + f.offset;
        const t = f.type;
        if (t === 'u8') out[f.name] = buf.readUInt8(o);
        else if (t === 'u16') out[f.name] = buf.readUInt16LE(o);
        else if (t === 'u32') out[f.name] = buf.readUInt32LE(o);
        else if (t === 'u64') out[f.name] = buf.readBigUInt64LE(o);
        else if (t === 'be16') out[f.name] = buf.readUInt16BE(o);
        else if (t === 'be32') out[f.name] = buf.readUInt32BE(o);
        else if ('bytes' in t) out[f.name] = Buffer.from(buf.subarray(o, o + t.bytes));
        else out[f.name] = t.decode(buf, o);
      }
      return out as T;
    },
  };
}

function scalar<T>(
  size: number,
  enc: (b: Buffer, v: T, o: number) => void,
  dec: (b: Buffer, o: number) => T,
): Codec<T> {
  return {
    size,
    encode(v: T, into = Buffer.alloc(size), at = 0) {
      enc(into, v, at);
      return into;
    },
    decode: (b: Buffer, at = 0) => dec(b, at),
  };
}
export const u8 = scalar<number>(
  1,
  (b, v, o) => b.writeUInt8(v, o),
  (b, o) => b.readUInt8(o),
);
export const u32 = scalar<number>(
  4,
  (b, v, o) => b.writeUInt32LE(v >>> 0, o),
  (b, o) => b.readUInt32LE(o),
);
export const u64 = scalar<bigint>(
  8,
  (b, v, o) => b.writeBigUInt64LE(v, o),
  (b, o) => b.readBigUInt64LE(o),
);
