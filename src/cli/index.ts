// index.ts — builds the one commander program from the command files, importing only the command a run
// names: each command file pulls in what its options and action need (zod, the modes), which `--version`
// or another command never uses.
import { Command } from 'commander';

/** The commands, in the order help lists them; each module exports its commander `Command`. */
const COMMANDS: Record<string, () => Promise<Command>> = {
  probe: async () => (await import('./commands/probe.js')).probeCommand,
  agent: async () => (await import('./commands/agent.js')).agentCommand,
  status: async () => (await import('./commands/status.js')).statusCommand,
  verify: async () => (await import('./commands/verify.js')).verifyCommand,
  trace: async () => (await import('./commands/trace.js')).traceCommand,
  policy: async () => (await import('./commands/policy.js')).policyCommand,
  'iptables-rules': async () => (await import('./commands/iptables-rules.js')).iptablesRulesCommand,
  cleanup: async () => (await import('./commands/cleanup.js')).cleanupCommand,
  bench: async () => (await import('./commands/bench.js')).benchCommand,
};

/**
 * Which commands a run of `argv` (process.argv: node, script, args) needs: the one it names; none for
 * `--version`; every one for help, no command, or a name that is not a command (commander lists them or
 * suggests the nearest). The program's own options take no value, so the first argument not starting
 * with "-" is the command.
 */
export function commandsFor(argv: readonly string[]): string[] {
  const args = argv.slice(2);
  const named = args.find((a) => !a.startsWith('-'));
  if (named !== undefined && named !== 'help' && Object.hasOwn(COMMANDS, named)) return [named];
  if (named === undefined && args.some((a) => a === '--version' || a === '-V')) return [];
  return Object.keys(COMMANDS);
}

/** The program with the commands `argv` needs (every command without `argv`). */
export async function buildProgram(argv?: readonly string[]): Promise<Command> {
  const names = argv ? commandsFor(argv) : Object.keys(COMMANDS);
  const commands = await Promise.all(names.map((n) => COMMANDS[n]!()));
  const program = new Command('meshredir')
    .description(
      'transparent traffic redirection for service-mesh proxies: eBPF first, iptables when the kernel cannot',
    )
    .version('0.1.0')
    .option('--debug', 'print the cause chain and libbpf log of errors')
    .showHelpAfterError();
  for (const c of commands) program.addCommand(c);
  // Usage errors of a command (a missing or unknown option) reach main.ts, which exits 2, like the
  // program's own: commander gives exitOverride to subcommands made with .command(), not addCommand().
  const override = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(override);
  };
  override(program);
  return program;
}
