// agent-health.test.ts — the agent's liveness and its lock, with a stand-in mode (no kernel): every
// completed pass moves the heartbeat (agent.lock's mtime, Agent.health()) while a quiet pass leaves
// agent.json alone; a second agent on the same installation is refused naming the first one's pid.
import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, type AgentOptions } from '../../src/agent/agent.js';
import { agentSummary } from '../../src/agent/state.js';
import type { ApplyResult, DesiredState, Mode, Plan } from '../../src/modes/mode.js';
import type { Logger } from '../../src/util/log.js';

/** A loopback port that was free a moment ago. */
async function freePort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

const quiet = { debug() {}, info() {}, warn() {}, error() {} } as unknown as Logger;

/** A mode that applies nothing and says every policy is applied. */
function standIn(): Mode & { applied: number } {
  const m = {
    name: 'iptables' as const,
    applied: 0,
    installed: () => false,
    plan: ({ policies }: DesiredState): Plan => ({
      mode: 'iptables',
      input: policies,
      gates: { guard: [], pass: [] },
      policies: policies.map((p) => ({ policy: p.name, file: p.file, state: 'applied' as const })),
      notes: [],
      render: () => ({ messages: [], ok: true }),
    }),
    apply(plan: Plan): ApplyResult {
      m.applied++;
      return { writes: 0, deletes: 0, loaded: false, policies: plan.policies, notes: [] };
    },
    status: () => ({ mode: 'iptables' as const, json: {}, text: [] }),
    verify: async () => [],
    cleanup: () => ({ mode: 'iptables' as const, removed: [], kept: [], failed: [], notes: [], json: {} }),
    metrics: () => [],
    readiness: () => ({ ready: true, reason: 'a stand-in' }),
  };
  return m;
}

describe('agent liveness and lock', () => {
  const dirs: string[] = [];
  const agents: Agent[] = [];
  afterEach(async () => {
    for (const a of agents.splice(0)) {
      await a.stop();
      await a.close();
    }
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  const setup = () => {
    const base = mkdtempSync(join(tmpdir(), 'meshredir-unit-agent-'));
    dirs.push(base);
    const policies = join(base, 'policies');
    const stateDir = join(base, 'state');
    mkdirSync(policies, { mode: 0o700 });
    writeFileSync(
      join(policies, 'a.yaml'),
      'apiVersion: meshredir/v1\nkind: RedirectPolicy\nmetadata: { name: a }\nspec: { cgroup: /a, proxy: { outbound: "127.0.0.1:15001", bypass: { uids: [1337] } } }\n',
    );
    const make = (o: Partial<AgentOptions> = {}) =>
      new Agent(
        {
          policies,
          interval: 1,
          cleanupOnExit: false,
          stateDir,
          decision: { requested: 'iptables', chosen: 'iptables', reason: 'test' },
          paths: { cgroupRoot: '/', bpffs: join(base, 'bpffs'), iptablesState: join(stateDir, 'iptables.json') },
          ...o,
        },
        standIn(),
        quiet,
      );
    return { base, policies, stateDir, make };
  };

  it('every completed pass moves the heartbeat; a quiet pass does not rewrite agent.json', async () => {
    const { stateDir, make } = setup();
    const a = make();
    agents.push(a);
    expect(a.health().lastPass).toBeNull();
    await a.start();
    const first = a.health().lastPass!;
    expect(first).toMatchObject({ ok: true, reason: 'start', applied: 1, notApplied: 0, errors: 0 });
    const stateMtime = statSync(join(stateDir, 'agent.json')).mtimeMs;
    const beat = () => statSync(join(stateDir, 'agent.lock')).mtimeMs;
    expect(Math.abs(beat() - first.at.getTime())).toBeLessThan(50);
    await new Promise((r) => setTimeout(r, 2300)); // two quiet periodic passes
    const later = a.health().lastPass!;
    expect(later.reason).toBe('interval');
    expect(later.at.getTime()).toBeGreaterThan(first.at.getTime() + 900);
    expect(Math.abs(beat() - later.at.getTime())).toBeLessThan(50);
    expect(statSync(join(stateDir, 'agent.json')).mtimeMs).toBe(stateMtime);
    const s = agentSummary(stateDir)!;
    expect(s).toMatchObject({ running: process.pid, interval: 1, lastPass: { ok: true, stale: false } });
    expect('lastPass' in s && s.lastPass.agoSeconds).toBeLessThanOrEqual(1);
  });

  it('a second agent on the same installation is refused, naming the pid that holds it', async () => {
    const { stateDir, make } = setup();
    const a = make();
    agents.push(a);
    await a.start();
    await expect(make().start()).rejects.toThrow(
      `another meshredir agent (pid ${process.pid}) holds the lock on ${join(stateDir, 'agent.lock')} (the agent state in ${stateDir}): one agent per installation; stop it first`,
    );
    await a.stop();
    agents.splice(0);
    const b = make(); // released on stop: the next one starts
    agents.push(b);
    await b.start();
    expect(agentSummary(stateDir)).toMatchObject({ running: process.pid });
  });

  it('a second agent on the same installation and metrics address is told which pid holds the installation', async () => {
    const { stateDir, make } = setup();
    const port = await freePort();
    const a = make({ metricsAddress: { host: '127.0.0.1', port } });
    agents.push(a);
    await a.start();
    await expect(make({ metricsAddress: { host: '127.0.0.1', port } }).start()).rejects.toThrow(
      `another meshredir agent (pid ${process.pid}) holds the lock on ${join(stateDir, 'agent.lock')}`,
    );
  });

  it('a busy metrics address fails the start and leaves nothing behind (no state directory, no lock file)', async () => {
    const { base, make } = setup();
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
    const port = (busy.address() as AddressInfo).port;
    const stateDir = join(base, 'fresh', 'state');
    try {
      await expect(
        make({
          stateDir,
          metricsAddress: { host: '127.0.0.1', port },
          paths: { cgroupRoot: '/', bpffs: join(base, 'bpffs'), iptablesState: join(base, 'ipt', 'iptables.json') },
        }).start(),
      ).rejects.toThrow(`metrics address 127.0.0.1:${port}: EADDRINUSE`);
      expect(existsSync(join(base, 'fresh'))).toBe(false);
      expect(existsSync(join(base, 'ipt'))).toBe(false);
      expect(readdirSync(base).sort()).toEqual(['policies']);
    } finally {
      busy.close();
    }
  });
});
