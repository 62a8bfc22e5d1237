// schema.ts — the RedirectPolicy file format (a user-facing contract) and its validated form.
import { z } from 'zod';
import { parseEndpoint, parseCidr, parseAddress, isLoopback, type Endpoint, type Cidr, type Address } from './addr.js';
import { parseMark, type Mark } from './mark.js';
import { MAX_MARKS } from '../bpf/abi.js';
import { checkEntryLimits } from './limits.js';

/** istio's mark and table for TPROXY (1337, 133). */
export const TPROXY_DEFAULTS = { mark: 1337, table: 133 } as const;

/** What a wrong value is, for messages: "a string", "an array", "null". */
export function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an object' : t === 'undefined' ? 'nothing' : `a ${t}`;
}

/** The message for a value of the wrong type: "is required" only when it is absent. */
const wrongType = (what: string) => (i: { input: unknown }) =>
  i.input === undefined ? `is required (${what})` : `must be ${what}, not ${typeOf(i.input)}`;

const port = z
  .number({ error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .int({ error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .min(1, { error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .max(65535, { error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` });

const id = z
  .number({ error: (i) => `${JSON.stringify(i.input)} is not a uid/gid (0-4294967294)` })
  .int()
  .min(0)
  .max(4294967294, { error: (i) => `${JSON.stringify(i.input)} is not a uid/gid (0-4294967294)` });

/** One spelling per cgroup: "//" collapsed, "." segments and trailing "/" dropped, so aliases such as
 * /pods//a and /pods/./a are the same claim as /pods/a in the duplicate check. */
export function normaliseCgroupPath(p: string): string {
  return `/${p
    .split('/')
    .filter((s) => s !== '' && s !== '.')
    .join('/')}`;
}

const cgroupPath = z
  .string({ error: wrongType('a cgroup path string such as /pods/a') })
  .regex(/^\/[^\0]*$/, { error: (i) => `${JSON.stringify(i.input)} is not an absolute cgroup path (starts with /)` })
  .refine((p) => !p.split('/').includes('..'), { error: 'must not contain ..' })
  .transform(normaliseCgroupPath);

function endpoint(family: 4 | 6) {
  return z
    .string({ error: `must be a string such as ${family === 4 ? '"10.0.0.1:15001"' : '"[fd00::1]:15001"'}` })
    .transform((s, ctx) => {
      const r = parseEndpoint(s, family);
      if (typeof r === 'string') {
        ctx.addIssue({ code: 'custom', message: r });
        return z.NEVER;
      }
      return r;
    });
}

/** spec.proxy.inbound: a port (the listener on that port in the pod netns, whatever its address), or an
 * exact listener address ("127.0.0.1:15006", "[::1]:15006"). */
const inboundProxy = z
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

const mark = z
  .union([z.string(), z.number()], { error: 'must be a mark such as "0x539/0xfff" (value or value/mask)' })
  .transform((s, ctx) => {
    const r = parseMark(s);
    if (typeof r === 'string') {
      ctx.addIssue({ code: 'custom', message: r });
      return z.NEVER;
    }
    return r;
  });

const cidr = z.string({ error: 'must be a CIDR string such as "10.0.0.0/8"' }).transform((s, ctx) => {
  const r = parseCidr(s);
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
});

const nameserver = z.string({ error: 'must be an IP address string such as "10.96.0.10"' }).transform((s, ctx) => {
  const r = parseAddress(s);
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
});

/** spec.dns: port-53 queries (UDP, and TCP unless tcp: false) of the pod go to a DNS proxy. */
const dns = z
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

export const policyDocument = z.strictObject({
  apiVersion: z.literal('meshredir/v1', {
    error: (i) =>
      i.input === undefined
        ? 'is required ("meshredir/v1")'
        : `${JSON.stringify(i.input)}: only "meshredir/v1" is known`,
  }),
  kind: z.literal('RedirectPolicy', {
    error: (i) =>
      i.input === undefined
        ? 'is required ("RedirectPolicy")'
        : `${JSON.stringify(i.input)}: only "RedirectPolicy" is known`,
  }),
  metadata: z.strictObject({
    name: z
      .string({ error: wrongType('a DNS-label-like name') })
      // At most 253 characters, like a Kubernetes object name; mr_slots keeps all of them (256 bytes).
      .regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, {
        error: (i) => `${JSON.stringify(i.input)} is not a valid name (lowercase letters, digits, "-" and ".")`,
      }),
  }),
  spec: z
    .strictObject({
      cgroup: cgroupPath,
      netns: z.string().regex(/^\//, { error: 'must be an absolute path such as /run/netns/pod-a' }).optional(),
      accelerate: z.boolean().default(false),
      proxy: z.strictObject({
        outbound: endpoint(4).optional(),
        outbound6: endpoint(6).optional(),
        inbound: inboundProxy.optional(),
        bypass: z
          .strictObject({
            cgroups: z.array(cgroupPath).default([]),
            uids: z.array(id).default([]),
            gids: z.array(id).default([]),
            // The eBPF mode keeps them in the policy's map value (mr_policy.marks): a fixed number.
            marks: z
              .array(mark)
              .max(MAX_MARKS, { error: (i) => `at most ${MAX_MARKS} marks, not ${(i.input as unknown[]).length}` })
              .default([]),
          })
          .default({ cgroups: [], uids: [], gids: [], marks: [] }),
      }),
      outbound: z
        .strictObject({
          includePorts: z.array(port).default([]),
          excludePorts: z.array(port).default([]),
          includeCidrs: z.array(cidr).default([]),
          excludeCidrs: z.array(cidr).default([]),
          redirectLoopback: z.boolean().default(false),
        })
        .default({ includePorts: [], excludePorts: [], includeCidrs: [], excludeCidrs: [], redirectLoopback: false }),
      inbound: z
        .strictObject({
          includePorts: z.array(port).default([]),
          excludePorts: z.array(port).default([]),
          bypassSources: z.array(cidr).default([]),
          whenNoProxy: z
            .enum(['reject', 'pass'], {
              error: (i) =>
                `${JSON.stringify(i.input)}: must be "reject" (refuse the connection) or "pass" (to the app)`,
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
        }),
      dns: dns.optional(),
    })
    .superRefine((spec, ctx) => {
      checkEntryLimits(spec, ctx);
      // A DNS-only policy (spec.dns, no proxy) is valid: its queries go to spec.dns.proxy.
      if (!spec.proxy.outbound && !spec.proxy.outbound6 && !spec.proxy.inbound && !spec.dns) {
        ctx.addIssue({
          code: 'custom',
          path: ['proxy'],
          message:
            'needs outbound (IPv4), outbound6 (IPv6) or inbound (or spec.dns alone): there is nowhere to redirect to and nothing to intercept',
        });
      }
      const inInc = new Set(spec.inbound.includePorts);
      spec.inbound.excludePorts.forEach((p, i) => {
        if (inInc.has(p))
          ctx.addIssue({
            code: 'custom',
            path: ['inbound', 'excludePorts', i],
            message: `${p} is also in includePorts`,
          });
      });
      const inc = new Set(spec.outbound.includePorts);
      spec.outbound.excludePorts.forEach((p, i) => {
        if (inc.has(p))
          ctx.addIssue({
            code: 'custom',
            path: ['outbound', 'excludePorts', i],
            message: `${p} is also in includePorts`,
          });
      });
      const incC = new Set(spec.outbound.includeCidrs.map((c) => c.text));
      spec.outbound.excludeCidrs.forEach((c, i) => {
        if (incC.has(c.text))
          ctx.addIssue({
            code: 'custom',
            path: ['outbound', 'excludeCidrs', i],
            message: `${c.text} is also in includeCidrs`,
          });
      });
      if (spec.outbound.redirectLoopback) {
        for (const field of ['outbound', 'outbound6'] as const) {
          const ep = spec.proxy[field];
          if (ep && !isLoopback(ep)) {
            ctx.addIssue({
              code: 'custom',
              path: ['outbound', 'redirectLoopback'],
              message: `needs loopback proxies: spec.proxy.${field} ${ep.text} is in another network namespace, where the pod's loopback destinations mean another host`,
            });
          }
        }
      }
      const marks = spec.proxy.bypass.marks.map((m) => m.text);
      marks.forEach((m, i) => {
        if (marks.indexOf(m) !== i)
          ctx.addIssue({ code: 'custom', path: ['proxy', 'bypass', 'marks', i], message: `${m} is listed twice` });
      });
      if (spec.proxy.bypass.cgroups.includes(spec.cgroup)) {
        ctx.addIssue({
          code: 'custom',
          path: ['proxy', 'bypass', 'cgroups'],
          message: `${spec.cgroup} is the policy's own cgroup: nothing would be redirected`,
        });
      }
    }),
});

export type PolicyDocument = z.output<typeof policyDocument>;

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

/** A validated policy, with where it came from. */
export interface Policy {
  name: string;
  file: string;
  cgroup: string;
  netns?: string;
  accelerate: boolean;
  proxy: { outbound?: Endpoint; outbound6?: Endpoint; inbound?: InboundProxy };
  bypass: { cgroups: string[]; uids: number[]; gids: number[]; marks: Mark[] };
  outbound: {
    includePorts: number[];
    excludePorts: number[];
    includeCidrs: Cidr[];
    excludeCidrs: Cidr[];
    redirectLoopback: boolean;
  };
  inbound: InboundSettings;
  /** DNS capture (docs/dns-design.md); absent: port-53 traffic is treated like any other. */
  dns?: DnsSpec;
}

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

export function toPolicy(doc: PolicyDocument, file: string): Policy {
  const s = doc.spec;
  return {
    name: doc.metadata.name,
    file,
    cgroup: s.cgroup,
    ...(s.netns ? { netns: s.netns } : {}),
    accelerate: s.accelerate,
    proxy: {
      ...(s.proxy.outbound ? { outbound: s.proxy.outbound } : {}),
      ...(s.proxy.outbound6 ? { outbound6: s.proxy.outbound6 } : {}),
      ...(s.proxy.inbound ? { inbound: s.proxy.inbound } : {}),
    },
    bypass: s.proxy.bypass,
    outbound: s.outbound,
    inbound: s.inbound,
    ...(s.dns
      ? {
          dns: {
            proxy: s.dns.proxy,
            ...(s.dns.proxy6 ? { proxy6: s.dns.proxy6 } : {}),
            nameservers: s.dns.nameservers.filter(
              (a, i, all) => all.findIndex((b) => b.text === a.text && b.family === a.family) === i,
            ),
            all: s.dns.all,
            tcp: s.dns.tcp,
          },
        }
      : {}),
  };
}
