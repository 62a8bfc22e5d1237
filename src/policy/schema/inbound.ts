// schema/inbound.ts — the inbound part of a RedirectPolicy: spec.proxy.inbound (the proxy's listener) and
// spec.inbound (which connections are intercepted, and how in iptables mode).
import { z } from 'zod';
import { parseEndpoint, type Cidr, type Endpoint } from '../addr.js';
import { cidr, port, typeOf } from './fields.js';

/** istio's mark and table for TPROXY (1337, 133). */
export const TPROXY_DEFAULTS = { mark: 1337, table: 133 } as const;

/** spec.proxy.inbound, validated: the proxy's inbound listener port, and its exact address when given. */
export interface InboundProxy {
  port: number;
  /** Only the listener bound to this address (or its family's wildcard) is the proxy's. */
  address?: Endpoint;
  /** As written, canonical: "15006" or "127.0.0.1:15006". */
  text: string;
}

/** The inbound interception of a policy (spec.inbound). */
export interface InboundSettings {
  /** When not empty, only connections to these ports are intercepted. */
  includePorts: number[];
  excludePorts: number[];
  /** Sources whose connections go straight to the app (e.g. a node proxy's own address). */
  bypassSources: Cidr[];
  /** No proxy listener: refuse the connection, or deliver it to the app (eBPF mode). */
  whenNoProxy: 'reject' | 'pass';
  /** iptables mode: nat REDIRECT, or mangle TPROXY (source and destination preserved). */
  interception: 'redirect' | 'tproxy';
  /** iptables TPROXY: the firewall mark and the routing table it uses in the pod netns. */
  tproxy: { mark: number; table: number };
}

/** spec.proxy.inbound: a port (the listener on that port in the pod netns, whatever its address), or an
 * exact listener address ("127.0.0.1:15006", "[::1]:15006"). */
export const inboundProxy = z
  .union([z.number(), z.string()], {
    error: (i) =>
      i.input === undefined
        ? 'is required (a port such as 15006, or a listener address such as "127.0.0.1:15006")'
        : `must be a port such as 15006 or a listener address such as "127.0.0.1:15006", not ${typeOf(i.input)}`,
  })
  .transform((v, ctx): InboundProxy => {
    const bad = (message: string) => {
      ctx.addIssue({ code: 'custom', message });
      return z.NEVER;
    };
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || v < 1 || v > 65535) return bad(`${JSON.stringify(v)} is not a port (1-65535)`);
      return { port: v, text: String(v) };
    }
    const family = v.startsWith('[') ? 6 : 4;
    const m = /^(?:0\.0\.0\.0|\[::\]):(\d+)$/.exec(v);
    if (m) return bad(`${JSON.stringify(v)}: for a listener on any address give the port alone (${m[1]})`);
    if (!/:\d+$/.test(v))
      return bad(`${JSON.stringify(v)} is not a port number or a listener address such as "127.0.0.1:15006"`);
    const r = parseEndpoint(v, family);
    if (typeof r === 'string') return bad(r);
    return { port: r.port, address: r, text: r.text };
  });

/** spec.inbound. */
export const inbound = z
  .strictObject({
    includePorts: z.array(port).default([]),
    excludePorts: z.array(port).default([]),
    bypassSources: z.array(cidr).default([]),
    whenNoProxy: z
      .enum(['reject', 'pass'], {
        error: (i) => `${JSON.stringify(i.input)}: must be "reject" (refuse the connection) or "pass" (to the app)`,
      })
      .default('reject'),
    interception: z
      .enum(['redirect', 'tproxy'], {
        error: (i) => `${JSON.stringify(i.input)}: must be "redirect" or "tproxy" (iptables mode)`,
      })
      .default('redirect'),
    tproxy: z
      .strictObject({
        mark: z
          .number({ error: (i) => `${JSON.stringify(i.input)} is not a firewall mark (1-4294967295)` })
          .int({ error: (i) => `${JSON.stringify(i.input)} is not a firewall mark (1-4294967295)` })
          .min(1, { error: (i) => `${JSON.stringify(i.input)} is not a firewall mark (1-4294967295)` })
          .max(0xffffffff, { error: (i) => `${JSON.stringify(i.input)} is not a firewall mark (1-4294967295)` })
          .default(TPROXY_DEFAULTS.mark),
        table: z
          .number({ error: (i) => `${JSON.stringify(i.input)} is not a routing table (1-252, 256-4294967295)` })
          .int({ error: (i) => `${JSON.stringify(i.input)} is not a routing table (1-252, 256-4294967295)` })
          .min(1, { error: (i) => `${JSON.stringify(i.input)} is not a routing table (1-252, 256-4294967295)` })
          .max(0xffffffff, {
            error: (i) => `${JSON.stringify(i.input)} is not a routing table (1-252, 256-4294967295)`,
          })
          .refine((t) => t < 253 || t > 255, {
            error: (i) => `${JSON.stringify(i.input)} is the kernel's default, main or local table`,
          })
          .default(TPROXY_DEFAULTS.table),
      })
      .default(TPROXY_DEFAULTS),
  })
  .default({
    includePorts: [],
    excludePorts: [],
    bypassSources: [],
    whenNoProxy: 'reject',
    interception: 'redirect',
    tproxy: TPROXY_DEFAULTS,
  });

/** The checks across the inbound fields of a spec (issues' paths are the spec's). */
export function checkInbound(
  spec: { inbound: { includePorts: number[]; excludePorts: number[] } },
  ctx: z.RefinementCtx,
): void {
  const inInc = new Set(spec.inbound.includePorts);
  spec.inbound.excludePorts.forEach((p, i) => {
    if (inInc.has(p))
      ctx.addIssue({
        code: 'custom',
        path: ['inbound', 'excludePorts', i],
        message: `${p} is also in includePorts`,
      });
  });
}
