// options.ts — the options several commands share, declared once (flag, help, default, validation), and
// the one way every command validates its options: a zod schema, with messages that name the flag.
import { Option, type Command } from 'commander';
import { z } from 'zod';
import { DEFAULT_BPFFS, DEFAULT_IPTABLES_STATE, DEFAULT_LOCK_WAIT, DEFAULT_STATE_DIR } from '../modes/defaults.js';
import type { AttachConfig, ModeConfig } from '../modes/mode.js';
import { UserError } from './output.js';

const absolute = z.string().regex(/^\//, 'must be an absolute path');
const seconds = (min: number, max: number) => z.coerce.number().int().min(min).max(max);

/** The shared options: each command adds the ones it takes with `shared(cmd, [...])`. */
const SHARED = {
  bpffs: {
    option: () => new Option('--bpffs <dir>', 'bpffs directory of the pins').default(DEFAULT_BPFFS),
    schema: absolute,
  },
  stateDir: {
    option: () =>
      new Option('--state-dir <dir>', "the agent's state directory (agent.json)").default(DEFAULT_STATE_DIR),
    schema: absolute,
  },
  iptablesState: {
    option: () =>
      new Option(
        '--iptables-state <file>',
        'iptables: where the per-netns backend and applied rules are remembered',
      ).default(DEFAULT_IPTABLES_STATE),
    schema: absolute,
  },
  lockWait: {
    option: () =>
      new Option('--lock-wait <seconds>', 'iptables: how long to wait for the xtables lock').default(
        String(DEFAULT_LOCK_WAIT),
      ),
    schema: seconds(0, 600),
  },
  json: {
    option: () => new Option('--json', 'print one JSON object'),
    schema: z.boolean().optional(),
  },
} as const;
type Shared = typeof SHARED;
export type SharedName = keyof Shared;

/** Adds shared options to a command. */
export function shared(cmd: Command, names: SharedName[]): Command {
  for (const n of names) cmd.addOption(SHARED[n].option());
  return cmd;
}

/** The schema of the shared options named, to extend with a command's own. */
export function sharedSchema<N extends SharedName>(names: N[]): z.ZodObject<{ [K in N]: Shared[K]['schema'] }> {
  return z.object(Object.fromEntries(names.map((n) => [n, SHARED[n].schema])) as { [K in N]: Shared[K]['schema'] });
}

/** Validates a command's options; a bad one is a usage error (exit 2) naming the flag. */
export function parseOptions<S extends z.ZodType>(schema: S, raw: Record<string, unknown>): z.output<S> {
  const r = schema.safeParse(raw);
  if (r.success) return r.data;
  const flag = (k: PropertyKey | undefined) => `--${String(k).replace(/[A-Z]/g, (m) => `-${m.toLowerCase()}`)}`;
  throw new UserError(r.error.issues.map((i) => `${flag(i.path[0])}: ${i.message}`).join('\n'), 2);
}

/** The mode configuration from the shared options (and the agent's own, where given). */
export function modeConfig(
  o: { bpffs?: string; iptablesState?: string; lockWait?: number; iptablesBackend?: 'nft' | 'legacy' },
  attach?: AttachConfig,
): ModeConfig {
  return {
    bpffs: o.bpffs ?? DEFAULT_BPFFS,
    iptablesState: o.iptablesState ?? DEFAULT_IPTABLES_STATE,
    lockWait: o.lockWait ?? DEFAULT_LOCK_WAIT,
    ...(o.iptablesBackend ? { iptablesBackend: o.iptablesBackend } : {}),
    ...(attach ? { attach } : {}),
  };
}
