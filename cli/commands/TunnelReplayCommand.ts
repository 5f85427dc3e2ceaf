// `pam tunnel replay <id>`: feed a journal's events through the pure machine (inert actors, no
// network, no files) and check that it takes the recorded path: an explanation you can re-run.

import { Command, Option } from 'clipanion';
import { replay } from '../../machines/journal.js';
import { PamCommand } from '../pam-command.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { findJournal } from '../../adapters/fs-journal.js';

export class TunnelReplayCommand extends PamCommand {
  static override paths = [['tunnel', 'replay']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: "replay a tunnel's journal through the state machine and compare the paths",
    details: `
      Prints the state path the machine takes for the recorded events. Exits 0 when it is the recorded
      path (and ending), 1 when it differs (the journal was made by a different version of the machine,
      or was edited).
    `,
    examples: [
      ['Replay a tunnel', '$0 tunnel replay 3f2a9c1e'],
      ['Replay, machine-readable', '$0 tunnel replay 3f2a --json'],
    ],
  });

  id = Option.String({ name: 'id' });
  json = Option.Boolean('--json', false, { description: 'print JSON' });

  async execute(): Promise<number> {
    const registry = await openFsRegistry({ env: this.context.env });
    const journal = findJournal(registry.location, this.id);
    const result = replay(journal.entries);
    if (this.json) {
      this.context.stdout.write(`${JSON.stringify({ id: journal.id, ...result }, null, 2)}\n`);
    } else {
      this.context.stdout.write(`${result.replayed.join('\n')}\n`);
      if (result.output) this.context.stdout.write(`→ exit ${result.output.exitCode}: ${result.output.reason}\n`);
      this.context.stderr.write(
        result.matches
          ? `pam: replay matches the recorded path (${result.recorded.length} states)\n`
          : `pam: replay differs from the recording at entry ${result.divergedAt ?? result.replayed.length}: recorded ${result.recorded[result.divergedAt ?? 0]}, replayed ${result.replayed[result.divergedAt ?? 0]}\n`,
      );
    }
    return result.matches ? 0 : 1;
  }
}
