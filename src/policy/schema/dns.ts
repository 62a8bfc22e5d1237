// schema/dns.ts — the DNS part of a RedirectPolicy: spec.dns (which port-53 queries go to which DNS proxy).
import { z } from 'zod';
import { parseAddress, type Address, type Endpoint } from '../addr.js';
import { endpoint } from './fields.js';

export interface DnsSpec {
  /** The DNS proxy for IPv4 (and v4-mapped) queries: loopback in the pod, or a node address. */
  proxy: Endpoint;
  /** The DNS proxy for IPv6 queries; without it IPv6 queries are not captured. */
  proxy6?: Endpoint;
  /** Captured destinations (port 53), deduplicated; ignored with `all`. */
  nameservers: Address[];
  /** Every port-53 destination is captured (except the proxy itself). */
  all: boolean;
  /** TCP port 53 too (default); false leaves TCP 53 to the outbound decision. */
  tcp: boolean;
}

const nameserver = z.string({ error: 'must be an IP address string such as "10.96.0.10"' }).transform((s, ctx) => {
  const r = parseAddress(s);
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
});

/** spec.dns: port-53 queries (UDP, and TCP unless tcp: false) of the pod go to a DNS proxy. */
export const dns = z
  .strictObject({
    proxy: endpoint(4),
    proxy6: endpoint(6).optional(),
    nameservers: z.array(nameserver).default([]),
    all: z.boolean().default(false),
    tcp: z.boolean().default(true),
  })
  .superRefine((d, ctx) => {
    if (!d.all && d.nameservers.length === 0) {
      ctx.addIssue({
        code: 'custom',
        path: ['nameservers'],
        message: 'is empty and all is false: no query would be captured (list the nameservers, or all: true)',
      });
    }
    d.nameservers.forEach((ns, i) => {
      if (ns.family === 6 && !d.proxy6)
        ctx.addIssue({
          code: 'custom',
          path: ['nameservers', i],
          message: `${ns.text} is IPv6 and spec.dns has no proxy6: its queries could not be captured`,
        });
      const proxy = ns.family === 4 ? d.proxy : d.proxy6;
      if (proxy && proxy.port === 53 && proxy.bytes.every((b, j) => b === ns.bytes[j]))
        ctx.addIssue({
          code: 'custom',
          path: ['nameservers', i],
          message: `${ns.text} is the DNS proxy itself (${proxy.text}): its queries are never captured`,
        });
    });
  });

/** spec.dns as a policy holds it: the nameservers deduplicated. */
export function toDnsSpec(d: z.output<typeof dns>): DnsSpec {
  return {
    proxy: d.proxy,
    ...(d.proxy6 ? { proxy6: d.proxy6 } : {}),
    nameservers: d.nameservers.filter(
      (a, i, all) => all.findIndex((b) => b.text === a.text && b.family === a.family) === i,
    ),
    all: d.all,
    tcp: d.tcp,
  };
}
