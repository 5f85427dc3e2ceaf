// The CLI: every command registered once, and the process entry (clipanion parses, then runs the
// command; errors are reported by the command itself, see PamCommand).

import { Builtins, Cli, type Command } from 'clipanion';
import { commandClasses } from './commands/index.js';
import type { PamContext } from './context.js';
import { bindNegativeValues, parseError } from './pam-command.js';
import { packageVersion } from './version.js';

export function createCli(options: { colors?: boolean } = {}): Cli<PamContext> {
  const cli = new Cli<PamContext>({
    binaryLabel: 'pam-tunnel',
    binaryName: 'pam',
    binaryVersion: packageVersion(),
    enableCapture: false,
    enableColors: options.colors ?? false,
  });
  for (const commandClass of commandClasses) cli.register(commandClass);
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  return cli;
}

export async function runCli(argv: readonly string[], context: PamContext): Promise<number> {
  const cli = createCli({ colors: context.colorDepth > 1 });
  const input = bindNegativeValues(argv);
  let command: Command<PamContext>;
  try {
    command = cli.process(input, context);
  } catch (error) {
    return parseError(error, context, (unknown) => cli.error(unknown, { colored: false }));
  }
  return cli.run(command, context);
}
