// `pam tunnel list`: every live tunnel of this user, from every process, read from the registry.

import { Command, Option } from 'clipanion';
import { hostPort } from '../../machines/address.js';
import { allTunnels } from '../../machines/selector.js';
import { PamCommand } from '../pam-command.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { renderTable } from '../table.js';
import { foreignRow, tunnelRow } from '../registry-rows.js';

export class TunnelListCommand extends PamCommand {
  static override paths = [
    ['tunnel', 'list'],
    ['tunnel', 'ls'],
  ];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'list running tunnels of this user, from every process',
    details: `
      Reads the registry (\`<tmp>/keeper-tunnel-sessions/\`, or $PAM_TUNNEL_REGISTRY); pam's entries whose
      owner is gone, or whose pid now belongs to another process, are removed on the way. Files that
      are not pam's are left alone; another program's live entry (Keeper Commander shares the
      directory) is shown with STATE foreign (\`"foreign": true\` in JSON) and is never stopped by pam.
      With --json: an array of objects with stable field names.
    `,
    examples: [
      ['Show running tunnels', '$0 tunnel list'],
      ['The local port of the tunnel to `db`, in a script', '$0 tunnel list --json | jq \'.[] | select(.target == "db") | .port\''],
    ],
  });

  json = Option.Boolean('--json', false, { description: 'print a JSON array' });

  async execute(): Promise<number> {
    const registry = await openFsRegistry({ env: this.context.env });
    const now = Date.now();
    const { entries, foreign } = await registry.scan();
    const rows = [...allTunnels(entries).map(({ entry, tunnel }) => tunnelRow(entry, tunnel, now)), ...foreign.map(foreignRow)];
    if (this.json) {
      this.context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      this.context.stderr.write('no tunnels running\n');
      return 0;
    }
    const dash = (value: string | number | null) => (value === null ? '-' : String(value));
    const table = renderTable(
      ['ID', 'TARGET', 'LOCAL', 'PID', 'MODE', 'STATE', 'UPTIME', 'RECONNECTS', 'PATH'],
      rows.map((row) => [
        dash(row.id),
        dash(row.target),
        row.port === null ? '-' : hostPort(row.host ?? '?', row.port),
        String(row.pid),
        dash(row.mode),
        row.foreign ? 'foreign' : dash(row.state),
        row.uptimeSeconds === null ? '-' : formatUptime(row.uptimeSeconds),
        dash(row.reconnects),
        dash(row.path),
      ]),
    );
    this.context.stdout.write(table);
    return 0;
  }
}

function formatUptime(seconds: number): string {
  if (seconds < 60) return `${seconds}s`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m${seconds % 60}s`;
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`;
  return `${Math.floor(seconds / 86_400)}d${Math.floor((seconds % 86_400) / 3600)}h`;
}
