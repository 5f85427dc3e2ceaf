// What every pam command shares (as yarn berry's BaseCommand): the context, `--debug`, and the one
// error boundary — usage errors exit 2, user errors print one line with their documented code,
// anything else is a bug: stack trace and exit 70.

import { Command, Option } from 'clipanion';
import { failureKinds, failureOf, TunnelError } from '../machines/errors.js';
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
  const input = bindNegativeValues(argv);
  try {
    cli.process(input, context);
  } catch (error) {
    return parseError(error, context, (unknown) => cli.error(unknown as Error));
  }
  return cli.run(input, context);
}

/** A line clipanion could not parse: our own parse-time refusals (a repeated flag) are one line; clipanion's get its usage. */
export function parseError(error: unknown, context: PamContext, format: (error: unknown) => string): number {
  if (error instanceof TunnelError) return reportError(error, context, false);
  // An optional positional (`tunnel start [target]`) makes clipanion try the line twice, with and
  // without it, and answer "Command not found; did you mean" with one command listed twice. It is
  // one command: say what its first reading found wrong, as clipanion does for a single candidate.
  const candidates = (error as { name?: unknown; candidates?: Array<{ usage: string; reason: string | null }> }).candidates;
  const first = candidates?.[0];
  if ((error as { name?: unknown }).name === 'UnknownSyntaxError' && first?.reason && candidates!.every((c) => c.usage === first.usage)) {
    context.stderr.write(`Unknown Syntax Error: ${first.reason}\n\n$ ${first.usage}\n`);
    return failureKinds.usage.exitCode;
  }
  context.stderr.write(format(error));
  return failureKinds.usage.exitCode;
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
