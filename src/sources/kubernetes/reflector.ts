// reflector.ts — one list+watch of a Kubernetes collection kept in a cache (client-node's ListWatch),
// made robust the way client-go's reflector is: bookmarks asked for, a server-side watch timeout, a
// stall timer (no event nor bookmark for too long: the connection is dropped and the watch resumed),
// backoff with jitter on every failure and on watches that end at once, pages of a bounded size, a
// fresh list after 410 Gone (which ListWatch itself does) or after a list that failed.
import { KubeConfig, ListWatch, Watch, type KubernetesObject } from '@kubernetes/client-node';
import type { Agent } from 'node:http';
import type { RequestInit } from 'node-fetch';

export interface ReflectorOptions {
  /** Seconds the server is asked to keep a watch open (client-go: 5-10 min, randomised). */
  timeoutSeconds: number;
  /** No event and no bookmark for this long: the watch is taken as stalled and resumed. */
  stallMs: number;
  /** Backoff after a failure (and after a watch that ended within minLifeMs): doubles up to maxMs. */
  backoff: { initialMs: number; maxMs: number };
  /** A watch that lived shorter than this counts as a failure for the backoff. */
  minLifeMs: number;
  /** Items per list page. */
  pageSize: number;
}

export const DEFAULT_REFLECTOR: ReflectorOptions = {
  timeoutSeconds: 300,
  stallMs: 330_000,
  backoff: { initialMs: 250, maxMs: 30_000 },
  minLifeMs: 1000,
  pageSize: 500,
};

/** A list page as the API returns it (client-node's V1PodList / V1NamespaceList). */
export interface Page<T> {
  metadata?: { resourceVersion?: string; _continue?: string };
  items: T[];
}

export interface ReflectorEvents {
  /** An object was added, changed or deleted (also for deletions a relist found). */
  change(what: 'add' | 'update' | 'delete', obj: KubernetesObject): void;
  /** A list or watch failed; it is retried after the backoff. */
  failure(err: Error, what: string, retryInMs: number): void;
  /** A watch was taken as stalled (no event nor bookmark within stallMs). */
  stalled(): void;
  /** A complete list has been received (the first one resolves Reflector.synced). */
  listed(items: number, resourceVersion: string): void;
}

/** A KubeConfig that remembers the connection agent of the last watch request, so a stalled watch
 * can be cut even before the server answered its headers (client-node's Watch gives its abort
 * controller only after the response started). */
class TrackingKubeConfig extends KubeConfig {
  lastAgent?: Agent;
  override async applyToFetchOptions(opts: Parameters<KubeConfig['applyToFetchOptions']>[0]): Promise<RequestInit> {
    const init = await super.applyToFetchOptions(opts);
    this.lastAgent = init.agent as Agent | undefined;
    return init;
  }
}

function describe(err: unknown): string {
  const e = err as { code?: number; statusCode?: number; message?: string; body?: unknown };
  const code = e?.statusCode ?? e?.code;
  const body = typeof e?.body === 'string' ? e.body : e?.body ? JSON.stringify(e.body) : '';
  const msg = /message"?:\s*"([^"]+)/.exec(body)?.[1];
  return `${code ? `HTTP ${code}: ` : ''}${msg ?? e?.message ?? String(err)}`;
}

export class Reflector<T extends KubernetesObject> {
  readonly cache: ListWatch<T>;
  /** Resolves once the first complete list has been received. */
  readonly synced: Promise<void>;
  private markSynced!: () => void;
  private kc: TrackingKubeConfig;
  private delay = 0;
  private stopped = true;
  private listedJustNow = false;
  private watchErrorCounted = false;
  private lastEnd = 0;
  private restartTimer?: NodeJS.Timeout;
  private pacing = new Set<{ timer: NodeJS.Timeout; resolve: () => void }>();

  constructor(
    kubeconfig: KubeConfig,
    readonly path: string,
    list: (page: { limit: number; continue?: string }) => Promise<Page<T>>,
    private readonly events: ReflectorEvents,
    private readonly o: ReflectorOptions = DEFAULT_REFLECTOR,
    fieldSelector?: string,
  ) {
    this.kc = new TrackingKubeConfig();
    // The parsed objects themselves (in-cluster config keeps its CA and token files this way).
    this.kc.loadFromOptions({
      clusters: kubeconfig.clusters,
      users: kubeconfig.users,
      contexts: kubeconfig.contexts,
      currentContext: kubeconfig.currentContext,
    });
    this.synced = new Promise((r) => (this.markSynced = r));
    const self = this;
    class PacedWatch extends Watch {
      override async watch(
        path: string,
        query: Record<string, string | number | boolean | undefined>,
        callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
        done: (err: unknown) => void,
      ): Promise<AbortController> {
        return self.watch(path, query, callback, done, (p, q, c, d) => super.watch(p, q, c, d));
      }
    }
    this.cache = new ListWatch<T>(
      path,
      new PacedWatch(this.kc),
      () => this.listAll(list),
      false,
      undefined,
      fieldSelector,
    );
    for (const what of ['add', 'update', 'delete'] as const) this.cache.on(what, (o) => this.events.change(what, o));
    this.cache.on('error', (err) => this.failed(err, 'list or watch'));
  }

  async start(): Promise<void> {
    this.stopped = false;
    await this.cache.start();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    for (const p of this.pacing) {
      clearTimeout(p.timer);
      p.resolve();
    }
    await this.cache.stop();
    this.cut();
  }

  /** Waits the backoff before a request when the last one failed or ended at once. */
  private async pace(): Promise<void> {
    if (this.delay === 0) return;
    const jittered = this.delay * (0.8 + Math.random() * 0.4);
    await new Promise<void>((resolve) => {
      const p = { timer: setTimeout(() => (this.pacing.delete(p), resolve()), jittered), resolve };
      this.pacing.add(p);
    });
  }

  private grow(): number {
    this.delay = this.delay === 0 ? this.o.backoff.initialMs : Math.min(this.o.backoff.maxMs, this.delay * 2);
    return this.delay;
  }

  private async listAll(list: (page: { limit: number; continue?: string }) => Promise<Page<T>>): Promise<Page<T>> {
    await this.pace();
    if (this.stopped) throw new Error('stopped');
    const items: T[] = [];
    let cont: string | undefined;
    let rv = '';
    do {
      // A continue token that expired (410) throws: the whole list starts again after the backoff.
      const page = await list({ limit: this.o.pageSize, ...(cont ? { continue: cont } : {}) });
      items.push(...page.items);
      rv = page.metadata?.resourceVersion ?? rv;
      cont = page.metadata?._continue || undefined;
    } while (cont);
    this.listedJustNow = true;
    this.events.listed(items.length, rv);
    return { metadata: { resourceVersion: rv }, items };
  }

  private async watch(
    path: string,
    query: Record<string, string | number | boolean | undefined>,
    callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
    done: (err: unknown) => void,
    inner: (
      p: string,
      q: Record<string, string | number | boolean | undefined>,
      c: (phase: string, apiObj: unknown, watchObj?: unknown) => void,
      d: (err: unknown) => void,
    ) => Promise<AbortController>,
  ): Promise<AbortController> {
    if (this.listedJustNow) {
      // ListWatch has put the list's items in its cache and now starts the watch (at once: the list
      // was paced already).
      this.listedJustNow = false;
      this.markSynced();
    } else await this.pace();
    const started = Date.now();
    let stalled = false;
    let timer: NodeJS.Timeout | undefined;
    let agent: Agent | undefined;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        stalled = true;
        this.events.stalled();
        this.cut(agent ?? this.kc.lastAgent);
      }, this.o.stallMs);
    };
    arm();
    const ended = (err: unknown) => {
      clearTimeout(timer);
      this.lastEnd = Date.now();
      const short = this.lastEnd - started < this.o.minLifeMs;
      // Only a watch that lived (and ended cleanly, e.g. at its server-side timeout) resets the backoff:
      // a server that answers every watch with an error, a 410 or a close must not be hammered.
      if (err || stalled || short) this.grow();
      else this.delay = 0;
      if (err && !stalled) {
        this.watchErrorCounted = true;
        done(err); // ListWatch: 410 → relist (paced); anything else → its error callbacks → failed()
        return;
      }
      done(null); // resume from the last resourceVersion (ListWatch)
    };
    const controller = await inner(
      path,
      { ...query, allowWatchBookmarks: true, timeoutSeconds: this.o.timeoutSeconds },
      (phase, obj, raw) => {
        arm();
        callback(phase, obj, raw);
      },
      ended,
    );
    agent = this.kc.lastAgent;
    return controller;
  }

  /** Destroys the sockets of a watch's connection (all watch connections when none is named). */
  private cut(agent?: Agent): void {
    const a = agent ?? this.kc.lastAgent;
    if (!a) return;
    for (const list of [...Object.values(a.sockets), ...Object.values(a.freeSockets)])
      for (const s of list ?? []) s.destroy();
  }

  private failed(err: unknown, what: string): void {
    if (this.stopped) return;
    // A watch's error has grown the backoff already (in its end handler); a list's has not.
    const wait = this.watchErrorCounted ? this.delay : this.grow();
    this.watchErrorCounted = false;
    this.events.failure(new Error(describe(err)), what, wait);
    // ListWatch stops on an error; start it again (the pacing above makes it wait the backoff).
    if (this.restartTimer) return;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (!this.stopped) void this.cache.start();
    }, 0);
  }
}
