// template.ts — the RedirectPolicyTemplate document (a RedirectPolicy without its cgroup, which the
// Kubernetes source fills in per pod) and its instantiation with per-pod overrides. Pure.
import { z } from 'zod';
import { policyDocument, toPolicy, type Policy } from './schema.js';
import { zodErrors } from './zod-errors.js';
import type { PolicyError } from './load.js';

export const TEMPLATE_KIND = 'RedirectPolicyTemplate';

/** A validated template: its spec is kept as written (it is validated again, whole, per pod). */
export interface PolicyTemplate {
  name: string;
  file: string;
  spec: Record<string, unknown>;
}

/** The fields a pod gives: the template must not set them. */
const PER_POD = ['cgroup', 'netns'] as const;
/** Stands in for a pod's cgroup while a template is checked on its own. */
const PLACEHOLDER_CGROUP = '/meshredir.io/template-check';

const templateDocument = z.strictObject({
  apiVersion: z.literal('meshredir/v1', {
    error: (i) =>
      i.input === undefined
        ? 'is required ("meshredir/v1")'
        : `${JSON.stringify(i.input)}: only "meshredir/v1" is known`,
  }),
  kind: z.literal(TEMPLATE_KIND),
  metadata: z.strictObject({
    name: z.string({ error: 'is required (a DNS-label-like name)' }).regex(/^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/, {
      error: (i) => `${JSON.stringify(i.input)} is not a valid name (lowercase letters, digits, "-" and ".")`,
    }),
  }),
  spec: z.record(z.string(), z.unknown(), { error: 'must be an object' }),
});

/** The RedirectPolicy document a template and a pod make; validated by the one policy schema. */
function policyFrom(name: string, spec: Record<string, unknown>, cgroup: string): unknown {
  return { apiVersion: 'meshredir/v1', kind: 'RedirectPolicy', metadata: { name }, spec: { ...spec, cgroup } };
}

/** Parses one YAML document of kind RedirectPolicyTemplate (`where`: "document 2: " or ""). */
export function parseTemplateValue(
  value: unknown,
  file: string,
  where: string,
): { template?: PolicyTemplate; errors: PolicyError[] } {
  const r = templateDocument.safeParse(value);
  if (!r.success) return { errors: zodErrors(file, where, r.error) };
  const errors: PolicyError[] = [];
  for (const f of PER_POD)
    if (f in r.data.spec)
      errors.push({
        file,
        path: `${where}spec.${f}`,
        message: `is set per pod by the Kubernetes source; a ${TEMPLATE_KIND} must not set it`,
      });
  // Everything else is a RedirectPolicy spec: the same schema checks it (so new policy fields are
  // template fields at once), with a placeholder cgroup.
  const check = policyDocument.safeParse(policyFrom('template-check', r.data.spec, PLACEHOLDER_CGROUP));
  if (!check.success)
    errors.push(...zodErrors(file, where, check.error).filter((e) => e.path !== `${where}spec.cgroup`));
  if (errors.length) return { errors };
  return { template: { name: r.data.metadata.name, file, spec: r.data.spec }, errors };
}

/** Per-pod overrides (from annotations): includes replace the template's list, excludes add to it. */
export interface Overrides {
  includePorts?: number[];
  excludePorts?: number[];
  includeCidrs?: string[];
  excludeCidrs?: string[];
  inboundExcludePorts?: number[];
}

const obj = (v: unknown): Record<string, unknown> =>
  v && typeof v === 'object' && !Array.isArray(v) ? { ...(v as Record<string, unknown>) } : {};
const list = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);
const union = (a: unknown[], b: unknown[]) => [...new Set([...a, ...b])];

/** The spec of a template with overrides applied (still to be validated). */
export function applyOverrides(spec: Record<string, unknown>, o: Overrides): Record<string, unknown> {
  const out = { ...spec };
  const outbound = obj(spec.outbound);
  if (o.includePorts) outbound.includePorts = o.includePorts;
  if (o.excludePorts) outbound.excludePorts = union(list(outbound.excludePorts), o.excludePorts);
  if (o.includeCidrs) outbound.includeCidrs = o.includeCidrs;
  if (o.excludeCidrs) outbound.excludeCidrs = union(list(outbound.excludeCidrs), o.excludeCidrs);
  if (Object.keys(outbound).length) out.outbound = outbound;
  if (o.inboundExcludePorts) {
    const inbound = obj(spec.inbound);
    inbound.excludePorts = union(list(inbound.excludePorts), o.inboundExcludePorts);
    out.inbound = inbound;
  }
  return out;
}

/**
 * A pod's policy: the template's spec with the overrides, the pod's cgroup and name, validated by the
 * RedirectPolicy schema. Errors are "field: message" strings (the caller names the pod).
 */
export function instantiate(
  t: PolicyTemplate,
  o: Overrides,
  name: string,
  cgroup: string,
  file: string,
): { policy: Policy; document: unknown } | { errors: string[] } {
  const document = policyFrom(name, applyOverrides(t.spec, o), cgroup);
  const r = policyDocument.safeParse(document);
  if (!r.success)
    return { errors: zodErrors(file, '', r.error).map((e) => `${e.path ? `${e.path}: ` : ''}${e.message}`) };
  return { policy: { ...toPolicy(r.data, file), origin: 'kubernetes' }, document };
}

/**
 * A pod policy again from the RedirectPolicy document it was made of (kept in agent.json so that a
 * restarted agent applies the pod policies it last applied until the API server has answered).
 */
export function fromDocument(document: unknown, file: string): { policy: Policy } | { errors: string[] } {
  const r = policyDocument.safeParse(document);
  if (!r.success)
    return { errors: zodErrors(file, '', r.error).map((e) => `${e.path ? `${e.path}: ` : ''}${e.message}`) };
  return { policy: { ...toPolicy(r.data, file), origin: 'kubernetes' } };
}
