// `pam tunnel machine`: the tunnel machine's definition, as a mermaid diagram or JSON.

import { Command, Option } from 'clipanion';
import type { AnyStateMachine } from 'xstate';
import { TunnelError } from '../../machines/errors.js';
import { toMermaid } from '../../machines/diagram.js';
import { tunnelMachine } from '../../machines/tunnel.machine.js';
import { PamCommand } from '../pam-command.js';

export class TunnelMachineCommand extends PamCommand {
  static override paths = [['tunnel', 'machine']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'print the tunnel state machine (mermaid or JSON)',
    details: 'The same definition the tunnels run; docs/machines/tunnel.md is generated from it.',
    examples: [
      ['A mermaid state diagram', '$0 tunnel machine'],
      ['The machine definition as JSON', '$0 tunnel machine --format json'],
    ],
  });

  format = Option.String('--format', 'mermaid', { description: 'mermaid (default) or json' });

  async execute(): Promise<number> {
    const machine: AnyStateMachine = tunnelMachine;
    if (this.format === 'mermaid') this.context.stdout.write(`${toMermaid(machine)}\n`);
    else if (this.format === 'json') this.context.stdout.write(`${JSON.stringify(machine.toJSON(), null, 2)}\n`);
    else throw new TunnelError('usage', `--format '${this.format}' is not known: use mermaid or json`);
    return 0;
  }
}
