// load.ts — reads policy files (YAML, one or more documents each) into validated policies, with
// field-level errors naming the file; never throws for bad input.
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { policyDocument, toPolicy, type Policy } from './schema.js';
import { zodErrors } from './zod-errors.js';
import { TEMPLATE_KIND, parseTemplateValue, type PolicyTemplate } from './template.js';

export interface PolicyError {
  file: string;
  /** Field path like spec.outbound.excludePorts[2], or "" for the whole document. */
  path: string;
  message: string;
}

export interface FileResult {
  file: string;
  policies: Policy[];
  errors: PolicyError[];
  /** RedirectPolicyTemplate documents (what the Kubernetes source makes pods' policies from); present
   * whenever the file has one, empty when the file has errors. */
  templates?: PolicyTemplate[];
  /** The file's text as read (what the agent remembers as applied content). */
  text?: string;
}

export function formatError(e: PolicyError): string {
  return `${e.file}: ${e.path ? `${e.path}: ` : ''}${e.message}`;
}

/** Parses one file's text. All documents must be valid for any of them to be returned. */
export function parsePolicyText(text: string, file: string): FileResult {
  const errors: PolicyError[] = [];
  const policies: Policy[] = [];
  const templates: PolicyTemplate[] = [];
  let sawTemplate = false;
  let docs;
  try {
    docs = parseAllDocuments(text, { uniqueKeys: true, prettyErrors: false });
  } catch (e) {
    return { file, policies, errors: [{ file, path: '', message: `not YAML: ${(e as Error).message}` }] };
  }
  const list = Array.isArray(docs) ? docs : [docs];
  list.forEach((doc, n) => {
    const where = list.length > 1 ? `document ${n + 1}: ` : '';
    if (doc.errors.length > 0) {
      for (const e of doc.errors)
        errors.push({ file, path: '', message: `${where}not YAML: ${e.message.split('\n')[0]}` });
      return;
    }
    let value: unknown;
    try {
      value = doc.toJS({ maxAliasCount: 100 });
    } catch (e) {
      errors.push({ file, path: '', message: `${where}${(e as Error).message}` });
      return;
    }
    if (value === null || value === undefined) return; // empty document (e.g. trailing ---)
    if ((value as { kind?: unknown }).kind === TEMPLATE_KIND) {
      sawTemplate = true;
      const t = parseTemplateValue(value, file, where);
      errors.push(...t.errors);
      if (t.template) templates.push(t.template);
      return;
    }
    const r = policyDocument.safeParse(value);
    if (!r.success) errors.push(...zodErrors(file, where, r.error));
    else policies.push(toPolicy(r.data, file));
  });
  // `templates` is there (maybe empty) whenever the file has a template document, valid or not.
  if (errors.length > 0) return { file, policies: [], errors, ...(sawTemplate ? { templates: [] } : {}) };
  return { file, policies, errors, ...(sawTemplate ? { templates } : {}) };
}

export async function loadPolicyFile(file: string): Promise<FileResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return {
      file,
      policies: [],
      errors: [
        { file, path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` },
      ],
    };
  }
  return { ...parsePolicyText(text, file), text };
}

/** Lists the policy files of a directory (*.yaml, *.yml; hidden and editor temp files ignored). */
export async function policyFiles(dir: string): Promise<string[]> {
  const names = await readdir(dir);
  return names
    .filter((n) => /\.ya?ml$/.test(n) && !n.startsWith('.'))
    .sort()
    .map((n) => join(dir, n));
}

export interface PolicySet {
  files: FileResult[];
  /** Valid policies, conflict-free (see checkSet for who wins a conflict). */
  policies: Policy[];
  errors: PolicyError[];
  /** Policies left out because of a conflict (the agent may fall back to their file's applied content). */
  rejected: Policy[];
}

/** Loads a file or a directory and checks cross-file rules (unique names and cgroups). */
export async function loadPolicies(path: string): Promise<PolicySet> {
  const st = await stat(path);
  const files = st.isDirectory()
    ? await Promise.all((await policyFiles(path)).map(loadPolicyFile))
    : [await loadPolicyFile(path)];
  return checkSet(files);
}

const claimant = (p: Policy) => `${p.file} (${p.name})`;

/**
 * Checks cross-file rules: one policy per cgroup, one policy per name. `applied` is what is in force
 * now (the agent's last applied set). A claim that an applied policy from the same file already holds
 * is the incumbent's: it stays and only the newcomers are rejected, so a second file claiming a cgroup
 * never takes down the policy that works. When no claimant (or more than one) is the incumbent, every
 * claimant is rejected.
 */
export function checkSet(files: FileResult[], applied: readonly Policy[] = []): PolicySet {
  const errors = files.flatMap((f) => f.errors);
  const all = files.flatMap((f) => f.policies);
  const rejected = new Set<Policy>();
  const rules: { field: string; key: (p: Policy) => string; what: string }[] = [
    { field: 'spec.cgroup', key: (p) => p.cgroup, what: 'cgroup' },
    { field: 'metadata.name', key: (p) => p.name, what: 'name' },
  ];
  for (const rule of rules) {
    const held = new Set(applied.map((p) => `${p.file}\0${rule.key(p)}`));
    const byKey = new Map<string, Policy[]>();
    for (const p of all) byKey.set(rule.key(p), [...(byKey.get(rule.key(p)) ?? []), p]);
    for (const [key, ps] of byKey) {
      if (ps.length < 2) continue;
      const incumbents = ps.filter((p) => held.has(`${p.file}\0${key}`));
      if (incumbents.length === 1) {
        const inc = incumbents[0]!;
        for (const p of ps) {
          if (p === inc) continue;
          rejected.add(p);
          errors.push({
            file: p.file,
            path: rule.field,
            message: `${key} is already claimed by ${claimant(inc)}, which is applied and stays; ${p.name} from ${p.file} is not applied`,
          });
        }
        continue;
      }
      for (const p of ps) {
        rejected.add(p);
        const others = ps.filter((o) => o !== p).map(claimant);
        errors.push({
          file: p.file,
          path: rule.field,
          message:
            rule.what === 'cgroup'
              ? `${key} is also claimed by ${others.join(', ')}`
              : `${key} is also used by ${ps
                  .filter((o) => o !== p)
                  .map((o) => o.file)
                  .join(', ')}`,
        });
      }
    }
  }
  return { files, policies: all.filter((p) => !rejected.has(p)), errors, rejected: [...rejected] };
}
