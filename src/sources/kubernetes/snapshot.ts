// snapshot.ts — what the Kubernetes source last gave the agent, in the form agent.json keeps it: the pod
// policies as the RedirectPolicy documents they were made of, the gates and the pods as classified. A
// restarted agent applies it until the API server has answered (so an API server that is down neither
// removes a pod's policy nor lets the guard refuse a pod it had classified). Pure; no client-node here.
import { z } from 'zod';
import { fromDocument } from '../../policy/template.js';
import type { Policy } from '../../policy/schema.js';
import type { SourceError, SourceRead } from '../source.js';

/** What read() found for one pod (status shows it). */
export const podView = z.strictObject({
  pod: z.string(),
  uid: z.string(),
  decision: z.enum(['enrolled', 'pass', 'invalid']),
  why: z.string(),
  cgroup: z.string().nullable(),
  policy: z.string().optional(),
});
export type PodView = z.infer<typeof podView>;

export const kubeSnapshot = z.strictObject({
  /** When the source's read was made. */
  at: z.string(),
  policies: z.array(z.strictObject({ file: z.string(), document: z.unknown() })),
  gates: z.strictObject({ guard: z.array(z.string()), pass: z.array(z.string()) }),
  pods: z.array(podView),
});
export type KubeSnapshot = z.infer<typeof kubeSnapshot>;

/** The snapshot as a read of the source; a document that no longer validates is an error, not a policy. */
export function restoreSnapshot(s: KubeSnapshot): SourceRead {
  const policies: Policy[] = [];
  const errors: SourceError[] = [];
  for (const p of s.policies) {
    const r = fromDocument(p.document, p.file);
    if ('policy' in r) policies.push(r.policy);
    else
      errors.push({
        source: 'kubernetes',
        object: p.file,
        message: `${p.file}: the pod policy kept in agent.json no longer validates (${r.errors.join('; ')}); not applied until the API server answers`,
      });
  }
  return { policies, errors, gates: s.gates };
}
