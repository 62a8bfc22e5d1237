// schema.ts — the RedirectPolicy file format (a user-facing contract) and its validated form.
import { z } from 'zod';
import { parseEndpoint, parseCidr, isLoopback, type Endpoint, type Cidr } from './addr.js';
import { checkEntryLimits } from './limits.js';

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

const cidr = z.string({ error: 'must be a CIDR string such as "10.0.0.0/8"' }).transform((s, ctx) => {
  const r = parseCidr(s);
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
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
        inbound: port.optional(),
        bypass: z
          .strictObject({
            cgroups: z.array(cgroupPath).default([]),
            uids: z.array(id).default([]),
            gids: z.array(id).default([]),
          })
          .default({ cgroups: [], uids: [], gids: [] }),
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
          excludePorts: z.array(port).default([]),
        })
        .default({ excludePorts: [] }),
    })
    .superRefine((spec, ctx) => {
      checkEntryLimits(spec, ctx);
      if (!spec.proxy.outbound && !spec.proxy.outbound6) {
        ctx.addIssue({
          code: 'custom',
          path: ['proxy'],
          message: 'needs outbound (IPv4) or outbound6 (IPv6): there is nowhere to redirect to',
        });
      }
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

/** A validated policy, with where it came from. */
export interface Policy {
  name: string;
  file: string;
  cgroup: string;
  netns?: string;
  accelerate: boolean;
  proxy: { outbound?: Endpoint; outbound6?: Endpoint; inbound?: number };
  bypass: { cgroups: string[]; uids: number[]; gids: number[] };
  outbound: {
    includePorts: number[];
    excludePorts: number[];
    includeCidrs: Cidr[];
    excludeCidrs: Cidr[];
    redirectLoopback: boolean;
  };
  inbound: { excludePorts: number[] };
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
  };
}
