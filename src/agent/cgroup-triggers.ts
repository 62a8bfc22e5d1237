// cgroup-triggers.ts — reconciles the moment a policy's cgroup appears or goes, not at the next interval:
// inotify on the nearest existing ancestor of every cgroup the policy files name (cgroupfs reports mkdir
// and rmdir), and on the cgroup of a policy that waits for its first process (cgroup.events changes when
// it becomes populated: the iptables mode takes the pod's netns from its processes). Pods' own cgroups are
// the Kubernetes source's (it watches the kubepods parents).
import { existsSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Policy } from '../policy/schema.js';
import type { PolicyOutcome } from '../modes/mode.js';
import { CgroupWatch, type CgroupChange } from '../util/cgroup-watch.js';
import { cgroupDir, within } from '../util/host.js';
import type { Logger } from '../util/log.js';

const parentOf = (p: string) => (p === '/' ? '/' : dirname(p));
const join = (dir: string, name: string) => (dir === '/' ? `/${name}` : `${dir}/${name}`);

export class CgroupTriggers {
  private readonly watch: CgroupWatch;
  /** Cgroups (policy paths) whose mkdir or rmdir matters: the policy and bypass cgroups of policy files. */
  private named = new Set<string>();
  /** Cgroups of policies waiting for a process: their cgroup.events matters. */
  private waiting = new Set<string>();

  constructor(
    private readonly mount: string,
    private readonly trigger: (reason: string) => void,
    log: Logger,
  ) {
    this.watch = new CgroupWatch(
      mount,
      (c) => this.changed(c),
      (e, dir) =>
        log.warn(
          { event: 'cgroup_watch_failed', dir },
          `watching ${dir} for cgroups failed: ${e.message}; watching it again in a second (the periodic reconcile covers meanwhile)`,
        ),
    );
  }

  /** Watches for what the last reconcile's policies need (called after each reconcile). */
  update(policies: Policy[], outcomes: PolicyOutcome[]): void {
    const named = new Set<string>();
    for (const p of policies) {
      if (p.origin === 'kubernetes') continue;
      named.add(p.cgroup);
      for (const b of p.bypass.cgroups) named.add(b);
    }
    const cgroupOf = new Map(policies.map((p) => [p.name, p.cgroup]));
    const waiting = new Set<string>();
    for (const o of outcomes) {
      const cg = cgroupOf.get(o.policy);
      if (o.state === 'waiting' && cg && existsSync(cgroupDir(cg, this.mount))) waiting.add(cg);
    }
    this.named = named;
    this.waiting = waiting;
    this.watch.set([...[...named].map(parentOf), ...waiting]);
  }

  /** What the periodic pass does: watch again what was removed and made again meanwhile. */
  rearm(): void {
    this.watch.rearm();
  }

  /** The directories watched now (for tests and logs). */
  watching(): string[] {
    return this.watch.watching();
  }

  close(): void {
    this.watch.close();
  }

  private changed(c: CgroupChange): void {
    if (c.event === 'armed') {
      // Watched from now on: a cgroup made before the watch was in place (since the last reconcile read
      // the tree) would go unseen until the interval; one more reconcile looks.
      this.trigger(`watching ${c.parent}`);
      return;
    }
    if (c.event === 'change') {
      if (c.name === 'cgroup.events' && this.waiting.has(c.parent))
        this.trigger(`cgroup ${c.parent} changed (populated or emptied)`);
      return;
    }
    // The watched directory itself removed: its whole subtree went (ids of removed cgroups must leave).
    if (!existsSync(cgroupDir(c.parent, this.mount))) {
      if ([...this.named].some((n) => within(n, c.parent))) this.trigger(`cgroup ${c.parent} removed`);
      return;
    }
    if (!c.name) {
      this.trigger(`cgroup event under ${c.parent}`);
      return;
    }
    const x = join(c.parent, c.name);
    // Only the cgroups policies name, or their ancestors (a missing parent made), are of interest: the
    // watched ancestor may be the cgroup root, where every other cgroup of the machine comes and goes.
    if ([...this.named].some((n) => within(n, x)))
      this.trigger(`cgroup ${x} ${existsSync(cgroupDir(x, this.mount)) ? 'made' : 'removed'}`);
  }
}
