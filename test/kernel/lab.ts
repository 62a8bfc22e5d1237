// lab.ts — `useLab`: the node lab that several kernel tests share (an Env, a policy directory, a bridge
// with pods plugged into it, cgroups, the agents started on them) and one teardown for all of it, also
// when a test or the set-up failed.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import { Env, type Proc } from './harness.js';

/** What differs between the labs of the kernel tests that share one (see `useLab`). */
export interface LabSpec<P extends string = string, C extends string = string> {
  /** The policy directory's name prefix, under the system's tmpdir. */
  policies?: string;
  /** The node netns (`node`) and its bridge br0 with these addresses; none without. */
  bridge?: string[];
  /** Network namespaces plugged into br0: short name → the addresses (with prefix) of their eth0. */
  pods?: Record<P, string[]>;
  /** Cgroups made under the test root, by their path below it (`pod-a`, `s1/app`). */
  cgroups?: C[];
  /** Run at teardown once the lab's agents are stopped, also when a test or the set-up failed: undoes what the set-up made beyond the lab. */
  beforeTeardown?: () => Promise<void> | void;
}

/**
 * One node's lab: an Env, a policy directory, a node netns with a bridge and pods plugged into it, cgroups
 * under the test root, the agents started on them, and one teardown for all of it.
 */
export class Lab<P extends string = string, C extends string = string> {
  readonly env: Env;
  /** The policy directory agents started by `agent()` read. */
  readonly dir: string;
  /** The node netns's name (with the bridge br0); '' when the lab has no bridge. */
  node = '';
  /** Netns names by their short name in `LabSpec.pods`. */
  readonly ns = {} as Record<P, string>;
  /** Cgroup paths (from the cgroup2 mount) by their path below the test root. */
  readonly cg = {} as Record<C, string>;
  private readonly agents: Proc[] = [];

  constructor(private readonly spec: LabSpec<P, C> = {}) {
    this.dir = mkdtempSync(join(tmpdir(), spec.policies ?? 'meshredir-test-policies-'));
    this.env = new Env();
  }

  /** Makes the netns, veths and cgroups of the spec (after the constructor, so that teardown sees a half-made lab). */
  build(): this {
    const { bridge, pods = {} as Record<P, string[]>, cgroups = [] } = this.spec;
    if (bridge) {
      this.node = this.env.netns('node');
      this.env.bridge(this.node, 'br0', bridge);
    }
    for (const [name, addrs] of Object.entries(pods) as [P, string[]][]) {
      if (!this.node) throw new Error(`pod ${name}: a lab's pods need its bridge`);
      this.ns[name] = this.env.netns(name);
      this.env.plug(this.node, 'br0', this.ns[name], addrs);
    }
    for (const c of cgroups) this.cg[c] = this.env.cgroup(c);
    return this;
  }

  /** Writes `<dir>/<name>.yaml`; rewriting one makes a running agent reconcile. */
  policy(name: string, text: string): void {
    writeFileSync(join(this.dir, `${name}.yaml`), text);
  }

  /** Starts an agent on the policy directory (`Env.agent`), stopped at teardown. */
  async agent(extra: string[] = []): Promise<Proc> {
    const p = await this.env.agent(this.dir, extra);
    this.agents.push(p);
    return p;
  }

  /** `meshredir agent` arguments on this lab's policies, cgroup root, bpffs and state dir, eBPF mode. */
  agentArgs(extra: string[] = []): string[] {
    return this.env.agentArgs(this.dir, extra);
  }

  /** Stops the agents, tears the env down and removes the policy directory; what could not be removed. */
  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    for (const a of this.agents) await this.env.stop(a);
    try {
      await this.spec.beforeTeardown?.();
    } catch (e) {
      problems.push(`before teardown: ${(e as Error).message}`);
    }
    problems.push(...(await this.env.teardown()));
    rmSync(this.dir, { recursive: true, force: true });
    return problems;
  }
}

/**
 * Builds a `Lab` before the describe's tests and runs `setup` on it (servers, proxies, policies, agents);
 * after them, also when a test or the set-up failed, tears it down and fails if anything was left.
 */
export function useLab<P extends string, C extends string>(
  spec: LabSpec<P, C>,
  setup: (lab: Lab<P, C>) => Promise<void>,
): void {
  let lab: Lab<P, C> | undefined;
  beforeAll(async () => {
    lab = new Lab(spec);
    await setup(lab.build());
  });
  afterAll(async () => {
    const problems = lab ? await lab.teardown() : ['the lab was never made'];
    expect(problems).toEqual([]);
  });
}
