// Cli wiring and the one error boundary: usage errors exit 2, user errors print one line with the
// documented code, anything else is a bug: stack trace and exit 70.

import { Builtins, Cli, type Command } from 'clipanion';
import { failureKinds, failureOf, TunnelError } from '../machines/errors.js';
import type { PamContext } from './context.js';
import { commandClasses } from './commands/index.js';
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

export async function runCli(argv: readonly string[], context: PamContext, cli: Cli<PamContext> = createCli({ colors: context.colorDepth > 1 })): Promise<number> {
  let command: Command<PamContext>;
  argv = bindNegativeValues(argv);
  try {
    command = cli.process([...argv], context);
  } catch (error) {
    // Our own parse-time refusals (a repeated flag) are one line, like every other usage error.
    if (error instanceof TunnelError) return reportError(error, context, false);
    context.stderr.write(cli.error(error, { colored: false }));
    return failureKinds.usage.exitCode;
  }
  // Let clipanion's own run() handle help and builtins (it prints usage to stdout, exit 0).
  if (command.help || argv.length === 0 || isBuiltin(command)) return cli.run(command, context);

  command.context = context;
  command.cli = {
    binaryLabel: cli.binaryLabel,
    binaryName: cli.binaryName,
    binaryVersion: cli.binaryVersion,
    enableCapture: cli.enableCapture,
    enableColors: false,
    definitions: () => cli.definitions(),
    error: (error, opts) => cli.error(error, opts),
    format: (colored) => cli.format(colored),
    process: (input, sub) => cli.process(input, { ...context, ...sub }),
    run: (input, sub) => runCli(input, { ...context, ...sub }, cli),
    usage: (target, opts) => cli.usage(target, opts),
  };
  try {
    return (await command.validateAndExecute()) ?? 0;
  } catch (error) {
    return reportError(error, context, argv.includes('--debug'));
  }
}

/**
 * `--port -1`: clipanion takes `-1` for an option and answers "Not enough arguments" with the whole
 * usage. Bound to its flag (`--port=-1`), the value reaches validation, which says what is wrong with it.
 */
export function bindNegativeValues(argv: readonly string[]): string[] {
  const bound: string[] = [];
  for (let i = 0; i < argv.length; i += 1) {
    const arg = argv[i]!;
    if (arg === '--') return [...bound, ...argv.slice(i)];
    const next = argv[i + 1];
    if (/^--[a-z][a-z-]*$/.test(arg) && next !== undefined && /^-\d/.test(next)) {
      bound.push(`${arg}=${next}`);
      i += 1;
    } else {
      bound.push(arg);
    }
  }
  return bound;
}

function isBuiltin(command: Command<PamContext>): boolean {
  return command instanceof Builtins.HelpCommand || command instanceof Builtins.VersionCommand;
}

export function reportError(error: unknown, context: PamContext, debug: boolean): number {
  if (error instanceof Error && error.name === 'UsageError') {
    context.stderr.write(`pam: ${error.message}\n`);
    return failureKinds.usage.exitCode;
  }
  const outcome = failureOf(error);
  if (outcome.kind === 'internal' || debug) {
    const stack = error instanceof Error && error.stack ? error.stack : String(error);
    context.stderr.write(`pam: internal error: ${stack}\n`);
  } else {
    context.stderr.write(`pam: ${outcome.reason}\n`);
  }
  return outcome.exitCode;
}
