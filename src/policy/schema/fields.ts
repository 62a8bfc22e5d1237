// schema/fields.ts — the field types every part of the RedirectPolicy schema uses (ports, ids, cgroup paths,
// endpoints, CIDRs), with the messages a user reads when one is wrong.
import { z } from 'zod';
import { parseEndpoint, parseCidr } from '../addr.js';

/** What a wrong value is, for messages: "a string", "an array", "null". */
export function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'an array';
  const t = typeof v;
  return t === 'object' ? 'an object' : t === 'undefined' ? 'nothing' : `a ${t}`;
}

/** The message for a value of the wrong type: "is required" only when it is absent. */
export const wrongType = (what: string) => (i: { input: unknown }) =>
  i.input === undefined ? `is required (${what})` : `must be ${what}, not ${typeOf(i.input)}`;

export const port = z
  .number({ error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .int({ error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .min(1, { error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` })
  .max(65535, { error: (i) => `${JSON.stringify(i.input)} is not a port (1-65535)` });

export const id = z
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

export const cgroupPath = z
  .string({ error: wrongType('a cgroup path string such as /pods/a') })
  .regex(/^\/[^\0]*$/, { error: (i) => `${JSON.stringify(i.input)} is not an absolute cgroup path (starts with /)` })
  .refine((p) => !p.split('/').includes('..'), { error: 'must not contain ..' })
  .transform(normaliseCgroupPath);

export function endpoint(family: 4 | 6) {
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

export const cidr = z.string({ error: 'must be a CIDR string such as "10.0.0.0/8"' }).transform((s, ctx) => {
  const r = parseCidr(s);
  if (typeof r === 'string') {
    ctx.addIssue({ code: 'custom', message: r });
    return z.NEVER;
  }
  return r;
});
