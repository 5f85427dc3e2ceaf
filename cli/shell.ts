// `pam shell`: a REPL whose tunnels live as long as the session. Lines run through the same clipanion
// definitions as one-shot commands; tunnels share one registry entry (mode shell) with a control
// socket, so `pam tunnel stop <id>` from another terminal stops exactly that tunnel.

import { appendFileSync, mkdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { createInterface, type Interface } from 'node:readline';
import type { Outcome, StopSignal } from '../machines/errors.js';
import type { Signals } from '../machines/ports.js';
import type { PamContext, ShellSession } from './context.js';
import { type CliHandle, runLine } from './pam-command.js';
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

/** Process signals for the session's tunnels: SIGTERM and SIGHUP, never SIGINT (that is the prompt's). */
function sessionSignals(): Signals {
  return {
    watch(onSignal) {
      const handlers = (['SIGTERM', 'SIGHUP'] as const).map((signal) => {
        const handler = () => onSignal(signal as StopSignal);
        process.on(signal, handler);
        return [signal, handler] as const;
      });
      return () => {
        for (const [signal, handler] of handlers) process.off(signal, handler);
      };
    },
  };
}

export async function runShell(cli: CliHandle, context: PamContext, registry: FsRegistry): Promise<number> {
  const tunnels = new Map<string, Owned>();
  const session: ShellSession = {
    registry,
    signals: sessionSignals(),
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
  let leaving = false;
  const stopAll = async () => {
    const open = [...tunnels.values()];
    for (const tunnel of open) tunnel.stop('the end of pam shell');
    await Promise.all(open.map((tunnel) => tunnel.finished));
  };
  const ask = (question: string) => new Promise<string>((resolve) => rl.question(question, resolve));

  const finished = new Promise<void>((resolve) => {
    const leave = async () => {
      leaving = true;
      await stopAll();
      await control.close();
      await registry.setControl(undefined);
      rl.close();
      resolve();
    };
    for (const signal of ['SIGTERM', 'SIGHUP'] as const) process.once(signal, () => void leave());

    rl.on('SIGINT', () => {
      // Ctrl+C cancels the line being typed, as in bash.
      context.stdout.write('^C\n');
      rl.write(null, { ctrl: true, name: 'u' });
      prompt();
    });
    // Lines run one at a time, in order; end of input waits for the queue (a piped script's last
    // command finishes before the session ends).
    let queue: Promise<void> = Promise.resolve();
    rl.on('close', () => {
      queue = queue.then(() => (leaving ? undefined : leave()));
    });
    rl.on('line', (line) => {
      queue = queue.then(async () => {
        if (leaving) return;
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
        } else {
          const words = split.words[0] === 'pam' ? split.words.slice(1) : split.words;
          if (words[0] === 'exit' || words[0] === 'quit') {
            const open = tunnels.size;
            if (open > 0 && interactive) {
              const answer = await ask(`${open} tunnel${open === 1 ? '' : 's'} open: stop ${open === 1 ? 'it' : 'them'} and exit? [y/N] `);
              if (!/^y(es)?$/i.test(answer.trim())) {
                context.stdout.write('still here; `pam tunnel start -bg` makes a tunnel that outlives the shell\n');
                prompt();
                return;
              }
            }
            await leave();
            return;
          }
          if (words[0] === 'shell') context.stderr.write('pam: already in pam shell\n');
          else if (words.length > 0) {
            const code = await runLine(cli, words, { ...context, inShell: true, session });
            if (code !== 0) lastFailure = code;
          }
        }
        if (!leaving) prompt();
      });
    });
  });
  if (interactive) context.stdout.write('pam shell: tunnels started here live as long as this session; `exit` or Ctrl+D to leave\n');
  prompt();
  await finished;
  return lastFailure;
}
