// files.ts — the policy directory as a source: every *.yaml/*.yml in it, read within the limits and only
// if trustworthy (policy/read.ts), watched (the directory, and its parent for the directory itself being
// replaced or re-created), with the content last applied from each file kept, so an invalid, oversized or
// conflicting edit never takes down a policy that works.
import { watch, statSync, type FSWatcher } from 'node:fs';
import { basename, dirname, resolve } from 'node:path';
import { parsePolicyText, checkSet, formatError, perNode, type FileResult } from '../policy/load.js';
import { readPolicyDir } from '../policy/read.js';
import { parseIsolated } from '../policy/isolated.js';
import type { Policy } from '../policy/schema.js';
import type { PolicyOutcome } from '../modes/mode.js';
import type { Logger } from '../util/log.js';
import { faultAt } from '../util/faults.js';
import type { PolicySource, SourceError } from './source.js';

/** See FileSource's settleMs. */
export const SETTLE_MS = 500;
/** A file still changing after this long is reported (its previous content stays meanwhile). */
const UNSETTLED_REPORT_MS = 10_000;

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
  /** The last parse of each file, by its text: an unchanged file is not parsed again on every pass. */
  private parsed = new Map<string, FileResult & { text: string }>();
  /** Files found changing while being read, by how many passes in a row (bounds the immediate re-reads). */
  private unsettled = new Map<string, number>();
  /** Files whose new content is too fresh to trust yet, since when (see read()). */
  private settling = new Map<string, number>();
  private settleTimer?: NodeJS.Timeout;
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
    /** An edited file younger than this (mtime) waits until it is this old: a file written in place (not
     * renamed into the directory) may be read half-written — empty, or a list cut short yet valid. */
    private readonly settleMs = SETTLE_MS,
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
    // A directory that vanished (unmounted, renamed), or that others may write to, is not "no policies":
    // readPolicyDir throws, and nothing is changed.
    const dir = await readPolicyDir(this.dir);
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
    for (const i of dir.issues) {
      if (i.level === 'warn') {
        errors.push({ source: this.name, object: i.file, message: `${i.file}: ${i.message}`, level: 'warn' });
        continue;
      }
      err(i.file, `${i.file}: ${i.message}`);
      if (this.applied.has(i.file)) keep(i.file, '');
    }
    // Gone or replaced between the listing and the open (a rename, an editor's save): what was applied from
    // it stays for this pass, and the directory is read again at once.
    const unsettled = new Map<string, number>();
    for (const f of dir.vanished) {
      const prev = this.applied.get(f);
      if (prev) {
        results.set(f, { file: f, policies: prev.policies, errors: [] });
        texts.set(f, prev.text);
        kept.add(f);
      }
      const times = (this.unsettled.get(f) ?? 0) + 1;
      unsettled.set(f, times);
      if (times <= 3) {
        this.log.debug({ event: 'vanished', file: f }, `${f} changed while being read; reading the directory again`);
        this.change('a policy file changed while being read');
      } else {
        // Something keeps writing it (a log named *.yaml?): no more immediate re-reads, the interval goes on.
        err(f, `${f}: keeps changing while being read (${times} passes in a row); not applied until it settles`);
      }
    }
    this.unsettled = unsettled;
    // New content that is too fresh waits (what was applied from the file stays): it may be half-written.
    const now = Date.now();
    const settling = new Map<string, number>();
    const ready = dir.files.filter(({ file: f, text, mtimeMs }) => {
      const age = now - mtimeMs;
      // Only edits wait: a file this source has not read before is taken at once (the agent's start).
      const seen = this.parsed.get(f);
      if (!seen || seen.text === text || this.settleMs <= 0 || age >= this.settleMs || age < -1000) return true;
      const since = this.settling.get(f) ?? now;
      settling.set(f, since);
      const prev = this.applied.get(f);
      if (prev) {
        results.set(f, { file: f, policies: prev.policies, errors: [] });
        texts.set(f, prev.text);
        kept.add(f);
      }
      if (now - since > UNSETTLED_REPORT_MS)
        err(
          f,
          `${f}: keeps changing (for ${Math.round((now - since) / 1000)} s); its new content is not applied until it settles`,
        );
      else this.log.debug({ event: 'settling', file: f }, `${f} changed ${age} ms ago; read again once it settles`);
      return false;
    });
    this.settling = settling;
    if (settling.size) {
      clearTimeout(this.settleTimer);
      this.settleTimer = setTimeout(() => this.change('a policy file settled'), this.settleMs);
    }
    // Parsed in a worker with a bounded heap (isolated.ts); a file whose text did not change is not again.
    const changed = ready.filter(({ file: f, text }) => this.parsed.get(f)?.text !== text);
    const fresh = new Map((await parseIsolated(changed)).map((r) => [r.file, r]));
    const parsed = new Map<string, FileResult & { text: string }>();
    for (const [f, r] of this.parsed) if (settling.has(f)) parsed.set(f, r); // still the last parse of it
    for (const { file: f, text } of ready) {
      const r = fresh.get(f) ?? this.parsed.get(f)!;
      parsed.set(f, r);
      if (r.errors.length) {
        for (const e of r.errors) err(f, formatError(e));
        if (this.applied.has(f)) keep(f, '');
      } else {
        results.set(f, r);
        texts.set(f, text);
      }
    }
    this.parsed = parsed;
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
        // At most LIMITS.policies: what is applied goes first, so newcomers cannot push it out.
        const capped = perNode(set.policies, new Set(incumbents.map((p) => p.name)));
        for (const e of capped.errors) err(e.file, formatError(e));
        this.staged = new Map(
          [...results.keys()].map((f) => [
            f,
            { text: texts.get(f)!, policies: capped.policies.filter((p) => p.file === f) },
          ]),
        );
        return { policies: capped.policies, errors };
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
    clearTimeout(this.settleTimer);
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
