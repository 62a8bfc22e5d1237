// schema/outbound.ts — the outbound part of a RedirectPolicy: spec.proxy.bypass, spec.outbound, and the
// checks across them (a port or CIDR both included and excluded, loopback redirection with a remote proxy).
import { z } from 'zod';
import { isLoopback, type Cidr, type Endpoint } from '../addr.js';
import { parseMark, type Mark } from '../mark.js';
import { MAX_MARKS } from '../../bpf/abi.js';
import { cgroupPath, cidr, id, port } from './fields.js';

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

/** spec.proxy.bypass: who is never redirected. */
export const bypass = z
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
  .default({ cgroups: [], uids: [], gids: [], marks: [] });

/** spec.outbound: which destinations are redirected. */
export const outbound = z
  .strictObject({
    includePorts: z.array(port).default([]),
    excludePorts: z.array(port).default([]),
    includeCidrs: z.array(cidr).default([]),
    excludeCidrs: z.array(cidr).default([]),
    redirectLoopback: z.boolean().default(false),
  })
  .default({ includePorts: [], excludePorts: [], includeCidrs: [], excludeCidrs: [], redirectLoopback: false });

/** Which destinations a policy redirects (spec.outbound). */
export interface OutboundSettings {
  /** When not empty, only connections to these ports are redirected. */
  includePorts: number[];
  excludePorts: number[];
  /** When not empty, only connections to these destinations are redirected. */
  includeCidrs: Cidr[];
  excludeCidrs: Cidr[];
  /** Loopback destinations are redirected too (with loopback proxies only). */
  redirectLoopback: boolean;
}

/** What the outbound checks read of a spec. */
interface OutboundSpec {
  cgroup: string;
  proxy: { outbound?: Endpoint; outbound6?: Endpoint; bypass: { cgroups: string[]; marks: Mark[] } };
  outbound: OutboundSettings;
}

/** The checks across the outbound fields of a spec (issues' paths are the spec's). */
export function checkOutbound(spec: OutboundSpec, ctx: z.RefinementCtx): void {
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
}
