// `pam shell`: an interactive session in which tunnels persist until it ends.

import { Command, Option } from 'clipanion';
import { PamCommand } from '../pam-command.js';
import { runShell } from '../shell.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { createProcessSignals } from '../../adapters/posix-signals.js';
import { releaseHungUpTerminal } from '../../adapters/terminal.js';

export class ShellCommand extends PamCommand {
  static override paths = [['shell']];

  static override usage = Command.Usage({
    category: 'Setup',
    description: 'an interactive session in which tunnels persist until it ends',
    details: `
      Every pam command works without the \`pam\` prefix. \`tunnel start\` returns to the prompt once the
      tunnel is ready; it runs in this process, so \`-fg\`/\`-bg\` are skipped with a notice (use one-shot
      \`pam tunnel start -bg\` for a tunnel that outlives the shell). Other terminals see the session's
      tunnels in \`pam tunnel list\` and can stop one with \`pam tunnel stop <id>\` (the shell itself lives on).
      Ctrl+C cancels the line being typed, or a command still running (a connecting \`tunnel start\`
      ends with 130). Leaving (\`exit\`, \`exit N\`, Ctrl+D, SIGTERM, SIGHUP, the terminal closing) stops
      them all, each once and cleanly. With stdin not a terminal, lines run one by one without prompts,
      blank lines and \`# comments\` are skipped, and the exit code is N for \`exit N\`, else that of
      the last command that failed. History: $XDG_STATE_HOME/pam/history.
    `,
    examples: [
      ['Start an interactive session', '$0 shell'],
      ['Run a script of pam commands', "printf 'tunnel start db\\ntunnel list\\n' | $0 shell"],
      ['Watch every tunnel of the session in the Stately inspector', '$0 shell --inspect=ws://127.0.0.1:8080'],
    ],
  });

  inspect = Option.String('--inspect', {
    tolerateBoolean: true,
    description: 'stream every tunnel of the session to a Stately inspector: --inspect or --inspect=ws://… (as $PAM_INSPECT)',
  });

  async execute(): Promise<number> {
    const registry = await openFsRegistry({ env: this.context.env });
    // The session's tunnels read PAM_INSPECT like one-shot ones; the flag sets it for them.
    const env =
      this.inspect === undefined
        ? this.context.env
        : { ...this.context.env, PAM_INSPECT: this.inspect === true ? '1' : String(this.inspect) };
    return runShell(this.cli, { ...this.context, env }, registry, {
      signals: createProcessSignals(process, ['SIGTERM', 'SIGHUP']),
      releaseTerminal: () => releaseHungUpTerminal(process),
    });
  }
}
