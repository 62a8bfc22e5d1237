// mark.ts — the socket-mark form policies use for spec.proxy.bypass.marks: "value" or "value/mask", each
// decimal or 0x-hex, 32 bits, matched as iptables' -m mark does: (SO_MARK & mask) == value.

export interface Mark {
  value: number;
  /** 0xffffffff when the policy wrote no mask. */
  mask: number;
  /** Canonical text: "0x539/0xfff", or "0x539" for the full mask (iptables-save prints it so). */
  text: string;
}

const FULL = 0xffffffff;
const hex = (n: number) => `0x${n.toString(16)}`;

function num(s: string): number | null {
  if (!/^(0x[0-9a-f]{1,8}|\d{1,10})$/i.test(s)) return null;
  const n = Number(s);
  return n <= FULL ? n : null;
}

/** A mark from its policy spelling (a YAML integer such as 0x539 arrives as a number). */
export function parseMark(input: string | number): Mark | string {
  const s = String(input);
  const what = `${JSON.stringify(input)} is not a mark (value or value/mask, 0 to 0xffffffff, such as "0x539/0xfff")`;
  const [v = '', m, ...rest] = s.split('/');
  if (rest.length) return what;
  const value = num(v);
  const mask = m === undefined ? FULL : num(m);
  if (value === null || mask === null) return what;
  const text = mask === FULL ? hex(value) : `${hex(value)}/${hex(mask)}`;
  if (mask === 0) return `${JSON.stringify(input)}: mask 0 matches every socket, so nothing would be redirected`;
  if ((value & ~mask) >>> 0 !== 0)
    return `${JSON.stringify(input)}: value ${hex(value)} has bits outside the mask ${hex(mask)}, so it can never match`;
  if (value === 0)
    return `${JSON.stringify(input)}: value 0 matches every socket that has no mark (the default), so nothing would be redirected`;
  return { value, mask, text };
}
