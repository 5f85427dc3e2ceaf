// `pam tunnel stop`: stop tunnels owned by other processes, never signalling a process that is not
// the one that registered them (pid + start time re-checked right before the signal).

import { Command, Option } from 'clipanion';
import { numberFlag } from '../options.js';
import { createActor, toPromise } from 'xstate';
import { TunnelError } from '../../machines/errors.js';
import { allTunnels, selectTunnels, type Selected } from '../../machines/selector.js';
import { provideStop } from '../../machines/stop.actors.js';
import type { StopOutput } from '../../machines/stop.machine.js';
import { PamCommand } from '../pam-command.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { createPidFiles } from '../../adapters/pid-files.js';
import { createProcessControl } from '../../adapters/process-control.js';
import { createControlClient } from '../../adapters/control-channel.js';

export class TunnelStopCommand extends PamCommand {
  static override paths = [['tunnel', 'stop']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'stop running tunnels by id, target, local port or pid',
    details: `
      The selector is a tunnel id (or a unique prefix), a target name, a local port, or the owning
      pid. An ambiguous selector exits 2 and lists the candidates, an empty or blank one exits 2 and
      stops nothing; nothing matching exits 1.
      Sends SIGTERM to the owner (or, for \`pam shell\`, asks its control channel to stop just that
      tunnel: the shell itself is never signalled), then waits up to --wait seconds. A tunnel still
      running then (or an owner that does not answer) exits 1, unless --force: SIGKILL to the owner,
      to every process it started and to the process groups they lead (a --run command and all its
      children), and its registry entry and pid file are removed.
    `,
    examples: [
      ['Stop the tunnel with id 3f2a9c1e', '$0 tunnel stop 3f2a9c1e'],
      ['Stop every tunnel of this user, killing any that hang', '$0 tunnel stop --all --force'],
    ],
  });

  selector = Option.String({ name: 'selector', required: false });
  all = Option.Boolean('--all', false, { description: 'stop every running tunnel of this user' });
  wait = Option.String('--wait', '10', { description: 'seconds to wait for each tunnel to go (default 10)' });
  force = Option.Boolean('--force', false, { description: 'SIGKILL tunnels still running after --wait' });
  json = Option.Boolean('--json', false, { description: 'print a JSON array of results' });

  async execute(): Promise<number> {
    if (this.all === (this.selector !== undefined)) {
      throw new TunnelError('usage', 'name a tunnel to stop (id, target, port or pid) or pass --all, not both');
    }
    const waitMs = numberFlag('--wait', this.wait, { min: 0, max: 3600, whole: false, unit: 'seconds' }) * 1000;
    const registry = await openFsRegistry({ env: this.context.env });
    const { entries, foreign } = await registry.scan();
    let targets: readonly Selected[];
    if (this.all) {
      targets = allTunnels(entries);
    } else {
      const selection = selectTunnels(entries, this.selector!);
      const other = foreign.find((entry) => String(entry.pid) === this.selector);
      if (!selection.ok && other) {
        throw new TunnelError(
          'generic',
          `pid ${other.pid} owns another program's tunnel (a foreign registry entry, e.g. Keeper Commander's): stop it with that program`,
        );
      }
      if (!selection.ok) throw new TunnelError(selection.failure.kind as 'usage' | 'generic', selection.failure.reason);
      targets = selection.selected;
    }

    const machine = provideStop({
      registry,
      processes: createProcessControl(),
      control: createControlClient(),
      pidFiles: createPidFiles({ registry }),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    });
    // One stop per owner process unless it owns several tunnels and only some are meant.
    const results = await Promise.all(
      targets.map(({ entry, tunnel }) => {
        // An owner with a control channel (pam shell) is asked per tunnel and outlives them all.
        const wholeProcess =
          entry.control === undefined && targets.filter((other) => other.entry.pid === entry.pid).length === entry.tunnels.length;
        const actor = createActor(machine, {
          input: { entry, tunnel, onlyThisTunnel: !wholeProcess, waitMs, force: this.force },
        });
        const done = toPromise(actor);
        actor.start();
        return done;
      }),
    );
    this.report(results);
    if (targets.length === 0) this.context.stderr.write('no tunnels running\n');
    return results.reduce((worst, result) => (result.exitCode !== 0 && worst === 0 ? result.exitCode : worst), 0);
  }

  private report(results: readonly StopOutput[]): void {
    if (this.json) {
      this.context.stdout.write(
        `${JSON.stringify(
          results.map(({ id, pid, target, exitCode, reason, forced }) => ({ id, pid, target, stopped: exitCode === 0, forced, reason })),
          null,
          2,
        )}\n`,
      );
      return;
    }
    for (const result of results) {
      const line = `tunnel ${result.id} (${result.target}, pid ${result.pid}): ${result.reason}\n`;
      if (result.exitCode === 0) this.context.stdout.write(`stopped ${line}`);
      else this.context.stderr.write(`pam: could not stop ${line}`);
    }
  }
}
