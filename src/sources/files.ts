// files.ts — the policy directory as a source: every *.yaml/*.yml in it, watched (the directory, and its
// parent for the directory itself being replaced or re-created), with the content last applied from each
// file kept, so an invalid or conflicting edit never takes down a policy that works.
import { watch, existsSync, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import {
  loadPolicyFile,
  parsePolicyText,
  policyFiles,
  checkSet,
  formatError,
  type FileResult,
} from '../policy/load.js';
import type { Policy } from '../policy/schema.js';
import type { PolicyOutcome } from '../modes/mode.js';
import type { Logger } from '../util/log.js';
import { faultAt } from '../util/faults.js';
import type { PolicySource, SourceError } from './source.js';

/** What was applied from one policy file: its text and the policies of it that are in force. */
export interface Applied {
  text: string;
  policies: Policy[];
}

/** The form agent.json keeps it in. */
export type Remembered = Record<string, { text: string; policies: string[] }>;

export class FileSource implements PolicySource {
  readonly name = 'files';
  readonly dir: string;
  /** Per file, the content in force. */
  private applied = new Map<string, Applied>();
  /** What the last read would put in force, until the mode says what it did with it. */
  private staged?: Map<string, Applied>;
  private changed: (reason: string) => void = () => {};
  private watcher?: FSWatcher;
  private parentWatcher?: FSWatcher;
  private watchedIno?: bigint;
  private rearm?: NodeJS.Timeout;
  private debounce?: NodeJS.Timeout;
  private stopped = false;

  constructor(
    dir: string,
    private readonly log: Logger,
  ) {
    this.dir = resolve(dir);
  }

  /** The content applied before this run (from agent.json); what no longer validates is forgotten. */
  remember(prev: Remembered): void {
    for (const [file, a] of Object.entries(prev)) {
      const r = parsePolicyText(a.text, file);
      if (r.errors.length) {
        this.log.warn(
          { event: 'state_dropped', file },
          `${file}: the remembered applied content no longer validates; forgotten (${r.errors.map(formatError).join('; ')})`,
        );
        continue;
      }
      this.applied.set(file, { text: a.text, policies: r.policies.filter((p) => a.policies.includes(p.name)) });
    }
  }

  /** The content in force per file, for agent.json. */
  remembered(): Remembered {
    return Object.fromEntries(
      [...this.applied].map(([f, a]) => [f, { text: a.text, policies: a.policies.map((p) => p.name) }]),
    );
  }

  /**
   * The directory as desired state. A file that is invalid, or whose policies lose a conflict, is replaced
   * by the content applied from it before (if any); conflicts are settled in favour of what is applied
   * (checkSet), so bad input never takes down a working policy.
   */
  async read(): Promise<{ policies: Policy[]; errors: SourceError[] }> {
    // A directory that vanished (unmounted, renamed) is not "no policies": change nothing.
    if (!existsSync(this.dir)) throw new Error(`policy directory ${this.dir} does not exist; nothing was changed`);
    const results = new Map<string, FileResult>();
    const texts = new Map<string, string>();
    const kept = new Set<string>();
    const errors: SourceError[] = [];
    const err = (object: string, message: string) => errors.push({ source: this.name, object, message });
    const keep = (f: string, why: string) => {
      const prev = this.applied.get(f)!;
      results.set(f, { file: f, policies: prev.policies, errors: [] });
      texts.set(f, prev.text);
      kept.add(f);
      const names = prev.policies.map((p) => p.name).join(', ') || 'empty';
      err(f, `${f}: not applied${why}; keeping its previously applied content (${names})`);
    };
    for (const f of await policyFiles(this.dir)) {
      const r = await loadPolicyFile(f);
      if (r.errors.length) {
        for (const e of r.errors) err(f, formatError(e));
        if (this.applied.has(f)) keep(f, '');
      } else {
        results.set(f, r);
        texts.set(f, r.text ?? '');
      }
    }
    const incumbents = [...this.applied.values()].flatMap((a) => a.policies);
    const seen = new Set<string>();
    for (;;) {
      const set = checkSet([...results.values()], incumbents);
      for (const e of set.errors) {
        const m = formatError(e);
        if (!seen.has(m)) err(e.file, m);
        seen.add(m);
      }
      const back = [...new Set(set.rejected.map((p) => p.file))].filter((f) => !kept.has(f) && this.applied.has(f));
      if (back.length === 0) {
        this.staged = new Map(
          [...results.keys()].map((f) => [
            f,
            { text: texts.get(f)!, policies: set.policies.filter((p) => p.file === f) },
          ]),
        );
        return { policies: set.policies, errors };
      }
      for (const f of back) keep(f, ' (it conflicts with an applied policy)');
    }
  }

  /** The last read is in force, but for the policies the mode rejected. */
  settled(outcomes: PolicyOutcome[]): void {
    if (!this.staged) return;
    const rejected = new Set(outcomes.filter((o) => o.state === 'rejected').map((o) => `${o.file}\0${o.policy}`));
    this.applied = new Map(
      [...this.staged].map(([f, a]) => [
        f,
        { ...a, policies: a.policies.filter((p) => !rejected.has(`${p.file}\0${p.name}`)) },
      ]),
    );
    this.staged = undefined;
  }

  async start(changed: (reason: string) => void): Promise<void> {
    this.changed = changed;
    this.arm();
    if (faultAt('watch-error')) {
      setTimeout(
        () => this.watcher?.emit('error', new Error('injected watch error (MESHREDIR_FAULT=watch-error)')),
        300,
      );
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.debounce);
    this.disarm();
  }

  /**
   * Watches the directory, and its parent for the directory's own name: fs.watch follows the inode, so a
   * directory that is replaced (moved away and another moved in, a symlink swapped) would otherwise go
   * unwatched. A directory that is missing is polled for until it appears.
   */
  private arm(): void {
    this.disarm();
    if (this.stopped) return;
    const dir = this.dir;
    try {
      this.parentWatcher = watch(dirname(dir), (_event, name) => {
        if (name === basename(dir)) this.change('policy directory replaced');
      });
      this.parentWatcher.on('error', (e) => this.watchFailed(e));
    } catch (e) {
      this.log.warn(
        { event: 'watch_error', dir: dirname(dir) },
        `cannot watch ${dirname(dir)} for ${dir} being replaced: ${(e as Error).message}`,
      );
    }
    try {
      this.watchedIno = statSync(dir, { bigint: true }).ino;
      this.watcher = watch(dir, () => this.change('policy change'));
      this.watcher.on('error', (e) => this.watchFailed(e));
    } catch (e) {
      this.watchedIno = undefined;
      this.log.warn(
        { event: 'watch_error', dir },
        `cannot watch ${dir}: ${(e as Error).message}; looking again every second`,
      );
      this.rearm = setTimeout(() => {
        this.arm();
        if (this.watcher) this.change('policy directory appeared');
      }, 1000);
    }
  }

  private disarm(): void {
    clearTimeout(this.rearm);
    this.watcher?.close();
    this.parentWatcher?.close();
    this.watcher = undefined;
    this.parentWatcher = undefined;
  }

  /** A watcher failed (its directory went away, the kernel ran out of watches, …): say so, watch again. */
  private watchFailed(e: Error): void {
    this.log.error({ event: 'watch_error', err: e }, `watching ${this.dir} failed: ${e.message}; watching it again`);
    this.disarm();
    this.rearm = setTimeout(() => {
      this.arm();
      if (this.watcher) this.log.info({ event: 'watch', dir: this.dir }, `watching ${this.dir} again`);
      this.change('policy directory watched again');
    }, 1000);
  }

  /** Re-arms the watch when the directory is no longer the one watched (replaced, or re-created). */
  poll(): void {
    if (this.stopped) return;
    let ino: bigint | undefined;
    try {
      ino = statSync(this.dir, { bigint: true }).ino;
    } catch {
      ino = undefined;
    }
    if (ino !== undefined && (!this.watcher || ino !== this.watchedIno)) {
      this.log.info({ event: 'watch', dir: this.dir }, `${this.dir} was replaced; watching the new directory`);
      this.arm();
    }
  }

  /** A change in or of the directory: reconcile once things settle (debounced). */
  private change(reason: string): void {
    if (this.stopped) return;
    clearTimeout(this.debounce);
    this.debounce = setTimeout(() => {
      this.poll();
      this.changed(reason);
    }, 200);
  }
}
