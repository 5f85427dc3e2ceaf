// `pam shell`: a REPL whose tunnels live as long as the session. Lines run through the same clipanion
// definitions as one-shot commands; tunnels share one registry entry (mode shell) with a control
// socket, so `pam tunnel stop <id>` from another terminal stops exactly that tunnel.

import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import type { Outcome } from '../machines/errors.js';
import type { Signals } from '../machines/ports.js';
import { createRelayedSignals } from '../adapters/posix-signals.js';
import type { PamContext, ShellSession } from './context.js';
import { type CliHandle, runLine as runCommandLine } from './pam-command.js';
import { splitWords } from './words.js';
import type { FsRegistry } from '../adapters/fs-registry.js';
import { openControlServer } from '../adapters/control-channel.js';

interface Owned {
  readonly id: string;
  readonly target: string;
  stop(origin: string): void;
  readonly finished: Promise<Outcome>;
}

export function historyPath(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_STATE_HOME || join(env.HOME || homedir(), '.local', 'state'), 'pam', 'history');
}

export interface ShellOptions {
  /** The process's SIGTERM/SIGHUP (never SIGINT: that is the prompt's Ctrl+C). */
  readonly signals: Signals;
  /** After a hangup: detach from the dead terminal before the process exits. */
  readonly releaseTerminal: () => void;
}

export async function runShell(cli: CliHandle, context: PamContext, registry: FsRegistry, options: ShellOptions): Promise<number> {
  const tunnels = new Map<string, Owned>();
  // The shell holds the process's one signal watcher and relays each SIGTERM/SIGHUP once to every
  // tunnel of the session (connecting, ready or running a command); Ctrl+C goes only to the tunnels
  // of the line being run. A tunnel that also watched the process would get every signal twice.
  const everyTunnel = createRelayedSignals();
  let lineTunnels = createRelayedSignals();
  const session: ShellSession = {
    registry,
    signals: {
      watch(onSignal) {
        const stops = [everyTunnel.watch(onSignal), lineTunnels.watch(onSignal)];
        return () => {
          for (const stop of stops) stop();
        };
      },
    },
    adopt(tunnel) {
      tunnels.set(tunnel.id, tunnel);
      void tunnel.finished.then(() => tunnels.delete(tunnel.id));
    },
  };
  const socketPath = join(registry.location, `${process.pid}.sock`);
  const control = await openControlServer(socketPath, (id) => {
    const tunnel = tunnels.get(id);
    tunnel?.stop('pam tunnel stop');
    return tunnel !== undefined;
  });
  await registry.setControl(socketPath);

  const interactive = context.interactive;
  const history = historyPath(context.env);
  let saved: string[] = [];
  if (interactive) {
    try {
      saved = readFileSync(history, 'utf8').split('\n').filter(Boolean).slice(-500).reverse();
    } catch {
      // no history yet
    }
  }
  const commandWords = [...new Set(cli.definitions().map((definition) => definition.path.split(' ').slice(1).join(' ')))];
  const rl: Interface = createInterface({
    input: context.stdin,
    output: context.stdout,
    terminal: interactive,
    history: saved,
    historySize: 500,
    completer: (line: string) => {
      const candidates = [...commandWords, 'exit', ...[...tunnels.keys()].map((id) => `tunnel stop ${id}`)];
      const hits = candidates.filter((candidate) => candidate.startsWith(line.trimStart()));
      return [hits.length > 0 ? hits : candidates, line.trimStart()];
    },
  });
  const prompt = () => {
    if (interactive) rl.prompt();
  };
  rl.setPrompt('pam> ');

  let lastFailure = 0;
  let exitCode: number | undefined;
  let leaving = false;
  let terminalGone = false;
  let lineRunning: Promise<unknown> = Promise.resolve();
  const ask = (question: string) =>
    new Promise<string>((resolve) => {
      rl.question(question, resolve);
      rl.once('close', () => resolve(''));
    });
  let resolveFinished!: () => void;
  const finished = new Promise<void>((resolve) => (resolveFinished = resolve));
  let left: Promise<void> | undefined;
  /** End the session once: stop what is still open (unless a signal already did), wait, clean up. */
  const leave = (how: 'asked' | 'signalled') =>
    (left ??= (async () => {
      leaving = true;
      rl.close();
      if (how === 'asked') for (const tunnel of tunnels.values()) tunnel.stop('the end of pam shell');
      else await lineRunning; // its tunnel got the signal too; let it finish before the session ends
      await Promise.all([...tunnels.values()].map((tunnel) => tunnel.finished));
      await control.close();
      await registry.setControl(undefined);
      if (terminalGone) options.releaseTerminal();
      resolveFinished();
    })());

  let signalsSeen = 0;
  const unwatch = options.signals.watch((signal) => {
    signalsSeen += 1;
    if (signal === 'SIGHUP' && interactive) terminalGone = true;
    // A second signal cuts every teardown short, as it does for a one-shot tunnel.
    if (signalsSeen > 1) return void everyTunnel.emit(signal);
    if (leaving) return; // already stopping everything in order (exit, end of input)
    everyTunnel.emit(signal);
    void leave('signalled');
  });
  if (interactive) {
    // A closed terminal (hangup) makes reads, raw-mode changes and writes fail with EIO: that is
    // the end of the session, not a crash.
    const hungUp = () => {
      terminalGone = true;
    };
    rl.on('error', hungUp);
    context.stdin.on('error', hungUp);
    context.stdout.on('error', hungUp);
    context.stderr.on('error', hungUp);
  }

  rl.on('SIGINT', () => {
    context.stdout.write('^C\n');
    // Ctrl+C while a line runs cancels it (a `tunnel start` still connecting ends with 130); at the
    // prompt it cancels the line being typed, as in bash.
    if (lineTunnels.emit('SIGINT') > 0) return;
    rl.write(null, { ctrl: true, name: 'u' });
    prompt();
  });
  // Lines run one at a time, in order; end of input waits for the queue (a piped script's last
  // command finishes before the session ends).
  let queue: Promise<void> = Promise.resolve();
  rl.on('close', () => {
    queue = queue.then(() => (leaving ? undefined : leave('asked')));
  });
  const runLine = async (line: string): Promise<void> => {
    if (interactive && line.trim()) {
      try {
        mkdirSync(dirname(history), { recursive: true, mode: 0o700 });
        appendFileSync(history, `${line}\n`, { mode: 0o600 });
      } catch {
        // history is a convenience
      }
    }
    const split = splitWords(line);
    if ('error' in split) {
      context.stderr.write(`pam: ${split.error}\n`);
      lastFailure = 2;
      return;
    }
    const words = split.words[0] === 'pam' ? split.words.slice(1) : split.words;
    if (words.length === 0) return; // a blank line or a comment
    if (words[0] === 'exit' || words[0] === 'quit') {
      const code = words.length === 1 ? lastFailure : exitArgument(words.slice(1));
      if (code === undefined) {
        context.stderr.write(`pam: ${words[0]} takes one number, 0-255 (e.g. \`exit 3\`)\n`);
        lastFailure = 2;
        return;
      }
      const open = tunnels.size;
      if (open > 0 && interactive) {
        const answer = await ask(`${open} tunnel${open === 1 ? '' : 's'} open: stop ${open === 1 ? 'it' : 'them'} and exit? [y/N] `);
        if (!/^y(es)?$/i.test(answer.trim())) {
          context.stdout.write('still here; `pam tunnel start -bg` makes a tunnel that outlives the shell\n');
          return;
        }
      }
      exitCode = code;
      await leave('asked');
      return;
    }
    if (words[0] === 'shell') {
      context.stderr.write('pam: already in pam shell (`exit` leaves it)\n');
      lastFailure = 2;
      return;
    }
    lineTunnels = createRelayedSignals();
    try {
      const code = await runCommandLine(cli, words, { ...context, inShell: true, session });
      if (code !== 0) lastFailure = code;
    } finally {
      lineTunnels = createRelayedSignals(); // the line's tunnels now belong to the session: Ctrl+C leaves them alone
    }
  };
  rl.on('line', (line) => {
    queue = queue.then(async () => {
      if (leaving) return;
      lineRunning = runLine(line);
      await lineRunning;
      if (!leaving) prompt();
    });
  });
  if (interactive) context.stdout.write('pam shell: tunnels started here live as long as this session; `exit` or Ctrl+D to leave\n');
  prompt();
  await finished;
  unwatch();
  return exitCode ?? lastFailure;
}

/** `exit N`: N in 0-255, as a shell takes it; anything else is not an exit code. */
function exitArgument(words: readonly string[]): number | undefined {
  if (words.length !== 1 || !/^\d{1,3}$/.test(words[0]!)) return undefined;
  const code = Number(words[0]);
  return code <= 255 ? code : undefined;
}
