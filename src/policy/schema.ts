// schema.ts — the RedirectPolicy file format (a user-facing contract) and its validated form. The parts'
// fields and checks are in schema/: outbound.ts (bypass, spec.outbound), inbound.ts, dns.ts, and the field
// types they share (fields.ts).
import { z } from 'zod';
import type { Endpoint } from './addr.js';
import type { Mark } from './mark.js';
import { checkEntryLimits } from './limits.js';
import { dns, toDnsSpec, type DnsSpec } from './schema/dns.js';
import { cgroupPath, endpoint, wrongType } from './schema/fields.js';
import { checkInbound, inbound, inboundProxy, type InboundProxy, type InboundSettings } from './schema/inbound.js';
import { bypass, checkOutbound, outbound, type OutboundSettings } from './schema/outbound.js';

export { typeOf, normaliseCgroupPath } from './schema/fields.js';
export { TPROXY_DEFAULTS, type InboundProxy, type InboundSettings } from './schema/inbound.js';
export type { DnsSpec } from './schema/dns.js';
export type { OutboundSettings } from './schema/outbound.js';

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
        bypass,
      }),
      outbound,
      inbound,
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
      checkInbound(spec, ctx);
      checkOutbound(spec, ctx);
    }),
});

export type PolicyDocument = z.output<typeof policyDocument>;

/** A validated policy, with where it came from. */
export interface Policy {
  name: string;
  /** Where it came from: a file's path, or for a pod "pod <namespace>/<name> (uid <uid>)". */
  file: string;
  /** Which source made it (absent: a policy file). */
  origin?: 'file' | 'kubernetes';
  cgroup: string;
  netns?: string;
  accelerate: boolean;
  proxy: { outbound?: Endpoint; outbound6?: Endpoint; inbound?: InboundProxy };
  bypass: { cgroups: string[]; uids: number[]; gids: number[]; marks: Mark[] };
  outbound: OutboundSettings;
  inbound: InboundSettings;
  /** DNS capture (docs/dns-design.md); absent: port-53 traffic is treated like any other. */
  dns?: DnsSpec;
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
    ...(s.dns ? { dns: toDnsSpec(s.dns) } : {}),
  };
}
