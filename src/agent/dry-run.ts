// dry-run.ts — `meshredir agent --dry-run`: the desired state the agent would reconcile (policy files, and
// with --kubernetes the pods of this node once listed), planned and rendered; nothing is written.
import { loadPolicies, formatError } from '../policy/load.js';
import type { DryRun, Mode } from '../modes/mode.js';
import type { KubernetesSource } from '../sources/kubernetes/source.js';
import type { SourceRead } from '../sources/source.js';
import { mergeSources } from './merge.js';

/** How long the first list of pods may take before the dry run gives up. */
const LIST_TIMEOUT_MS = 30_000;

export async function dryRun(mode: Mode, policiesDir: string, kube?: KubernetesSource): Promise<DryRun> {
  const set = await loadPolicies(policiesDir);
  const reads: SourceRead[] = [
    {
      policies: set.policies,
      errors: set.errors.map((e) => ({ source: 'files', object: e.file, message: formatError(e) })),
    },
  ];
  if (kube) {
    let timer: NodeJS.Timeout | undefined;
    try {
      await Promise.race([
        kube.start(() => {}),
        new Promise((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`no list of pods from the API server within ${LIST_TIMEOUT_MS / 1000} s`)),
            LIST_TIMEOUT_MS,
          );
        }),
      ]);
      reads.push(await kube.read());
    } finally {
      clearTimeout(timer);
      await kube.stop();
    }
  }
  const merged = mergeSources(reads);
  const d = mode.plan({ policies: merged.policies, gates: merged.gates }).render();
  return {
    ...d,
    messages: [
      ...(set.warnings ?? []).map((w) => `warning: ${formatError(w)}`),
      ...merged.errors.map((e) => e.message),
      ...d.messages,
    ],
    ok: d.ok && merged.errors.length === 0,
  };
}
