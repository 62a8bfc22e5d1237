// load.ts — reads policy files (YAML, one or more documents each) into validated policies, with
// field-level errors naming the file; never throws for bad input.
import { stat } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import type { z } from 'zod';
import { policyDocument, toPolicy, type Policy } from './schema.js';
import { LIMITS } from './limits.js';
import { PolicyDirError, readPolicyDir, readPolicyFile, tooBigMessage, type One } from './read.js';

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
  /** The file's text as read (what the agent remembers as applied content). */
  text?: string;
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

const article = (t: string) => (t === 'null' ? 'null' : /^[aeiou]/.test(t) ? `an ${t}` : `a ${t}`);

function zodErrors(file: string, prefix: string, err: z.ZodError): PolicyError[] {
  return err.issues.map((i) => {
    let message = i.message;
    if (i.code === 'unrecognized_keys')
      message = `unknown field${i.keys.length > 1 ? 's' : ''} ${i.keys.map((k) => JSON.stringify(k)).join(', ')}`;
    else if (i.code === 'invalid_type' && i.message.startsWith('Invalid input')) {
      // "Invalid input: expected object, received string": absent is "required", present is a wrong type.
      const received = /received (\w+)$/.exec(i.message)?.[1];
      message =
        received === undefined || received === 'undefined'
          ? `is required (${i.expected})`
          : `must be ${article(i.expected)}, not ${article(received)}`;
    }
    return { file, path: prefix + fieldPath(i.path), message };
  });
}

/** Errors reported per file: a file of a million bad entries says so in a few lines, not a million. */
const MAX_ERRORS = 20;

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
    const r = policyDocument.safeParse(value);
    if (!r.success)
      for (const e of zodErrors(file, where, r.error)) errors.push(e); // (no spread: 100,000s)
    else policies.push(toPolicy(r.data, file));
  });
  if (errors.length > MAX_ERRORS) {
    const more = errors.length - MAX_ERRORS;
    errors.splice(MAX_ERRORS, more, { file, path: '', message: `… and ${more.toLocaleString('en-US')} more errors` });
  }
  if (errors.length > 0) return { file, policies: [], errors };
  return { file, policies, errors };
}

/** Reads and parses one policy file, within the limits (read.ts): refusals and skips are its errors. */
export async function loadPolicyFile(file: string): Promise<FileResult> {
  const r = await readPolicyFile(file);
  if (!('text' in r)) return fileResult(file, r);
  const { parseIsolated } = await import('./isolated.js');
  return (await parseIsolated([{ file, text: r.text }]))[0]!;
}

/** One read (read.ts) as a parsed file, or its reason as the file's error. */
export function fileResult(file: string, r: One): FileResult {
  if ('text' in r) return { ...parsePolicyText(r.text, file), text: r.text };
  const message =
    'issue' in r
      ? r.issue.message
      : 'tooBig' in r
        ? tooBigMessage(r.tooBig, LIMITS.fileBytes)
        : 'changed while being read';
  return { file, policies: [], errors: [{ file, path: '', message }] };
}

export interface PolicySet {
  files: FileResult[];
  /** Valid policies, conflict-free (see checkSet for who wins a conflict). */
  policies: Policy[];
  errors: PolicyError[];
  /** Policies left out because of a conflict (the agent may fall back to their file's applied content). */
  rejected: Policy[];
  /** Files skipped as not policy files at all (a FIFO, a device, a directory named *.yaml). */
  warnings?: PolicyError[];
}

/**
 * Loads a file or a directory as the agent would read it (read.ts: only regular files, trusted, within
 * the limits) and checks cross-file rules (unique names and cgroups) and the number of policies.
 */
export async function loadPolicies(path: string): Promise<PolicySet> {
  const st = await stat(path);
  if (!st.isDirectory()) {
    const f = await loadPolicyFile(path);
    const set = checkSet([f]);
    const capped = perNode(set.policies);
    return { ...set, policies: capped.policies, errors: [...set.errors, ...capped.errors] };
  }
  let read;
  try {
    read = await readPolicyDir(path);
  } catch (e) {
    if (!(e instanceof PolicyDirError)) throw e;
    return { files: [], policies: [], errors: [{ file: path, path: '', message: e.message }], rejected: [] };
  }
  const { parseIsolated } = await import('./isolated.js'); // (isolated.ts imports this module)
  const files = await parseIsolated(read.files);
  const byLevel = (l: 'warn' | 'error') =>
    read.issues.filter((i) => i.level === l).map((i) => ({ file: i.file, path: '', message: i.message }));
  const errors = [
    ...byLevel('error'),
    ...read.vanished.map((file) => ({ file, path: '', message: 'changed while being read' })),
  ];
  const set = checkSet(files);
  const capped = perNode(set.policies);
  return {
    ...set,
    policies: capped.policies,
    errors: [...errors, ...set.errors, ...capped.errors],
    warnings: byLevel('warn'),
    rejected: [...set.rejected, ...capped.rejected],
  };
}

/**
 * At most LIMITS.policies per node (the eBPF maps' slots): the first ones in order (`first`: names that
 * go first, e.g. those applied now) stay; the others are errors naming their file.
 */
export function perNode(
  policies: Policy[],
  first: ReadonlySet<string> = new Set(),
): { policies: Policy[]; errors: PolicyError[]; rejected: Policy[] } {
  if (policies.length <= LIMITS.policies) return { policies, errors: [], rejected: [] };
  const ordered = [...policies.filter((p) => first.has(p.name)), ...policies.filter((p) => !first.has(p.name))];
  const keep = new Set(ordered.slice(0, LIMITS.policies));
  const rejected = policies.filter((p) => !keep.has(p));
  return {
    policies: policies.filter((p) => keep.has(p)),
    rejected,
    errors: rejected.map((p) => ({
      file: p.file,
      path: 'metadata.name',
      message: `${p.name} is not applied: more than ${LIMITS.policies} policies on this node (the eBPF maps hold ${LIMITS.policies})`,
    })),
  };
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
