// read.ts — reads a policy directory (or one file) as untrusted input: only regular files, opened without
// blocking, owned by root (or this process's user) and writable by nobody else, and no more bytes than the
// limits allow — all decided from stat/fstat before a byte is read.
import { accessSync, constants as C, type Stats } from 'node:fs';
import { lstat, open, opendir, readlink, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LIMITS, bytes } from './limits.js';

/** Something said about one file: a warning (skipped: not a policy file at all) or an error (refused). */
export interface FileIssue {
  file: string;
  level: 'warn' | 'error';
  message: string;
}

export interface FileText {
  file: string;
  text: string;
  /** When it was last modified (fstat of what was read). */
  mtimeMs: number;
}

export interface DirRead {
  files: FileText[];
  issues: FileIssue[];
  /** Files listed but gone (or replaced) by the time they were opened: a rename or an edit in progress. */
  vanished: string[];
}

/** A refusal of the whole directory (nothing in it is read); the caller changes nothing. */
export class PolicyDirError extends Error {}

export interface ReadLimits {
  fileBytes: number;
  dirBytes: number;
  files: number;
}

const DEFAULT_LIMITS: ReadLimits = { fileBytes: LIMITS.fileBytes, dirBytes: LIMITS.dirBytes, files: LIMITS.files };

/** Policy file names: *.yaml / *.yml, not hidden (editor temp files, a ConfigMap's ..data). */
export const isPolicyName = (n: string): boolean => /\.ya?ml$/.test(n) && !n.startsWith('.');

function kind(st: Stats): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'not a regular file';
}

/** Whether a path is on a read-only mount (a Kubernetes ConfigMap: 0777 directory, mounted read-only). */
function readOnlyMount(path: string): boolean {
  try {
    accessSync(path, C.W_OK);
    return false;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EROFS';
  }
}

/**
 * Why a policy directory or file must not be trusted, or null: owned by someone other than root (or the
 * user this runs as), or writable by its group or by others — they could then change what is redirected.
 * On a read-only mount nobody can write, whatever the mode says.
 */
export function untrusted(path: string, st: Stats): string | null {
  const euid = process.geteuid?.() ?? 0;
  if (st.uid !== 0 && st.uid !== euid)
    return `owned by uid ${st.uid}, not by root${euid !== 0 ? ` or uid ${euid}` : ''}`;
  if (st.mode & 0o022 && !readOnlyMount(path)) {
    const who = st.mode & 0o002 ? (st.mode & 0o020 ? 'its group and others' : 'others') : 'its group';
    return `writable by ${who} (mode ${(st.mode & 0o7777).toString(8).padStart(4, '0')})`;
  }
  return null;
}

/** Checks the directory itself; throws PolicyDirError with the reason. */
export async function checkPolicyDir(dir: string): Promise<void> {
  let st: Stats;
  try {
    st = await stat(dir);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new PolicyDirError(`policy directory ${dir} does not exist; nothing was changed`);
    throw new PolicyDirError(
      `policy directory ${dir}: cannot read: ${code ?? (e as Error).message}; nothing was changed`,
    );
  }
  if (!st.isDirectory()) throw new PolicyDirError(`policy directory ${dir} is not a directory; nothing was changed`);
  const why = untrusted(dir, st);
  if (why)
    throw new PolicyDirError(
      `policy directory ${dir} is ${why}: refused, nothing was changed (it must be writable only by root, like the state directory)`,
    );
}

/** The policy file names of a directory, sorted; more than `max` is a refusal of the whole directory. */
async function listNames(dir: string, max: number): Promise<string[]> {
  const names: string[] = [];
  let d;
  try {
    d = await opendir(dir);
  } catch (e) {
    throw new PolicyDirError(
      `policy directory ${dir}: cannot list: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}; nothing was changed`,
    );
  }
  for await (const e of d) {
    if (!isPolicyName(e.name)) continue;
    if (names.length >= max)
      throw new PolicyDirError(
        `policy directory ${dir} has more than ${max} policy files: refused, nothing was changed (at most ${max})`,
      );
    names.push(e.name);
  }
  return names.sort();
}

/** One file: its text, or why not: an issue, gone meanwhile, or larger than the bytes it was allowed. */
export type One = { text: string; mtimeMs: number } | { issue: FileIssue } | { vanished: true } | { tooBig: number };

/** What a path that is not a regular file is, for the warning: "a symlink to /dev/zero, a character device". */
async function describe(file: string, st: Stats): Promise<string> {
  try {
    if ((await lstat(file)).isSymbolicLink()) return `a symlink to ${await readlink(file)}, ${kind(st)}`;
  } catch {
    /* gone meanwhile: say what stat saw */
  }
  return kind(st);
}

/**
 * Reads one policy file: checked by stat before it is opened (anything but a regular file is skipped
 * unopened: opening a device can have effects, a FIFO would block), opened O_NONBLOCK (a FIFO swapped in
 * meanwhile cannot block), checked again by fstat (the checks that count are on what was opened), and
 * read up to the limit.
 */
export async function readPolicyFile(file: string, maxBytes: number = LIMITS.fileBytes): Promise<One> {
  const issue = (level: FileIssue['level'], message: string): One => ({ issue: { file, level, message } });
  let st: Stats;
  try {
    st = await stat(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      try {
        const l = await lstat(file);
        if (l.isSymbolicLink())
          return issue('warn', `skipped: a symlink to ${await readlink(file)}, which does not exist`);
      } catch {
        /* gone: a rename in progress */
      }
      return { vanished: true };
    }
    if (code === 'ELOOP') return issue('error', 'cannot read: ELOOP (a symlink loop)');
    return issue('error', `cannot read: ${code ?? (e as Error).message}`);
  }
  if (!st.isFile()) return issue('warn', `skipped: ${await describe(file, st)}, not a regular file`);
  if (st.size > maxBytes) return { tooBig: st.size };
  let fh;
  try {
    fh = await open(file, C.O_RDONLY | C.O_NONBLOCK | C.O_NOCTTY);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return { vanished: true };
    return issue('error', `cannot read: ${code ?? (e as Error).message}`);
  }
  try {
    const fst = await fh.stat();
    if (fst.ino !== st.ino || fst.dev !== st.dev) return { vanished: true }; // replaced between stat and open
    if (!fst.isFile()) return issue('warn', `skipped: ${kind(fst)}, not a regular file`);
    const why = untrusted(file, fst);
    if (why) return issue('error', `refused: ${why}; policy files must be writable only by root`);
    if (fst.size > maxBytes) return { tooBig: fst.size };
    // Read at most one byte past the limit: a file that grows while it is read is caught too.
    const buf = Buffer.alloc(Math.min(fst.size, maxBytes) + 1);
    let len = 0;
    for (;;) {
      if (len === buf.length) break;
      const { bytesRead } = await fh.read(buf, len, buf.length - len, null);
      if (bytesRead === 0) break;
      len += bytesRead;
    }
    if (len > maxBytes) return { tooBig: len };
    if (len > fst.size) {
      // It grew while being read (within the limit): read it again at the next pass rather than half of it.
      return { vanished: true };
    }
    return { text: buf.toString('utf8', 0, len), mtimeMs: fst.mtimeMs };
  } catch (e) {
    return issue('error', `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  } finally {
    await fh.close();
  }
}

/**
 * Reads every policy file of a directory within the limits. The directory itself must be trustworthy
 * (else PolicyDirError: nothing is read). Files past the directory's byte budget are refused by name.
 */
export async function readPolicyDir(dir: string, limits: ReadLimits = DEFAULT_LIMITS): Promise<DirRead> {
  await checkPolicyDir(dir);
  const out: DirRead = { files: [], issues: [], vanished: [] };
  let used = 0;
  for (const name of await listNames(dir, limits.files)) {
    const file = join(dir, name);
    const budget = Math.max(0, limits.dirBytes - used);
    const r = await readPolicyFile(file, Math.min(limits.fileBytes, budget));
    if ('text' in r) {
      used += Buffer.byteLength(r.text);
      out.files.push({ file, text: r.text, mtimeMs: r.mtimeMs });
    } else if ('vanished' in r) out.vanished.push(file);
    else if ('tooBig' in r)
      out.issues.push({
        file,
        level: 'error',
        message:
          r.tooBig > limits.fileBytes
            ? tooBigMessage(r.tooBig, limits.fileBytes)
            : `not read: with its ${bytes(r.tooBig)} the policy files of ${dir} would exceed ${bytes(limits.dirBytes)} in all (the limit per directory)`,
      });
    else out.issues.push(r.issue);
  }
  return out;
}

export const tooBigMessage = (size: number, max: number): string =>
  `${bytes(size)}: larger than the ${bytes(max)} limit per policy file; not read`;
