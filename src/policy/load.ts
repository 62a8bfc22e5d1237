// load.ts — reads policy files (YAML, one or more documents each) into validated policies, with
// field-level errors naming the file; never throws for bad input.
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import type { z } from 'zod';
import { policyDocument, toPolicy, type Policy } from './schema.js';

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
}

export function formatError(e: PolicyError): string {
  return `${e.file}: ${e.path ? `${e.path}: ` : ''}${e.message}`;
}

function fieldPath(path: PropertyKey[]): string {
  let out = '';
  for (const p of path) {
    if (typeof p === 'number') out += `[${p}]`;
    else out += out ? `.${String(p)}` : String(p);
  }
  return out;
}

function zodErrors(file: string, prefix: string, err: z.ZodError): PolicyError[] {
  return err.issues.map((i) => {
    let message = i.message;
    if (i.code === 'unrecognized_keys') message = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    else if (i.code === 'invalid_type' && i.message.startsWith('Invalid input')) message = `is required (${i.expected})`;
    return { file, path: prefix + fieldPath(i.path), message };
  });
}

/** Parses one file's text. All documents must be valid for any of them to be returned. */
export function parsePolicyText(text: string, file: string): FileResult {
  const errors: PolicyError[] = [];
  const policies: Policy[] = [];
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
      for (const e of doc.errors) errors.push({ file, path: '', message: `${where}not YAML: ${e.message.split('\n')[0]}` });
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
    const r = policyDocument.safeParse(value);
    if (!r.success) errors.push(...zodErrors(file, where, r.error));
    else policies.push(toPolicy(r.data, file));
  });
  if (errors.length > 0) return { file, policies: [], errors };
  return { file, policies, errors };
}

export async function loadPolicyFile(file: string): Promise<FileResult> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    return { file, policies: [], errors: [{ file, path: '', message: `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}` }] };
  }
  return parsePolicyText(text, file);
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
  /** Valid policies, conflict-free (a cgroup claimed twice is an error on both files). */
  policies: Policy[];
  errors: PolicyError[];
}

/** Loads a file or a directory and checks cross-file rules (unique names and cgroups). */
export async function loadPolicies(path: string): Promise<PolicySet> {
  const st = await stat(path);
  const files = st.isDirectory() ? await Promise.all((await policyFiles(path)).map(loadPolicyFile)) : [await loadPolicyFile(path)];
  return checkSet(files);
}

export function checkSet(files: FileResult[]): PolicySet {
  const errors = files.flatMap((f) => f.errors);
  const byCgroup = new Map<string, Policy[]>();
  const byName = new Map<string, Policy[]>();
  for (const p of files.flatMap((f) => f.policies)) {
    byCgroup.set(p.cgroup, [...(byCgroup.get(p.cgroup) ?? []), p]);
    byName.set(p.name, [...(byName.get(p.name) ?? []), p]);
  }
  const rejected = new Set<Policy>();
  for (const [cg, ps] of byCgroup) {
    if (ps.length < 2) continue;
    for (const p of ps) {
      rejected.add(p);
      const others = ps.filter((o) => o !== p).map((o) => `${o.file} (${o.name})`);
      errors.push({ file: p.file, path: 'spec.cgroup', message: `${cg} is also claimed by ${others.join(', ')}` });
    }
  }
  for (const [name, ps] of byName) {
    if (ps.length < 2) continue;
    for (const p of ps) {
      rejected.add(p);
      errors.push({ file: p.file, path: 'metadata.name', message: `${name} is also used by ${ps.filter((o) => o !== p).map((o) => o.file).join(', ')}` });
    }
  }
  return { files, policies: files.flatMap((f) => f.policies).filter((p) => !rejected.has(p)), errors };
}
