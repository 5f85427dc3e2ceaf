// What every pam command shares (as yarn berry's BaseCommand): the context, `--debug`, and the one
// error boundary — usage errors exit 2, user errors print one line with their documented code,
// anything else is a bug: stack trace and exit 70.

import { Command, Option } from 'clipanion';
import { failureKinds, failureOf } from '../machines/errors.js';
import type { PamContext } from './context.js';

/** The CLI as a command sees it (`this.cli`): definitions, process, run. */
export type CliHandle = Command<PamContext>['cli'];

export abstract class PamCommand extends Command<PamContext> {
  debug = Option.Boolean('--debug', false, { description: 'print stack traces for errors' });

  override async validateAndExecute(): Promise<number> {
    try {
      return await super.validateAndExecute();
    } catch (error) {
      return reportError(error, this.context, this.debug);
    }
  }
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

/**
 * Run a command line through a command's CLI handle (`this.cli`), as `pam shell` does for each line.
 * clipanion's run() would print a parse error on stdout with exit 1; ours is a usage error: stderr, 2.
 */
export async function runLine(cli: CliHandle, argv: readonly string[], context: PamContext): Promise<number> {
  try {
    cli.process([...argv], context);
  } catch (error) {
    context.stderr.write(cli.error(error as Error));
    return failureKinds.usage.exitCode;
  }
  return cli.run([...argv], context);
}
