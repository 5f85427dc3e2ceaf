// `pam tunnel wait`: block until a tunnel started by any process is ready (or gone), as `kubectl wait`
// does; the wait machine reads the registry, this command only parses flags and exits with its code.

import { Command, Option } from 'clipanion';
import { createActor, toPromise } from 'xstate';
import { exitCodeSummary, TunnelError } from '../../machines/errors.js';
import { provideWait } from '../../machines/wait.actors.js';
import type { WaitGoal } from '../../machines/wait.machine.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { numberFlag } from '../options.js';
import { PamCommand } from '../pam-command.js';

/** Between registry reads: quick enough for scripts, cheap enough to run for minutes. */
const pollMs = 100;

export class TunnelWaitCommand extends PamCommand {
  static override paths = [['tunnel', 'wait']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'wait until a tunnel is ready (or gone), whichever process started it',
    details: `
      The selector is the one of \`tunnel stop\`: a tunnel id (or unique prefix), a target name, a
      local port, or the owning pid. --for ready (the default) returns once the tunnel's port is
      usable; a tunnel that does not exist yet is waited for (it may be starting elsewhere), and one
      that ends (or starts stopping) before it is ready exits 1. --for gone returns once no such
      tunnel is running (at once when none is). Exit codes: ${exitCodeSummary(['generic', 'usage', 'unsafeRegistry', 'waitTimeout'])}
      (--timeout, default 30 s, reached).
    `,
    examples: [
      ['Start a tunnel in one step of a job, wait for it in another', '$0 tunnel wait db --timeout 60'],
      ['Wait until tunnel 3f2a9c1e has been stopped', '$0 tunnel wait 3f2a9c1e --for gone'],
    ],
  });

  selector = Option.String({ name: 'selector' });
  goal = Option.String('--for', 'ready', { description: 'the state to wait for: ready (default) or gone' });
  timeout = Option.String('--timeout', '30', { description: 'seconds to wait at most (default 30); then exit 124' });
  json = Option.Boolean('--json', false, { description: 'print the result as one JSON object' });

  async execute(): Promise<number> {
    if (this.goal !== 'ready' && this.goal !== 'gone') throw new TunnelError('usage', `--for '${this.goal}' must be ready or gone`);
    const timeoutMs = numberFlag('--timeout', this.timeout, { min: 0, max: 86_400, whole: false, unit: 'seconds' }) * 1000;
    const registry = await openFsRegistry({ env: this.context.env });
    const actor = createActor(provideWait({ registry }), {
      input: { selector: this.selector, goal: this.goal as WaitGoal, timeoutMs, pollMs },
    });
    const done = toPromise(actor);
    actor.start();
    const outcome = await done;
    if (this.json) {
      const { exitCode, kind, reason } = outcome;
      this.context.stdout.write(
        `${JSON.stringify({ id: outcome.id ?? null, for: this.goal, reached: exitCode === 0, exitCode, kind, reason })}\n`,
      );
    } else if (outcome.exitCode === 0) {
      this.context.stdout.write(`${outcome.reason}\n`);
    } else {
      this.context.stderr.write(`pam: ${outcome.reason}\n`);
    }
    return outcome.exitCode;
  }
}
