// `pam tunnel history`: ended and live tunnels from their journals, with why each ended; with an id,
// the full timeline of states and events.

import { Command, Option } from 'clipanion';
import { numberFlag } from '../options.js';
import { summarize } from '../../machines/history.js';
import type { JournalEntry } from '../../machines/journal.js';
import { PamCommand } from '../pam-command.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { findJournal, readJournals } from '../../adapters/fs-journal.js';
import { processStartTime } from '../../adapters/process-identity.js';
import { renderTable } from '../table.js';

export class TunnelHistoryCommand extends PamCommand {
  static override paths = [['tunnel', 'history']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'show how past and running tunnels went, and why each ended',
    details: `
      Reads the journals in the registry (\`<registry>/journal/<id>.jsonl\`). Without an id: one row a
      tunnel, newest first, with its exit code and reason, including owners that died without stopping
      (kill -9, power loss). With an id (or unique prefix): every state and event of that tunnel.
      Journals are pruned when a tunnel starts: the newest $PAM_JOURNAL_KEEP (200), none older than
      $PAM_JOURNAL_MAX_AGE_DAYS (30); a background tunnel's log (\`<registry>/logs/<id>.log\`) goes with
      its journal.
    `,
    examples: [
      ['Why did my tunnels end?', '$0 tunnel history'],
      ['The timeline of one tunnel, for a script', '$0 tunnel history 3f2a9c1e --json'],
    ],
  });

  id = Option.String({ name: 'id', required: false });
  json = Option.Boolean('--json', false, { description: 'print JSON' });
  limit = Option.String('--limit', '20', { description: 'show at most this many tunnels (default 20)' });

  async execute(): Promise<number> {
    const limit = numberFlag('--limit', this.limit, { min: 1, max: 10_000, whole: true });
    const registry = await openFsRegistry({ env: this.context.env });
    const journals = readJournals(registry.location);
    if (this.id !== undefined) return this.timeline(findJournal(registry.location, this.id));

    const alive = new Map<number, string | undefined>();
    for (const { entries } of journals) {
      const pid = entries[0]?.meta?.pid;
      if (pid !== undefined && !alive.has(pid) && !entries.at(-1)?.output) alive.set(pid, await processStartTime(pid));
    }
    const rows = journals
      .slice(0, limit)
      .map(({ id, entries, lastSeen }) => summarize(id, entries, (pid, startTime) => alive.get(pid) === startTime, lastSeen));
    if (this.json) {
      this.context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      this.context.stderr.write('no tunnel history yet\n');
      return 0;
    }
    this.context.stdout.write(
      renderTable(
        ['ID', 'TARGET', 'MODE', 'STARTED', 'DURATION', 'EXIT', 'REASON'],
        rows.map((row) => [
          row.id,
          row.target,
          row.mode,
          row.startedAt,
          row.durationSeconds === null ? '-' : `${row.durationSeconds}s`,
          row.exitCode === null ? '-' : String(row.exitCode),
          row.reason,
        ]),
      ),
    );
    return 0;
  }

  private timeline({ entries }: { entries: JournalEntry[] }): number {
    if (this.json) {
      this.context.stdout.write(
        `${JSON.stringify(
          entries.map(({ meta: _meta, ...entry }) => entry),
          null,
          2,
        )}\n`,
      );
      return 0;
    }
    for (const entry of entries) {
      const { type, ...detail } = entry.event;
      const extra = Object.keys(detail).length > 0 ? ` ${JSON.stringify(detail)}` : '';
      const ending = entry.output ? `  → exit ${entry.output.exitCode}: ${entry.output.reason}` : '';
      this.context.stdout.write(`${entry.at}  ${entry.state.padEnd(28)}  ${type}${extra}${ending}\n`);
    }
    return 0;
  }
}
