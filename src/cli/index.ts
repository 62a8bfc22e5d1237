// index.ts — builds the one commander program from the command files.
import { Command } from 'commander';
import { probeCommand } from './commands/probe.js';
import { agentCommand } from './commands/agent.js';
import { cleanupCommand } from './commands/cleanup.js';
import { policyCommand } from './commands/policy.js';
import { statusCommand } from './commands/status.js';
import { verifyCommand } from './commands/verify.js';
import { iptablesRulesCommand } from './commands/iptables-rules.js';
import { benchCommand } from './commands/bench.js';
import { traceCommand } from './commands/trace.js';

export function buildProgram(): Command {
  const program = new Command('meshredir')
    .description(
      'transparent traffic redirection for service-mesh proxies: eBPF first, iptables when the kernel cannot',
    )
    .version('0.1.0')
    .option('--debug', 'print the cause chain and libbpf log of errors')
    .showHelpAfterError()
    .addCommand(probeCommand)
    .addCommand(agentCommand)
    .addCommand(statusCommand)
    .addCommand(verifyCommand)
    .addCommand(traceCommand)
    .addCommand(policyCommand)
    .addCommand(iptablesRulesCommand)
    .addCommand(cleanupCommand)
    .addCommand(benchCommand);
  // Usage errors of a command (a missing or unknown option) reach main.ts, which exits 2, like the
  // program's own: commander gives exitOverride to subcommands made with .command(), not addCommand().
  const override = (c: Command): void => {
    c.exitOverride();
    c.commands.forEach(override);
  };
  override(program);
  return program;
}
