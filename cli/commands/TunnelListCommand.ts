// `pam tunnel list`: every live tunnel of this user, from every process, read from the registry.

import { Command, Option } from 'clipanion';
import { hostPort } from '../../machines/address.js';
import { allTunnels } from '../../machines/selector.js';
import type { PamContext } from '../context.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { renderTable } from '../table.js';

export class TunnelListCommand extends Command<PamContext> {
  static override paths = [['tunnel', 'list'], ['tunnel', 'ls']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: 'list running tunnels of this user, from every process',
    details: `
      Reads the registry (\`<tmp>/keeper-tunnel-sessions/\`, or $PAM_TUNNEL_REGISTRY); entries whose
      owner is gone, or whose pid now belongs to another process, are removed on the way.
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
    const rows = allTunnels(await registry.entries()).map(({ entry, tunnel }) => ({
      id: tunnel.id,
      target: tunnel.target,
      host: tunnel.host,
      port: tunnel.port,
      pid: entry.pid,
      mode: tunnel.mode,
      state: tunnel.state,
      startedAt: tunnel.startedAt,
      uptimeSeconds: Math.max(0, Math.round((now - Date.parse(tunnel.startedAt)) / 1000)),
      reconnects: tunnel.reconnects,
      gateway: tunnel.gateway,
      pidFile: tunnel.pidFile ?? null,
      logFile: tunnel.logFile ?? null,
    }));
    if (this.json) {
      this.context.stdout.write(`${JSON.stringify(rows, null, 2)}\n`);
      return 0;
    }
    if (rows.length === 0) {
      this.context.stderr.write('no tunnels running\n');
      return 0;
    }
    const table = renderTable(
      ['ID', 'TARGET', 'LOCAL', 'PID', 'MODE', 'STATE', 'UPTIME', 'RECONNECTS'],
      rows.map((row) => [row.id, row.target, hostPort(row.host, row.port), String(row.pid), row.mode, row.state, formatUptime(row.uptimeSeconds), String(row.reconnects)]),
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
