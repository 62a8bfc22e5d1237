// prometheus.ts — a real Prometheus server (Debian's `prometheus`) for kernel tests: its own temp config
// and data dir, a free loopback port, a short scrape interval; queried over its HTTP API; stopped by pid.
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Env, Proc } from './harness.js';

/** Polls an async condition (a failing check counts as false) until it holds. */
export async function until(cond: () => Promise<boolean>, what: string, p?: Proc, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < end) {
    try {
      if (await cond()) return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (p && (p.child.exitCode !== null || p.child.signalCode !== null))
      throw new Error(
        `${what}: process exited (${p.child.exitCode ?? p.child.signalCode}): ${p.err.trim().slice(-2000)}`,
      );
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what}: not after ${timeoutMs} ms${last ? ` (last error: ${last})` : ''}`);
}

/** A loopback port nothing listens on now. */
export async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

export interface Prometheus {
  url: string;
  proc: Proc;
  /** An instant query: the value of each series, by its labels as JSON. */
  query(q: string): Promise<{ metric: Record<string, string>; value: number }[]>;
  /** Waits until a scrape that started after this call has been stored for every target. */
  nextScrape(): Promise<void>;
  stop(): Promise<void>;
}

/** Starts Prometheus scraping `targets` (host:port) as job "meshredir" every second. */
export async function startPrometheus(env: Env, targets: string[]): Promise<Prometheus> {
  const dir = mkdtempSync(join(tmpdir(), 'meshredir-test-prometheus-'));
  const cfg = join(dir, 'prometheus.yml');
  writeFileSync(
    cfg,
    JSON.stringify({
      global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
      scrape_configs: [{ job_name: 'meshredir', static_configs: [{ targets }] }],
    }),
  );
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = env.spawn(null, null, 'prometheus', [
    `--config.file=${cfg}`,
    `--storage.tsdb.path=${join(dir, 'data')}`,
    `--web.listen-address=127.0.0.1:${port}`,
    '--log.level=warn',
  ]);
  const get = async (path: string) => {
    const r = await fetch(`${url}${path}`);
    return { status: r.status, body: await r.text() };
  };
  await until(async () => (await get('/-/ready')).status === 200, 'prometheus ready', proc, 30_000);
  const query = async (q: string) => {
    const r = await get(`/api/v1/query?query=${encodeURIComponent(q)}`);
    const j = JSON.parse(r.body) as {
      status: string;
      error?: string;
      data?: { result: { metric: Record<string, string>; value: [number, string] }[] };
    };
    if (j.status !== 'success') throw new Error(`query ${q}: ${j.error ?? r.body}`);
    return j.data!.result.map((x) => ({ metric: x.metric, value: Number(x.value[1]) }));
  };
  return {
    url,
    proc,
    query,
    async nextScrape() {
      const since = Date.now() / 1000;
      // timestamp(up) is when the last scrape of each target started.
      await until(
        async () => {
          const r = await query('min(timestamp(up))');
          return r.length > 0 && r.every((x) => x.value > since);
        },
        'a prometheus scrape',
        proc,
        20_000,
      );
    },
    async stop() {
      await env.stop(proc);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
