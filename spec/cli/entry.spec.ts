// The entry and the base command: a parse error is a usage error on stderr (exit 2, where clipanion
// alone says 1), for one-shot commands and for lines run through a command's `this.cli` (pam shell).

import { PassThrough } from 'node:stream';
import { Cli, Command } from 'clipanion';
import t from 'tap';
import { TunnelError } from '../../machines/errors.js';
import type { PamContext } from '../../cli/context.js';
import { runCli } from '../../cli/main.js';
import { PamCommand, runLine } from '../../cli/pam-command.js';

function capture(): { context: PamContext; out: () => string; err: () => string } {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = '';
  let err = '';
  stdout.on('data', (chunk) => (out += chunk));
  stderr.on('data', (chunk) => (err += chunk));
  const context: PamContext = { stdin: process.stdin, stdout, stderr, env: {}, interactive: false, colorDepth: 1 };
  return { context, out: () => out, err: () => err };
}

t.test('a parse error exits 2 and goes to stderr', async (t) => {
  const { context, out, err } = capture();
  t.equal(await runCli(['tunnel', 'list', 'extra'], context), 2);
  t.match(err(), /Extraneous positional argument/);
  t.equal(out(), '');
});

t.test('an unknown flag after an optional target is named, not "command not found" with the command twice', async (t) => {
  const { context, err } = capture();
  t.equal(await runCli(['tunnel', 'start', 'echo', '--no-such-flag'], context), 2);
  t.match(err(), /^Unknown Syntax Error: Unsupported option name \("--no-such-flag"\)/);
  t.notMatch(err(), /did you mean/);
});

t.test('a TunnelError from a command prints one line with its code; --debug adds the stack', async (t) => {
  const plain = capture();
  t.equal(await runCli(['tunnel', 'history', '--limit', '0'], plain.context), 2);
  t.equal(plain.err(), "pam: --limit '0' must be a whole number from 1 to 10000\n");
  const debug = capture();
  t.equal(await runCli(['tunnel', 'machine', '--format', 'svg', '--debug'], debug.context), 2);
  t.match(debug.err(), /TunnelError: --format 'svg' is not known[^\n]*\n\s+at /);
});

t.test('help and version still go through clipanion (stdout, 0)', async (t) => {
  const help = capture();
  t.equal(await runCli(['tunnel', 'stop', '--help'], help.context), 0);
  t.match(help.out(), /pam tunnel stop/);
  const version = capture();
  t.equal(await runCli(['--version'], version.context), 0);
  t.match(version.out(), /^\d+\.\d+\.\d+/);
});

t.test('a line run through this.cli: parse errors are usage errors, the rest runs as one-shot', async (t) => {
  const lines: Array<readonly string[]> = [['nosuch'], ['fail'], ['ok']];
  const codes: number[] = [];
  class LinesCommand extends PamCommand {
    static override paths = [['lines']];
    async execute(): Promise<number> {
      for (const line of lines) codes.push(await runLine(this.cli, line, this.context));
      return 0;
    }
  }
  class FailCommand extends PamCommand {
    static override paths = [['fail']];
    async execute(): Promise<number> {
      throw new TunnelError('portBusy', 'port 1 is busy');
    }
  }
  class OkCommand extends Command<PamContext> {
    static override paths = [['ok']];
    async execute(): Promise<number> {
      this.context.stdout.write('ok\n');
      return 0;
    }
  }
  const cli = new Cli<PamContext>({ binaryName: 'pam' });
  for (const command of [LinesCommand, FailCommand, OkCommand]) cli.register(command);
  const { context, out, err } = capture();
  t.equal(await cli.run(['lines'], context), 0);
  t.same(codes, [2, 75, 0]);
  t.match(err(), /Command not found/);
  t.match(err(), /pam: port 1 is busy\n/);
  t.equal(out(), 'ok\n');
});
