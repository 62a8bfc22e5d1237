// cgroup-watch.test.ts — the cgroupfs watch on an ordinary directory tree (inotify reports mkdir and
// rmdir alike): a parent that does not exist yet is waited for on its nearest ancestor, a parent removed
// and made again is watched again.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CgroupWatch, type CgroupChange } from '../../src/util/cgroup-watch.js';

async function until(what: string, f: () => boolean, ms = 3000): Promise<void> {
  const end = Date.now() + ms;
  while (!f()) {
    if (Date.now() > end) throw new Error(`${what}: not after ${ms} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('CgroupWatch', () => {
  let mount: string;
  let seen: CgroupChange[];
  let w: CgroupWatch;
  beforeEach(() => {
    mount = mkdtempSync(join(tmpdir(), 'meshredir-cgwatch-'));
    seen = [];
    w = new CgroupWatch(mount, (c) => seen.push(c));
  });
  afterEach(() => {
    w.close();
    rmSync(mount, { recursive: true, force: true });
  });

  it('reports children made and removed below an existing parent', async () => {
    mkdirSync(join(mount, 'kubepods/burstable'), { recursive: true });
    w.set(['/kubepods/burstable']);
    expect(w.watching()).toEqual([join(mount, 'kubepods/burstable')]);
    mkdirSync(join(mount, 'kubepods/burstable/podX'));
    await until('mkdir', () => seen.some((c) => c.name === 'podX'));
    expect(seen.filter((c) => c.event !== 'armed')[0]).toEqual({
      parent: '/kubepods/burstable',
      event: 'rename',
      name: 'podX',
    });
    rmdirSync(join(mount, 'kubepods/burstable/podX'));
    await until('rmdir', () => seen.length >= 2);
  });

  it('waits for a missing parent on its nearest ancestor, then watches the parent itself', async () => {
    w.set(['/kubepods.slice/kubepods-burstable.slice']);
    expect(w.watching()).toEqual([mount]);
    mkdirSync(join(mount, 'kubepods.slice'));
    await until('ancestor rearmed', () => w.watching()[0] === join(mount, 'kubepods.slice'));
    mkdirSync(join(mount, 'kubepods.slice/kubepods-burstable.slice'));
    await until('parent armed', () => w.watching()[0] === join(mount, 'kubepods.slice/kubepods-burstable.slice'));
    seen.length = 0;
    mkdirSync(join(mount, 'kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podY.slice'));
    await until('pod seen', () => seen.some((c) => c.name === 'kubepods-burstable-podY.slice'));
    expect(seen.at(-1)!.parent).toBe('/kubepods.slice/kubepods-burstable.slice');
  });

  it('says when it starts watching a directory (what happened in it before is for the caller to look at)', async () => {
    mkdirSync(join(mount, 'kubepods'));
    w.set(['/kubepods/burstable']);
    expect(seen).toEqual([{ parent: '/kubepods', event: 'armed', name: null }]);
    // Made and filled before the watch moves down to it: the 'armed' event is the caller's cue to look.
    mkdirSync(join(mount, 'kubepods/burstable'));
    mkdirSync(join(mount, 'kubepods/burstable/podQ'));
    await until('armed below', () => seen.some((c) => c.event === 'armed' && c.parent === '/kubepods/burstable'));
    w.set(['/kubepods/burstable']); // nothing new to watch: nothing said
    expect(seen.filter((c) => c.event === 'armed')).toHaveLength(2);
  });

  it('a parent removed and made again is watched again', async () => {
    mkdirSync(join(mount, 'kubepods'));
    w.set(['/kubepods']);
    rmdirSync(join(mount, 'kubepods'));
    await until('fell back to the ancestor', () => w.watching()[0] === mount);
    mkdirSync(join(mount, 'kubepods'));
    await until('armed again', () => w.watching()[0] === join(mount, 'kubepods'));
    seen.length = 0;
    mkdirSync(join(mount, 'kubepods/podZ'));
    await until('child of the new directory seen', () => seen.some((c) => c.name === 'podZ'));
  });
});
