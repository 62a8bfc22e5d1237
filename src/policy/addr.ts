// addr.ts — parsing of the address forms policies use: "ip:port", "[ip6]:port", CIDRs.
import ipaddr from 'ipaddr.js';

export interface Endpoint {
  family: 4 | 6;
  /** 4 or 16 bytes, network order. */
  bytes: number[];
  port: number;
  /** Canonical text: "10.0.0.1:15001" or "[fd00::1]:15001". */
  text: string;
}

export interface Cidr {
  family: 4 | 6;
  bytes: number[];
  prefix: number;
  /** Canonical text with host bits cleared. */
  text: string;
}

/** 127/8 or ::1. */
export function isLoopback(e: { family: 4 | 6; bytes: number[] }): boolean {
  return e.family === 4 ? e.bytes[0] === 127 : e.bytes.slice(0, 15).every((b) => b === 0) && e.bytes[15] === 1;
}

export function parseEndpoint(s: string, family: 4 | 6): Endpoint | string {
  const m = family === 4 ? /^([0-9.]+):(\d+)$/.exec(s) : /^\[([0-9a-fA-F:.]+)\]:(\d+)$/.exec(s);
  if (!m)
    return `${JSON.stringify(s)} is not ${family === 4 ? 'an IPv4 address:port such as "10.0.0.1:15001"' : 'an IPv6 [address]:port such as "[fd00::1]:15001"'}`;
  const [, host = '', portText = ''] = m;
  const port = Number(portText);
  if (!Number.isInteger(port) || port < 1 || port > 65535)
    return `${JSON.stringify(s)}: ${portText} is not a port (1-65535)`;
  if (family === 4 ? !ipaddr.IPv4.isValidFourPartDecimal(host) : !ipaddr.IPv6.isValid(host)) {
    return `${JSON.stringify(s)}: ${host} is not an IPv${family} address`;
  }
  const addr = ipaddr.parse(host);
  if (family === 6 && (addr as ipaddr.IPv6).isIPv4MappedAddress()) {
    return `${JSON.stringify(s)}: IPv4-mapped addresses are not IPv6 proxies; use outbound`;
  }
  const bytes = addr.toByteArray();
  if (bytes.every((b) => b === 0)) return `${JSON.stringify(s)}: the unspecified address cannot be a proxy`;
  const text = family === 4 ? `${addr.toString()}:${port}` : `[${(addr as ipaddr.IPv6).toRFC5952String()}]:${port}`;
  return { family, bytes, port, text };
}

export function parseCidr(s: string): Cidr | string {
  const slash = s.indexOf('/');
  if (slash < 0) return `${JSON.stringify(s)} is not a CIDR (address/prefix)`;
  const host = s.slice(0, slash);
  const prefixText = s.slice(slash + 1);
  const family = ipaddr.IPv4.isValidFourPartDecimal(host) ? 4 : ipaddr.IPv6.isValid(host) ? 6 : 0;
  if (!family) return `${JSON.stringify(s)}: ${host} is not an IP address`;
  const max = family === 4 ? 32 : 128;
  const prefix = Number(prefixText);
  if (!/^\d+$/.test(prefixText) || prefix > max)
    return `${JSON.stringify(s)}: /${prefixText} is not a prefix length (0-${max})`;
  const parsed = ipaddr.parse(host);
  if (family === 6 && prefix >= 96 && (parsed as ipaddr.IPv6).isIPv4MappedAddress()) {
    const v4 = (parsed as ipaddr.IPv6).toIPv4Address().toString();
    return `${JSON.stringify(s)}: IPv4-mapped destinations are decided as IPv4; write ${v4}/${prefix - 96}`;
  }
  const bytes = parsed.toByteArray();
  for (let bit = prefix; bit < max; bit++) {
    const i = bit >> 3;
    bytes[i] = (bytes[i] ?? 0) & ~(0x80 >> (bit & 7));
  }
  const norm =
    family === 4
      ? ipaddr.fromByteArray(bytes).toString()
      : (ipaddr.fromByteArray(bytes) as ipaddr.IPv6).toRFC5952String();
  return { family, bytes, prefix, text: `${norm}/${prefix}` };
}

export interface Address {
  family: 4 | 6;
  bytes: number[];
  /** Canonical text: "10.96.0.10" or "fd00::a". */
  text: string;
}

/** A nameserver address (no port: DNS capture is port 53). */
export function parseAddress(s: string): Address | string {
  const family = ipaddr.IPv4.isValidFourPartDecimal(s) ? 4 : ipaddr.IPv6.isValid(s) ? 6 : 0;
  if (!family) return `${JSON.stringify(s)} is not an IP address`;
  const addr = ipaddr.parse(s);
  if (family === 6 && (addr as ipaddr.IPv6).isIPv4MappedAddress())
    return `${JSON.stringify(s)}: IPv4-mapped addresses are decided as IPv4; write ${(addr as ipaddr.IPv6).toIPv4Address().toString()}`;
  const bytes = addr.toByteArray();
  if (bytes.every((b) => b === 0)) return `${JSON.stringify(s)}: the unspecified address is not a nameserver`;
  return { family, bytes, text: family === 4 ? addr.toString() : (addr as ipaddr.IPv6).toRFC5952String() };
}
