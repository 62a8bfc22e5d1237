// cli-commands.test.ts — the CLI imports only the command a run names (src/cli/index.ts): which commands
// each argv needs, and that the program built for one still parses and lists like the full one.
import { describe, expect, it } from 'vitest';
import { buildProgram, commandsFor } from '../../src/cli/index.js';

const argv = (...a: string[]) => ['node', 'meshredir', ...a];

describe('commandsFor', () => {
  it('the named command alone, after program options', () => {
    expect(commandsFor(argv('status', '--json'))).toEqual(['status']);
    expect(commandsFor(argv('--debug', 'agent', '--policies', '/p'))).toEqual(['agent']);
    expect(commandsFor(argv('iptables-rules', 'x.yaml'))).toEqual(['iptables-rules']);
  });
  it('none for --version, every one for help, nothing, or an unknown name', () => {
    expect(commandsFor(argv('--version'))).toEqual([]);
    expect(commandsFor(argv('-V'))).toEqual([]);
    const all = commandsFor(argv());
    expect(all).toContain('status');
    expect(all.length).toBeGreaterThan(5);
    expect(commandsFor(argv('--help'))).toEqual(all);
    expect(commandsFor(argv('help', 'status'))).toEqual(all);
    expect(commandsFor(argv('statu'))).toEqual(all);
  });
});

describe('buildProgram', () => {
  it('holds the named command with the same options as the full program', async () => {
    const full = await buildProgram();
    const one = await buildProgram(argv('status'));
    expect(one.commands.map((c) => c.name())).toEqual(['status']);
    const longs = (p: typeof full) => p.commands.find((c) => c.name() === 'status')!.options.map((o) => o.long);
    expect(longs(one)).toEqual(longs(full));
    expect(full.commands.map((c) => c.name())).toEqual(commandsFor(argv()));
  });
});
