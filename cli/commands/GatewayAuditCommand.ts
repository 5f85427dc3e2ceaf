// `pam gateway audit`: the gateway's audit log (and its rotated files, oldest first) read back as a
// table or as JSON lines, filtered by time, key and target.

import { Command, Option } from 'clipanion';
import { TunnelError } from '../../machines/errors.js';
import { PamCommand } from '../pam-command.js';
import { SingleString } from '../single-option.js';
import { auditLogOption } from '../options.js';
import { renderTable } from '../table.js';

export class GatewayAuditCommand extends PamCommand {
  static override paths = [['gateway', 'audit']];

  static override usage = Command.Usage({
    category: 'Gateway',
    description: "read the gateway's audit log: refusals, tunnels and connections",
    details: `
      Reads --audit-log (default $XDG_STATE_HOME/pam/audit.jsonl) and its rotated files
      (FILE.<n> … FILE.1), oldest first, and prints one row a line: time, event, tunnel, who (a key
      fingerprint and comment, or \`token\`), client address, target and what happened. --since takes
      an ISO time or how long ago (90s, 30m, 1h, 7d); --key a fingerprint (or \`token\`); --target a
      target name. A line that is not an audit line is reported on stderr with its file and line number
      and skipped. --json prints the matching lines as they are in the log, one JSON object a line.
    `,
    examples: [
      ['What happened on this gateway in the last hour', '$0 gateway audit --since 1h'],
      ['Every line about target db for one key, for a script', '$0 gateway audit --target db --key SHA256:… --json'],
      ['Read another gateway state directory', '$0 gateway audit --audit-log /var/lib/pam/audit.jsonl --since 2026-12-01T00:00:00Z'],
    ],
  });

  since = SingleString('--since', { description: 'only lines from this time on: ISO time, or 90s/30m/1h/7d ago' });
  key = SingleString('--key', { description: 'only lines of this key fingerprint (SHA256:…), or `token`' });
  target = SingleString('--target', { description: 'only lines about this target' });
  json = Option.Boolean('--json', false, { description: 'print the matching lines as JSON lines' });
  auditLog = auditLogOption();

  async execute(): Promise<number> {
    const [{ defaultAuditFile, readAuditLog }, { describeAudit, describePrincipal, matchesAudit, parseSince }] = await Promise.all([
      import('../../adapters/audit-log.js'),
      import('../../gateway/audit.js'),
    ]);
    const since = this.since === undefined ? undefined : parseSince(this.since, new Date());
    if (this.since !== undefined && since === undefined)
      throw new TunnelError('usage', `--since '${this.since}' must be an ISO time (2026-12-01T13:00:00Z) or an age like 90s, 30m, 1h, 7d`);
    const path = this.auditLog ?? defaultAuditFile(this.context.env);
    const { entries, problems, files } = await readAuditLog(path);
    if (files.length === 0) throw new TunnelError('generic', `no audit log at ${path}: pass --audit-log with the gateway's file`);
    for (const problem of problems) {
      this.context.stderr.write(`pam gateway audit: ${problem.file}:${problem.line}: ${problem.reason}, skipped\n`);
    }
    const filter = {
      ...(since ? { since } : {}),
      ...(this.key !== undefined ? { key: this.key } : {}),
      ...(this.target !== undefined ? { target: this.target } : {}),
    };
    const lines = entries.map(({ entry }) => entry).filter((line) => matchesAudit(line, filter));
    if (this.json) {
      for (const line of lines) this.context.stdout.write(`${JSON.stringify(line)}\n`);
      return 0;
    }
    if (lines.length === 0) {
      this.context.stderr.write('no audit lines match\n');
      return 0;
    }
    this.context.stdout.write(
      renderTable(
        ['TIME', 'EVENT', 'TUNNEL', 'WHO', 'CLIENT', 'TARGET', 'DETAIL'],
        lines.map((line) => [
          line.time,
          line.event,
          'tunnel' in line ? line.tunnel : '-',
          describePrincipal(line.who),
          'client' in line ? line.client : '-',
          line.target ?? '-',
          describeAudit(line),
        ]),
      ),
    );
    return 0;
  }
}
