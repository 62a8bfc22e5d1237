// templates.ts — the RedirectPolicyTemplate documents of the policy directory, for the Kubernetes
// source; files are parsed again only when they changed (read() runs on every pod cgroup event).
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { loadPolicyFile, formatError, type FileResult } from '../../policy/load.js';
import { checkPolicyDir, isPolicyName } from '../../policy/read.js';
import type { PolicyTemplate } from '../../policy/template.js';
import type { SourceError } from '../source.js';

export interface TemplateSet {
  templates: Map<string, PolicyTemplate>;
  errors: SourceError[];
}

export class TemplateDir {
  private cache = new Map<string, { key: string; result: FileResult }>();

  constructor(readonly dir: string) {}

  /** The templates now (an arrow: `templates: new TemplateDir(dir).read` is a KubernetesSource option). */
  read = async (): Promise<TemplateSet> => {
    const errors: SourceError[] = [];
    const templates = new Map<string, PolicyTemplate>();
    let files: string[];
    try {
      files = await policyFiles(this.dir);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      const message = code ? `cannot read: ${code}` : (e as Error).message;
      return { templates, errors: [{ source: 'kubernetes', object: this.dir, message }] };
    }
    const seen = new Set<string>();
    for (const file of files) {
      seen.add(file);
      let key: string;
      try {
        const st = await stat(file);
        key = `${st.ino}:${st.size}:${st.mtimeMs}`;
      } catch {
        continue; // removed meanwhile
      }
      let hit = this.cache.get(file);
      if (hit?.key !== key) {
        hit = { key, result: await loadPolicyFile(file) };
        this.cache.set(file, hit);
      }
      // Errors of policy documents are the files source's to report; only a template file's are ours.
      if (hit.result.templates)
        for (const e of hit.result.errors) errors.push({ source: 'kubernetes', object: file, message: formatError(e) });
      for (const t of hit.result.templates ?? []) {
        const other = templates.get(t.name);
        if (other) {
          errors.push({
            source: 'kubernetes',
            object: file,
            message: `${file}: RedirectPolicyTemplate ${t.name} is also defined in ${other.file}; neither is used`,
          });
          templates.set(t.name, { ...t, spec: { __conflict: other.file } });
        } else templates.set(t.name, t);
      }
    }
    for (const f of [...this.cache.keys()]) if (!seen.has(f)) this.cache.delete(f);
    // A name defined twice is unusable: drop it (its pods get an error, and the guard holds them).
    for (const [n, t] of templates) if ('__conflict' in t.spec) templates.delete(n);
    return { templates, errors };
  };
}

/** The policy files of the directory, checked like the files source checks it (owner, mode). */
async function policyFiles(dir: string): Promise<string[]> {
  await checkPolicyDir(dir);
  return (await readdir(dir))
    .filter(isPolicyName)
    .sort()
    .map((n) => join(dir, n));
}
