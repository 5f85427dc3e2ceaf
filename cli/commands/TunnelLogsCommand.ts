// `pam tunnel logs`: print (and with -f follow) the log of a background owner, found by the selector
// rules of `stop`, or by id among the logs of tunnels that have ended.

import { readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { Command, Option } from 'clipanion';
import { exitCodeSummary, TunnelError } from '../../machines/errors.js';
import { blankSelector, selectTunnels } from '../../machines/selector.js';
import { openFsRegistry } from '../../adapters/fs-registry.js';
import { logDir } from '../../adapters/fs-journal.js';
import { followLog, readLog } from '../../adapters/log-file.js';
import { isProcessAlive } from '../../adapters/process-identity.js';
import { numberFlag } from '../options.js';
import { PamCommand } from '../pam-command.js';

const pollMs = 100;
/** How long -f waits for the `stopped` line of a tunnel whose record is gone while its owner lives on. */
const stopGraceMs = 3_000;

export class TunnelLogsCommand extends PamCommand {
  static override paths = [['tunnel', 'logs']];

  static override usage = Command.Usage({
    category: 'Tunnels',
    description: "print a background tunnel's log, and follow it with -f",
    details: `
      The selector is the one of \`tunnel stop\` (id or unique prefix, target, local port, owner pid);
      a tunnel that has ended is found by id among the logs kept in \`<registry>/logs/\` (pruned with
      the journals). The log of a \`--background\` owner holds JSON lines. -f keeps printing what the
      owner appends until the tunnel ends, then exits 0. A foreground, --run or \`pam shell\` tunnel has
      no log file (its output goes to the terminal that started it): that exits 1 and names
      \`pam tunnel history\`. Exit codes: ${exitCodeSummary(['generic', 'usage', 'unsafeRegistry'])}.
    `,
    examples: [
      ['Follow the owner of the tunnel to db until it ends', '$0 tunnel logs db -f'],
      ['The last 20 lines of tunnel 3f2a9c1e', '$0 tunnel logs 3f2a9c1e --tail 20'],
    ],
  });

  selector = Option.String({ name: 'selector' });
  follow = Option.Boolean('-f,--follow', false, { description: 'keep printing new lines until the tunnel ends' });
  tail = Option.String('--tail', { description: 'print only the last N lines first' });

  async execute(): Promise<number> {
    const tail = this.tail === undefined ? undefined : numberFlag('--tail', this.tail, { min: 0, max: 1_000_000, whole: true });
    const blank = blankSelector(this.selector, 'tunnel selector', 'name a tunnel by id, target, local port or pid (see `pam tunnel list`)');
    if (blank) throw new TunnelError(blank.kind, blank.reason);
    const registry = await openFsRegistry({ env: this.context.env });
    const selection = selectTunnels(await registry.entries(), this.selector);
    let path: string;
    let printed = '';
    let running: () => Promise<boolean> = async () => false;
    if (selection.ok) {
      if (selection.selected.length > 1) {
        const ids = selection.selected.map(({ tunnel }) => tunnel.id).join(', ');
        throw new TunnelError('usage', `'${this.selector}' matches ${selection.selected.length} tunnels (${ids}): name one by id`);
      }
      const { entry, tunnel } = selection.selected[0]!;
      if (tunnel.logFile === undefined) {
        throw new TunnelError(
          'generic',
          `tunnel ${tunnel.id} runs in ${tunnel.mode} mode (pid ${entry.pid}): it has no log file, its output goes to the terminal that started it; see \`pam tunnel history ${tunnel.id}\``,
        );
      }
      path = tunnel.logFile;
      const stoppedLine = `{"event":"stopped","id":"${tunnel.id}"`;
      let goneSince: number | undefined;
      // The record goes in teardown, the owner's `stopped` line comes just after: follow until that line
      // (or the owner's exit, or a short grace for an owner that died without one).
      running = async () => {
        const entries = await registry.entries();
        const owner = entries.find((candidate) => candidate.pid === entry.pid);
        if (owner?.tunnels.some(({ id }) => id === tunnel.id)) return true;
        goneSince ??= Date.now();
        // An owner with no other tunnel removes its whole record before that line: its process, not its
        // record, says whether the line may still come (seen with a teardown of four connections).
        const alive = owner !== undefined || isProcessAlive(entry.pid);
        return alive && !printed.includes(stoppedLine) && Date.now() - goneSince < stopGraceMs;
      };
    } else if (selection.failure.kind === 'generic') {
      path = this.endedLog(registry.location);
      // Its record is gone, but the owner may not have written its `stopped` line yet.
      const stoppedLine = `{"event":"stopped","id":"${basename(path, '.log')}"`;
      const since = Date.now();
      running = async () => !printed.includes(stoppedLine) && Date.now() - since < stopGraceMs;
    } else {
      throw new TunnelError(selection.failure.kind, selection.failure.reason);
    }

    const first = await readLog(path, tail === undefined ? {} : { tail }).catch((error: NodeJS.ErrnoException) => {
      throw new TunnelError('generic', `cannot read the log ${path} (${error.code ?? String(error)})`);
    });
    this.context.stdout.write(first.text);
    // The tail of what was printed is kept to spot the ending line.
    printed = first.text.slice(-64 * 1024);
    const write = (text: string) => {
      this.context.stdout.write(text);
      printed = (printed + text).slice(-64 * 1024);
    };
    if (this.follow) await followLog(path, first.offset, { write, running, pollMs });
    return 0;
  }

  /** The log of a tunnel that has ended, by id or unique id prefix. */
  private endedLog(location: string): string {
    const dir = logDir(location);
    let names: string[] = [];
    try {
      names = readdirSync(dir).filter((name) => /^[0-9a-f]{8}\.log$/.test(name) && name.startsWith(this.selector));
    } catch {
      // no background tunnel has run here yet
    }
    if (names.length === 0)
      throw new TunnelError(
        'generic',
        `no running tunnel matches '${this.selector}' and no kept log of an ended tunnel has that id: see \`pam tunnel list\``,
      );
    if (names.length > 1)
      throw new TunnelError(
        'usage',
        `'${this.selector}' matches ${names.length} logs: ${names.map((name) => name.slice(0, 8)).join(', ')}`,
      );
    return join(dir, names[0]!);
  }
}
