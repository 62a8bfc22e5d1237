// kube-apiserver-standin.ts — a small local stand-in for the Kubernetes API server (Node http), serving
// list and watch of pods and namespaces the way the real one does, and driven by the test: objects
// change when the test says so, and the test injects the faults a real API server shows (410 Gone on a
// watch from a compacted resourceVersion and on an expired list continuation, a connection dropped
// abruptly, a watch that hangs silently, the server going away). Shapes follow the API reference:
// lists are {kind: PodList, apiVersion: v1, metadata: {resourceVersion, continue?}, items} whose items
// carry no kind/apiVersion; a watch is a chunked stream of {"type", "object"} lines whose objects do;
// BOOKMARK objects carry only kind, apiVersion and metadata.resourceVersion; errors are Status objects.
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { Socket } from 'node:net';
import { randomUUID } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type Kind = 'pods' | 'namespaces';
type Obj = Record<string, unknown> & {
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; [k: string]: unknown };
  spec?: Record<string, unknown>;
};
interface Event {
  rv: number;
  kind: Kind;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  object: Obj;
}
interface Watcher {
  kind: Kind;
  res: ServerResponse;
  socket: Socket;
  bookmarks: boolean;
  nodeName?: string;
  frozen: boolean;
}

const TYPE: Record<Kind, { kind: string; list: string }> = {
  pods: { kind: 'Pod', list: 'PodList' },
  namespaces: { kind: 'Namespace', list: 'NamespaceList' },
};

export interface RequestRecord {
  method: string;
  path: string;
  query: Record<string, string>;
}

function status(code: number, reason: string, message: string) {
  return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code };
}

export class KubeApiStandin {
  private server?: Server;
  private sockets = new Set<Socket>();
  private rv = 100;
  /** Events at or below this resourceVersion are gone from history (etcd compaction). */
  private compactedRv = 0;
  private objects: Record<Kind, Map<string, Obj>> = { pods: new Map(), namespaces: new Map() };
  private history: Event[] = [];
  private watchers = new Set<Watcher>();
  private listFaults: number[] = [];
  private watchHang: 'none' | 'after-headers' | 'no-response' = 'none';
  readonly requests: RequestRecord[] = [];
  /** Watches answered with 410 Gone (an ERROR event), for the tests to see that path was taken. */
  expiredWatches = 0;
  port = 0;
  /** Like a real API server: HTTPS with its own CA (client-node refuses plain HTTP) and a bearer token. */
  readonly token = 'standin-token';
  private tls?: { key: Buffer; cert: Buffer };

  /** A self-signed certificate for 127.0.0.1, made once per stand-in with openssl. */
  private certificate(): { key: Buffer; cert: Buffer } {
    if (this.tls) return this.tls;
    const dir = mkdtempSync(join(tmpdir(), 'kube-standin-tls-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=kube-apiserver-standin',
        '-addext',
        'subjectAltName=IP:127.0.0.1',
        '-keyout',
        join(dir, 'key.pem'),
        '-out',
        join(dir, 'cert.pem'),
      ],
      { stdio: 'pipe' },
    );
    this.tls = { key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) };
    rmSync(dir, { recursive: true, force: true });
    return this.tls;
  }

  async start(port = 0): Promise<number> {
    this.server = createServer(this.certificate(), (req, res) => this.handle(req, res));
    // The TCP sockets under TLS: destroying one is an abrupt close, as a dropped connection is.
    this.server.on('connection', (s: Socket) => {
      this.sockets.add(s);
      s.on('close', () => this.sockets.delete(s));
    });
    await new Promise<void>((r) => this.server!.listen(port, '127.0.0.1', r));
    this.port = (this.server.address() as { port: number }).port;
    return this.port;
  }

  /** The server goes away: open connections are cut, new ones refused (until start(port) again). */
  async stop(): Promise<void> {
    this.dropConnections();
    await new Promise<void>((r) => (this.server ? this.server.close(() => r()) : r()));
    this.server = undefined;
  }

  /** Files as a pod's service account has them (ca.crt, token, namespace) under `root`. */
  writeServiceAccount(root: string): void {
    mkdirSync(root, { recursive: true });
    writeFileSync(join(root, 'ca.crt'), this.certificate().cert);
    writeFileSync(join(root, 'token'), this.token);
    writeFileSync(join(root, 'namespace'), 'meshredir-system');
  }

  /** A kubeconfig for client-node, pointing at this server (its CA, a bearer token). */
  writeKubeconfig(file: string): string {
    const cfg = {
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [
        {
          name: 'standin',
          cluster: {
            server: `https://127.0.0.1:${this.port}`,
            'certificate-authority-data': this.certificate().cert.toString('base64'),
          },
        },
      ],
      users: [{ name: 'meshredir', user: { token: this.token } }],
      contexts: [{ name: 'standin', context: { cluster: 'standin', user: 'meshredir' } }],
      'current-context': 'standin',
    };
    writeFileSync(file, JSON.stringify(cfg));
    return file;
  }

  // --- objects, changed by the test -------------------------------------------------------------

  private key(o: Obj): string {
    return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  }

  private commit(kind: Kind, type: Event['type'], o: Obj): Obj {
    const object = structuredClone(o);
    object.metadata.resourceVersion = String(++this.rv);
    if (type === 'DELETED') this.objects[kind].delete(this.key(object));
    else this.objects[kind].set(this.key(object), object);
    const e = { rv: this.rv, kind, type, object };
    this.history.push(e);
    for (const w of this.watchers) if (w.kind === kind) this.send(w, e);
    return object;
  }

  addNamespace(name: string, labels: Record<string, string> = {}, annotations: Record<string, string> = {}): Obj {
    return this.commit('namespaces', 'ADDED', {
      metadata: { name, uid: randomUUID(), creationTimestamp: new Date().toISOString(), labels, annotations },
      spec: { finalizers: ['kubernetes'] },
      status: { phase: 'Active' },
    });
  }

  /** A pod as the API server shows it once scheduled and running (status.qosClass set, as at creation). */
  addPod(p: {
    name: string;
    namespace: string;
    nodeName: string;
    uid?: string;
    qosClass?: 'Guaranteed' | 'Burstable' | 'BestEffort';
    hostNetwork?: boolean;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    phase?: string;
  }): Obj {
    return this.commit('pods', 'ADDED', {
      metadata: {
        name: p.name,
        namespace: p.namespace,
        uid: p.uid ?? randomUUID(),
        creationTimestamp: new Date().toISOString(),
        labels: p.labels ?? {},
        annotations: p.annotations ?? {},
      },
      spec: {
        nodeName: p.nodeName,
        ...(p.hostNetwork ? { hostNetwork: true } : {}),
        containers: [{ name: 'app', image: 'registry.example/app:1', resources: {} }],
        restartPolicy: 'Always',
      },
      status: { phase: p.phase ?? 'Running', qosClass: p.qosClass ?? 'Burstable' },
    });
  }

  update(kind: Kind, key: string, change: (o: Obj) => void): Obj {
    const cur = this.objects[kind].get(key);
    if (!cur) throw new Error(`no ${kind} ${key}`);
    const next = structuredClone(cur);
    change(next);
    return this.commit(kind, 'MODIFIED', next);
  }

  delete(kind: Kind, key: string): void {
    const cur = this.objects[kind].get(key);
    if (!cur) throw new Error(`no ${kind} ${key}`);
    this.commit(kind, 'DELETED', cur);
  }

  get(kind: Kind, key: string): Obj | undefined {
    return this.objects[kind].get(key);
  }

  // --- faults, injected by the test ----------------------------------------------------------------

  /** History up to now is compacted: a watch from an older resourceVersion gets 410 Gone. */
  compact(): void {
    this.compactedRv = this.rv;
    this.history = [];
  }

  /** The next list requests fail with these HTTP codes (410: an expired continuation, as on a real server). */
  failLists(...codes: number[]): void {
    this.listFaults.push(...codes);
  }

  /** Cuts every open connection abruptly (no end of stream). */
  dropConnections(): void {
    for (const s of this.sockets) s.destroy();
  }

  /** From now on, new watches hang: answered with headers and then nothing, or not answered at all. */
  hangWatches(how: 'none' | 'after-headers' | 'no-response'): void {
    this.watchHang = how;
  }

  /** Open watches stop receiving anything (the connection stays open, silent). */
  freezeWatches(): void {
    for (const w of this.watchers) w.frozen = true;
  }

  /** The current resourceVersion. */
  resourceVersion(): number {
    return this.rv;
  }

  /** A BOOKMARK to every open watch that asked for them. */
  bookmark(): void {
    for (const w of this.watchers)
      if (w.bookmarks && !w.frozen)
        this.write(w, {
          type: 'BOOKMARK',
          object: { kind: TYPE[w.kind].kind, apiVersion: 'v1', metadata: { resourceVersion: String(this.rv) } },
        });
  }

  openWatches(kind?: Kind): number {
    return [...this.watchers].filter((w) => !kind || w.kind === kind).length;
  }

  // --- HTTP ------------------------------------------------------------------------------------------

  private json(res: ServerResponse, code: number, body: unknown): void {
    const text = JSON.stringify(body);
    res.writeHead(code, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://standin');
    const query = Object.fromEntries(url.searchParams);
    this.requests.push({ method: req.method ?? '', path: url.pathname, query });
    if (req.headers.authorization !== `Bearer ${this.token}`)
      return this.json(res, 401, status(401, 'Unauthorized', 'Unauthorized'));
    const kind: Kind | undefined =
      url.pathname === '/api/v1/pods' ? 'pods' : url.pathname === '/api/v1/namespaces' ? 'namespaces' : undefined;
    if (!kind) return this.json(res, 404, status(404, 'NotFound', 'the server could not find the requested resource'));
    if (req.method !== 'GET')
      return this.json(
        res,
        405,
        status(405, 'MethodNotAllowed', `the server does not allow this method on the requested resource`),
      );
    let nodeName: string | undefined;
    if (query.fieldSelector) {
      const m = /^spec\.nodeName=([^,]*)$/.exec(query.fieldSelector);
      if (kind !== 'pods' || !m)
        return this.json(
          res,
          400,
          status(400, 'BadRequest', `field label not supported: ${query.fieldSelector.split('=')[0]}`),
        );
      nodeName = m[1];
    }
    if (query.watch === 'true' || query.watch === '1') return this.watch(req, res, kind, query, nodeName);
    return this.list(res, kind, query, nodeName);
  }

  private matches(o: Obj, nodeName?: string): boolean {
    return nodeName === undefined || o.spec?.nodeName === nodeName;
  }

  private list(res: ServerResponse, kind: Kind, q: Record<string, string>, nodeName?: string): void {
    const fault = this.listFaults.shift();
    if (fault === 410)
      return this.json(
        res,
        410,
        status(
          410,
          'Expired',
          'The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.',
        ),
      );
    if (fault)
      return this.json(
        res,
        fault,
        status(fault, 'InternalError', 'an error on the server has prevented the request from succeeding'),
      );
    let start = '';
    let rv = this.rv;
    if (q.continue) {
      const token = JSON.parse(Buffer.from(q.continue, 'base64').toString()) as { rv: number; start: string };
      if (token.rv <= this.compactedRv)
        return this.json(
          res,
          410,
          status(
            410,
            'Expired',
            `The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.`,
          ),
        );
      start = token.start;
      rv = token.rv;
    }
    const all = [...this.objects[kind].entries()]
      .filter(([k, o]) => k > start && this.matches(o, nodeName))
      .sort(([a], [b]) => (a < b ? -1 : 1));
    const limit = q.limit ? Number(q.limit) : Infinity;
    const page = all.slice(0, limit);
    const more = all.length > page.length;
    const items = page.map(([, o]) => o);
    const metadata: Record<string, unknown> = { resourceVersion: String(rv) };
    if (more) {
      metadata.continue = Buffer.from(JSON.stringify({ v: 'meta.k8s.io/v1', rv, start: page.at(-1)![0] })).toString(
        'base64',
      );
      metadata.remainingItemCount = all.length - page.length;
    }
    this.json(res, 200, { kind: TYPE[kind].list, apiVersion: 'v1', metadata, items });
  }

  private write(w: Watcher, e: unknown): void {
    if (!w.res.writableEnded) w.res.write(`${JSON.stringify(e)}\n`);
  }

  private send(w: Watcher, e: Event): void {
    if (w.frozen || !this.matches(e.object, w.nodeName)) return;
    this.write(w, { type: e.type, object: { kind: TYPE[e.kind].kind, apiVersion: 'v1', ...e.object } });
  }

  private watch(
    req: IncomingMessage,
    res: ServerResponse,
    kind: Kind,
    q: Record<string, string>,
    nodeName?: string,
  ): void {
    if (this.watchHang === 'no-response') return; // the request is never answered
    res.writeHead(200, { 'Content-Type': 'application/json', 'Transfer-Encoding': 'chunked' });
    res.flushHeaders();
    const w: Watcher = {
      kind,
      res,
      socket: req.socket,
      bookmarks: q.allowWatchBookmarks === 'true',
      frozen: this.watchHang === 'after-headers',
      ...(nodeName !== undefined ? { nodeName } : {}),
    };
    const rv = q.resourceVersion ? Number(q.resourceVersion) : 0;
    if (rv !== 0 && rv < this.compactedRv) {
      // As the watch cache answers a watch from a compacted resourceVersion: a 200 stream with one
      // ERROR event (a Status with code 410), then the end of the stream.
      this.expiredWatches++;
      this.write(w, {
        type: 'ERROR',
        object: status(410, 'Expired', `too old resource version: ${rv} (${this.compactedRv})`),
      });
      res.end();
      return;
    }
    this.watchers.add(w);
    const done = () => this.watchers.delete(w);
    res.on('close', done);
    if (rv === 0) {
      // Unset or "0": the current state as synthetic ADDED events, then changes.
      for (const o of this.objects[kind].values()) this.send(w, { rv: this.rv, kind, type: 'ADDED', object: o });
    } else for (const e of this.history) if (e.kind === kind && e.rv > rv) this.send(w, e);
    const timeout = Number(q.timeoutSeconds ?? 0);
    if (timeout > 0) {
      const t = setTimeout(() => res.end(), timeout * 1000);
      res.on('close', () => clearTimeout(t));
    }
  }
}
