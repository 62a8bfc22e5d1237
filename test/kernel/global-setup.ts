// global-setup.ts — after the whole kernel suite: nothing meshredir or its tests made may remain.
import { leftovers, cannotRun } from './hoststate.js';

export function setup(): void {}

export function teardown(): void {
  if (cannotRun()) return;
  const left = leftovers();
  if (left.length) throw new Error(`the kernel suite left things on the host:\n  ${left.join('\n  ')}`);
}
