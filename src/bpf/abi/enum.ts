// abi/enum.ts — declares the C enum mirrors of every part, collected for the load's BTF check (ABI_ENUMS).
import type { EnumMirror } from '../mirror.js';

/** Every enum mirror the parts declared, in declaration order (abi.ts hands them out as ABI_ENUMS). */
export const mirrors: EnumMirror[] = [];
/** Declares `values` as the mirror of C `enum cName`, whose enumerators are `${prefix}${key}`. */
export function cEnum<const V extends Record<string, number>>(cName: string, prefix: string, values: V): Readonly<V> {
  mirrors.push({ cName, prefix, values });
  return Object.freeze(values);
}
